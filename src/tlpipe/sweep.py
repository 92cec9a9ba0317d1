"""Parameter sweeps as DVC experiments: queue one experiment per value, run the queue, and read the
results back through `dvc exp show --json` (never from files written on the side), so what the
report shows is what DVC recorded. A failed experiment stays in the results, marked failed.

  tlpipe sweep --param trunk.image_size 48 64 96 128   (tlpipe.cli; make sweep, make sweep-data)
"""

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tlpipe.errors import UserError

QUEUED = re.compile(r"Queued experiment '([^']+)'")
PARAMS_FILE = "params.yaml"
FEATURES_METRICS = "reports/features.json"


@dataclass
class SweepResult:
    """One experiment of a sweep, as DVC recorded it."""

    name: str
    value: object                       # the swept parameter's value
    state: str                          # success | failed | queued | running ...
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # {metrics file: its data}

    @property
    def succeeded(self) -> bool:
        return self.state == "success" and bool(self.metrics)

    def head(self, head: str) -> dict:
        return self.metrics.get(f"reports/eval/{head}/metrics.json", {})

    def head_summary(self, head: str) -> dict:
        """The report's figures for the head, the spread over train.repeats runs included."""
        return self.metrics.get("reports/metrics.json", {}).get(head, {})

    def head_training(self, head: str) -> dict:
        return self.metrics.get(f"reports/train/{head}/metrics.json", {})

    @property
    def features(self) -> dict:
        return self.metrics.get(FEATURES_METRICS, {})


def _dvc(project: Path, *arguments: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *arguments], cwd=project, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise UserError(f"dvc {' '.join(arguments)} failed (status {result.returncode}): "
                        f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result


def queue(project: Path, param: str, values: list[str], env: dict | None = None) -> dict[str, str]:
    """Queue one experiment per value of `param`; returns {experiment name: value}."""
    names = {}
    for value in values:
        output = _dvc(project, "exp", "run", "--queue", "-S", f"{param}={value}", env=env)
        found = QUEUED.search(output.stdout + output.stderr)
        if not found:
            raise UserError(f"dvc exp run --queue -S {param}={value}: no experiment name in its output")
        names[found.group(1)] = value
    return names


def run_queue(project: Path, env: dict | None = None) -> None:
    """Run every queued experiment; failures are not raised here, `dvc exp show` reports them."""
    _dvc(project, "exp", "run", "--run-all", check=False, env=env)


def _experiments(entries: list) -> list[dict]:
    """Every experiment revision in `dvc exp show --json`'s tree (baseline -> experiments -> revs)."""
    found = []
    for entry in entries:
        for experiment in entry.get("experiments") or []:
            executor = experiment.get("executor") or {}
            for revision in experiment.get("revs") or []:
                found.append({"name": experiment.get("name") or revision.get("name"),
                              "state": executor.get("state") or ("failed" if revision.get("error") else "success"),
                              "data": revision.get("data") or {}})
    return found


def parse_exp_show(entries: list, param: str, names: dict[str, str] | None = None) -> list[SweepResult]:
    """The experiments of `dvc exp show --json` output (those in `names` when given), by param value."""
    results = []
    for experiment in _experiments(entries):
        if names is not None and experiment["name"] not in names:
            continue
        data = experiment["data"]
        params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
        value = _dotted(params, param)
        if value is None and names is not None:
            value = names[experiment["name"]]
        metrics = {path: entry.get("data") or {} for path, entry in (data.get("metrics") or {}).items()}
        results.append(SweepResult(experiment["name"], value, experiment["state"], params, metrics))
    missing = set(names or ()) - {result.name for result in results}
    results += [SweepResult(name, names[name], "failed") for name in sorted(missing)]  # never dropped
    return sorted(results, key=lambda result: float(result.value))


def _dotted(params: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(params, dict) or key not in params:
            return None
        params = params[key]
    return params


def read_results(project: Path, param: str, names: dict[str, str] | None = None,
                 env: dict | None = None) -> list[SweepResult]:
    output = _dvc(project, "exp", "show", "--json", env=env)
    return parse_exp_show(json.loads(output.stdout), param, names)


def sweep(project: Path, param: str, values: list[str]) -> list[SweepResult]:
    names = queue(project, param, values)
    run_queue(project)
    return read_results(project, param, names)

