"""scripts/stage, the command of every dvc.yaml stage: it runs the stage with the project's Python
even when no venv is activated (`.venv/bin/dvc repro` from a fresh shell), or says in one line what to do."""

import subprocess
import sys
from pathlib import Path

import pytest

from builders import REPO, make_image_folder
from tlpipe import testing


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project, without .venv, whose dataset is a tiny image folder (the fetch stage: no TensorFlow)."""
    make_image_folder(tmp_path / "images", {"cats": 2, "dogs": 2})
    params = testing.params_with(REPO / "params.yaml", **{"dataset.url": str(tmp_path / "images")})
    return testing.copy_project(REPO, tmp_path / "project", params)


@pytest.fixture
def python_without_tlpipe() -> Path:
    """The interpreter the tests' venv was made from: outside the venv, it cannot import tlpipe."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a venv: no Python here is known to lack tlpipe")
    return Path(sys.base_prefix, "bin", "python3")


def path_with_python3(folder: Path, python: Path) -> Path:
    """A PATH folder holding only python3, a link to `python`."""
    folder.mkdir()
    (folder / "python3").symlink_to(python)
    return folder


def fetch(project: Path, path: Path, **env: str) -> subprocess.CompletedProcess:
    """`scripts/stage fetch` in the project as DVC runs it, with `path` alone on PATH."""
    # No stage server: fetch would start one for the stages after it, which these tests do not run.
    return subprocess.run(["scripts/stage", "fetch"], cwd=project, env={"PATH": str(path), "TLPIPE_STAGE_SERVER": "off", **env},
                          capture_output=True, text=True)


def not_installed(python: Path) -> str:
    return f"error: tlpipe is not installed for {python}: run make install (or activate .venv) and run dvc repro again\n"


def assert_fetched(result: subprocess.CompletedProcess, project: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (project / "data/raw").iterdir()) == ["cats", "dogs"]


def test_without_tlpipe_it_says_what_to_do_in_one_line(project, python_without_tlpipe, tmp_path):
    path = path_with_python3(tmp_path / "bin", python_without_tlpipe)
    result = fetch(project, path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", not_installed(path / "python3"))
    assert not (project / "data/raw").exists()


def test_the_project_venv_runs_the_stage_without_being_activated(project, python_without_tlpipe, tmp_path):
    (project / ".venv").symlink_to(sys.prefix)  # this checkout's venv, as `make install` builds it
    assert_fetched(fetch(project, path_with_python3(tmp_path / "bin", python_without_tlpipe)), project)


def test_without_a_project_venv_the_active_environment_runs_the_stage(project):
    # A conda env, a venv of one's own, CI without `make install`: its python3 is first on PATH.
    assert_fetched(fetch(project, Path(sys.executable).parent, VIRTUAL_ENV=sys.prefix), project)


def test_the_project_venv_wins_over_an_active_environment(project, python_without_tlpipe):
    # scripts/stage says why: conda's base environment is active in many shells, unasked.
    (project / ".venv/bin").mkdir(parents=True)
    (project / ".venv/bin/python").symlink_to(python_without_tlpipe)  # a .venv whose install failed
    result = fetch(project, Path(sys.executable).parent, VIRTUAL_ENV=sys.prefix, CONDA_PREFIX=sys.prefix)
    assert (result.returncode, result.stderr) == (2, not_installed(project / ".venv/bin/python"))
