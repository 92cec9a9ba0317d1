"""The `tlpipe` command: `tlpipe <stage> [head]` runs one pipeline stage, as dvc.yaml does.

  tlpipe fetch | split | features | report
  tlpipe train {flatten,gap} | finetune {flatten,gap}
  tlpipe sweep --param trunk.image_size 48 64 96   (tlpipe.sweep: DVC experiments, not a stage)

Each stage is the module tlpipe.stages.<stage>; it is imported only when named, so
`tlpipe fetch` never pays TensorFlow's start-up.
"""

import importlib
import sys

from tlpipe.errors import UserError, run_stage

STAGES = ("fetch", "split", "features", "train", "finetune", "report")
USAGE = f"usage: tlpipe {{{','.join(STAGES)}}} [head]"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in (*STAGES, "sweep"):
        run_stage(_refuse)
        return
    stage, *arguments = argv
    if stage == "sweep":
        run_stage(lambda: importlib.import_module("tlpipe.sweep").main(arguments))
        return
    sys.argv = [f"tlpipe {stage}", *arguments]  # the stage reads its head from sys.argv, as under python -m
    run_stage(importlib.import_module(f"tlpipe.stages.{stage}").main)


def _refuse() -> None:
    raise UserError(USAGE)
