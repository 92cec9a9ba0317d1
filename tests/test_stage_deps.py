"""dvc.yaml lists every source file each stage runs, so that `dvc repro` re-runs a stage when any of them changes.

The files a stage runs are its launcher, scripts/stage, and those computed from the source (of
tlpipe.launcher, which scripts/stage runs, and of the stage's module):
the tlpipe modules its module imports, transitively (function-level imports included), with
the packages' __init__.py files that Python runs on the way.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from builders import REPO
from tlpipe import testing

SRC = REPO / "src"
LAUNCHER = "scripts/stage"
LAUNCHER_MODULE = "tlpipe.launcher"  # what scripts/stage runs, which runs the stage's module
STAGE_COMMAND = re.compile(rf"^{LAUNCHER} (\w+)\b")


def module_file(module: str, src: Path) -> Path | None:
    """The file of a tlpipe module or package, or None if it names no file (an attribute)."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every tlpipe module a file imports, anywhere in it; `from a import b` counts b when b is a module."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {module for module in modules if module == "tlpipe" or module.startswith("tlpipe.")}


def files_run(module: str, src: Path = SRC) -> set[Path]:
    """The source files that running `python -m module` executes: the closure of its tlpipe imports."""
    files, pending = set(), [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]), src)
            if path is not None and path not in files:
                files.add(path)
                pending += sorted(imported_modules(path))
    return files


def dependency_problems(dvc_yaml: Path, src: Path = SRC) -> list[str]:
    """For each stage run as `scripts/stage <x>` (`python -m tlpipe.stages.<x>`): the launcher and source
    files it runs but does not list in its deps, and listed source files it no longer runs."""
    root = dvc_yaml.parent
    problems = []
    for name, stage in yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"].items():
        stage = stage.get("do", stage)  # foreach stages: the template
        match = STAGE_COMMAND.match(stage["cmd"])
        if match is None:
            problems.append(f"{name}: command {stage['cmd']!r} is not `{LAUNCHER} <stage>`")
            continue
        modules = files_run(LAUNCHER_MODULE, src) | files_run(f"tlpipe.stages.{match.group(1)}", src)
        runs = {LAUNCHER} | {path.relative_to(root).as_posix() for path in modules}
        src_prefix = src.relative_to(root).as_posix() + "/"
        listed = {dep for dep in stage.get("deps", []) if dep == LAUNCHER or dep.startswith(src_prefix)}
        problems += [f"{name}: runs {path} but does not list it in deps" for path in sorted(runs - listed)]
        problems += [f"{name}: lists {path} in deps but does not run it" for path in sorted(listed - runs)]
    return problems


def test_every_stage_lists_exactly_the_source_files_it_runs():
    assert dependency_problems(REPO / "dvc.yaml") == []


def test_a_stage_missing_a_dependency_is_caught(tmp_path):
    (tmp_path / "src/tlpipe/stages").mkdir(parents=True)
    (tmp_path / "src/tlpipe/__init__.py").write_text("")
    (tmp_path / "src/tlpipe/stages/__init__.py").write_text("")
    (tmp_path / "src/tlpipe/helper.py").write_text("import os\n")
    (tmp_path / "src/tlpipe/stages/one.py").write_text("def main():\n    from tlpipe import helper\n")
    (tmp_path / "src/tlpipe/unused.py").write_text("")
    stage = {"cmd": "scripts/stage one", "deps": ["src/tlpipe/__init__.py", "src/tlpipe/stages/__init__.py",
                                                  "src/tlpipe/stages/one.py", "src/tlpipe/unused.py"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"one": stage}}))
    assert dependency_problems(tmp_path / "dvc.yaml", tmp_path / "src") == [
        "one: runs scripts/stage but does not list it in deps",
        "one: runs src/tlpipe/helper.py but does not list it in deps",
        "one: lists src/tlpipe/unused.py in deps but does not run it",
    ]


def test_no_stage_imports_another_and_the_library_has_no_main():
    stages = sorted((SRC / "tlpipe/stages").glob("[!_]*.py"))
    assert stages, "no stage modules found"
    for path in stages:
        others = {module for module in imported_modules(path) if module.startswith("tlpipe.stages.")}
        assert not others, f"{path.name} imports {others}"
    for path in sorted((SRC / "tlpipe").rglob("*.py")):
        if "stages" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mains = [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        assert path.name == "cli.py" or not mains, f"{path} is library code but defines main()"


@pytest.mark.parametrize("stage", ["source", "fetch", "split"])
def test_the_data_stages_do_not_run_tensorflow_code(stage):
    # source runs on every dvc repro, fetch and split on every new dataset: they must not pay TensorFlow's start-up.
    runs = {path.relative_to(SRC).as_posix() for path in files_run(f"tlpipe.stages.{stage}")}
    assert not runs & {"tlpipe/runtime.py", "tlpipe/cache.py", "tlpipe/data/inputs.py", "tlpipe/model/trunks.py"}


def test_the_stages_testing_ignores_as_always_run_are_dvc_yamls_always_changed_ones():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert tuple(name for name, stage in stages.items() if stage.get("always_changed")) == testing.ALWAYS_CHANGED
