"""The `tlpipe` command: `tlpipe <stage> [head]` runs one pipeline stage, as dvc.yaml does.

  tlpipe fetch | split | features | report
  tlpipe train {flatten,gap} | finetune {flatten,gap}
  tlpipe sweep --param trunk.image_size 48 64 96   (tlpipe.sweep: DVC experiments, not a stage)

Each stage is the module tlpipe.stages.<stage>; it is imported only when named, so
`tlpipe fetch` never pays TensorFlow's start-up.
"""

import argparse
import importlib
import sys
from pathlib import Path

from tlpipe.errors import UserError, run_stage

STAGES = ("fetch", "split", "features", "train", "finetune", "robustness", "report")
USAGE = f"usage: tlpipe {{{','.join(STAGES)}}} [head]"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in (*STAGES, "sweep"):
        run_stage(_refuse)
        return
    stage, *arguments = argv
    if stage == "sweep":
        run_stage(lambda: _sweep(arguments))
        return
    sys.argv = [f"tlpipe {stage}", *arguments]  # the stage reads its head from sys.argv, as under python -m
    run_stage(importlib.import_module(f"tlpipe.stages.{stage}").main)


def _refuse() -> None:
    raise UserError(USAGE)


def _sweep(argv: list[str]) -> None:
    """tlpipe sweep --param KEY VALUE...: one DVC experiment per value, then reports/sweep.md
    (reports/sweep-data.md for train.fraction) and its PNG, from `dvc exp show --json`."""
    from tlpipe.reporting.sweep_report import write_sweep_report  # matplotlib and DVC only here
    from tlpipe.sweep import sweep

    parser = argparse.ArgumentParser(prog="tlpipe sweep", description=_sweep.__doc__.splitlines()[0])
    parser.add_argument("--param", required=True, help="dotted params.yaml key, e.g. trunk.image_size")
    parser.add_argument("values", nargs="+")
    parser.add_argument("--out", type=Path, help="the Markdown report")
    arguments = parser.parse_args(argv)
    results = sweep(Path("."), arguments.param, arguments.values)
    out = arguments.out or Path("reports/sweep-data.md" if arguments.param == "train.fraction" else "reports/sweep.md")
    write_sweep_report(results, arguments.param, out)
    print(f"sweep: {sum(result.succeeded for result in results)}/{len(results)} experiments succeeded -> {out}")
