"""The `tlpipe` command: `tlpipe <stage> [head]` runs one pipeline stage, as dvc.yaml does.

  tlpipe fetch | split | features | report
  tlpipe train {flatten,gap} | finetune {flatten,gap}

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
    if not argv or argv[0] not in STAGES:
        run_stage(_refuse)
        return
    stage, *arguments = argv
    sys.argv = [f"tlpipe {stage}", *arguments]  # the stage reads its head from sys.argv, as under python -m
    run_stage(importlib.import_module(f"tlpipe.stages.{stage}").main)


def _refuse() -> None:
    raise UserError(USAGE)
