"""The baseline a report compares against: reports/metrics.json as committed at a git revision."""

import json
import subprocess

from tlpipe.config import REPORTS_DIR

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
