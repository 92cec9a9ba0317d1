"""The baseline a report compares against: reports/metrics.json as committed at a git revision,
and what a run's metrics were measured on, recorded there so that a later run can tell whether
its baseline is comparable."""

import hashlib
import json
import subprocess

import pandas as pd

from tlpipe.config import REPORTS_DIR, Config
from tlpipe.data.manifest import class_names

PIPELINE_INPUTS = ("params.yaml", "dvc.yaml", "src")


def _git(*args: str) -> str | None:
    """A git command's output, or None if it fails (no git, no repository, unknown revision)."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def resolve_revision(baseline: str) -> str:
    """`auto` means main on other branches; on main, HEAD if the pipeline's inputs have
    uncommitted changes (a local experiment), else HEAD~1 (CI on main, DVC issue 7578)."""
    if baseline != "auto":
        return baseline
    if _git("rev-parse", "--abbrev-ref", "HEAD") != "main":
        return "main" if _git("rev-parse", "--verify", "--quiet", "main") else "origin/main"
    uncommitted = _git("status", "--porcelain", "--", *PIPELINE_INPUTS)
    return "HEAD" if uncommitted else "HEAD~1"


def committed_metrics(revision: str) -> tuple[str, dict] | None:
    """(short commit id, metrics) of reports/metrics.json at `revision`, or None where there is none."""
    commit = _git("rev-parse", "--short", "--verify", "--quiet", f"{revision}^{{commit}}")
    text = commit and _git("show", f"{commit}:{(REPORTS_DIR / 'metrics.json').as_posix()}")
    if not text:
        return None
    try:
        return commit, json.loads(text)
    except json.JSONDecodeError:
        return None


def measured_on(config: Config, manifest: pd.DataFrame) -> dict:
    """The identity of what a run measured: the dataset (its declared source and the content the
    split stage found), the classes, the test split, and the trunk the heads ran on."""
    return {
        "dataset": {"url": config.dataset.url, "sha256": config.dataset.sha256, "content_sha256": _images_hash(manifest)},
        "classes": class_names(manifest),
        "test_split_sha256": _images_hash(manifest[manifest["split"] == "test"]),
        "trunk": {"name": config.trunk.name, "image_size": config.trunk.image_size},
    }


def _images_hash(rows: pd.DataFrame) -> str:
    """sha256 over the images' paths, labels and file hashes, in path order (manifest order aside)."""
    table = rows.sort_values("path")[["path", "label", "sha256"]].to_csv(index=False)
    return hashlib.sha256(table.encode()).hexdigest()
