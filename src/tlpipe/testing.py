"""Helpers for the repo's own tests and benchmark (they need a checkout: src/, dvc.yaml).

- `params_with`: params.yaml as a plain dict, read through tlpipe.config, with overrides;
- `copy_project`: a committed temporary git + DVC copy of the pipeline, to run `dvc repro` in
  without touching the checkout;
- `run`, `commit`, `stages_run`: commands in that copy, with this Python's tools first on PATH
  and the copy's own src/ on PYTHONPATH, so the stages run the code DVC hashed there.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tlpipe.config import load_config

PROJECT_FILES = ("dvc.yaml", ".gitignore", ".dvcignore", "scripts/stage")
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")


def params_with(base: Path, **overrides) -> dict:
    """The params at `base`, with overrides by dotted key (**{"trunk.name": "vgg16"}) or by section
    (split={"val": 0.2}, merged into the section). Overrides are not validated: tests write bad ones."""
    params = load_config(base).model_dump(mode="json")
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        section = params
        for parent in parents:
            section = section[parent]
        section[key] = {**section[key], **value} if isinstance(value, dict) else value
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def copy_project(repo: Path, destination: Path, params: dict) -> Path:
    """A committed git + DVC copy of `repo`'s pipeline (dvc.yaml, scripts/stage, src/) at `destination`, with `params`."""
    for name in PROJECT_FILES:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, destination / name)  # with its mode: scripts/stage stays executable
    shutil.copytree(repo / "src", destination / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    load_config(write_params(destination / "params.yaml", params))  # a bad option stops here, in one line
    run(destination, "git", "init", "-q", "--initial-branch", "main")
    run(destination, "dvc", "init", "-q")
    run(destination, "dvc", "config", "core.analytics", "false")
    run(destination, "dvc", "config", "core.check_update", "false")  # no update check in the background
    commit(destination, "the pipeline")
    return destination


def project_env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project / "src"),
        "PYTHONUNBUFFERED": "1",
    }


def run(project: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in the project; with `check`, fail with its output unless it succeeds."""
    result = subprocess.run(command, cwd=project, env=project_env(project), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed with status {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def commit(project: Path, message: str) -> None:
    run(project, "git", "add", "-A")
    run(project, "git", "-c", "user.name=tlpipe", "-c", "user.email=tlpipe@example.com", "commit", "-q", "-m", message)


# dvc.yaml's always_changed stages: they run on every `dvc repro` by design (source asks the
# dataset's server whether it changed), so they say nothing about what a change re-ran.
ALWAYS_CHANGED = ("source",)


def stages_run(output: str) -> list[str]:
    """The stages DVC ran, in order, from its output, but the always_changed ones."""
    return [stage for stage in RUNNING_STAGE.findall(output) if stage not in ALWAYS_CHANGED]
