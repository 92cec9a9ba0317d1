"""The committed results match the committed code: every code file dvc.lock records (src/, scripts/) has the md5 recorded.

When a stage's code changes and dvc.lock is not regenerated, reports/ describe code that no longer
exists; this test catches that before a merge. The md5 is DVC's own (dvc_data), with the same
algorithm dvc.lock names for each entry, so the test agrees with `dvc status`.
"""

import shutil
from pathlib import Path

import pytest
import yaml
from dvc_data.hashfile.hash import file_md5

from builders import REPO

CODE_DIRS = ("src/", "scripts/")  # what a stage runs: the library and the scripts/stage launcher


def recorded_code_deps(root: Path) -> dict[str, tuple[str, str]]:
    """{code path: (md5, dvc hash name)} for every code dependency root/dvc.lock records for a stage of root/dvc.yaml."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    defined = set(yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
    deps = {}
    for name, stage in lock["stages"].items():
        # Like `dvc status`, skip entries left by stages dvc.yaml no longer defines (train@gap is train's).
        if name.split("@")[0] not in defined:
            continue
        for dep in stage.get("deps", []):
            if dep["path"].startswith(CODE_DIRS):
                # An entry without `hash: md5` was written by DVC 2, which hashed text with CRLF -> LF.
                deps[dep["path"]] = (dep["md5"], dep.get("hash", "md5-dos2unix"))
    return deps


def stale_code_deps(root: Path) -> list[str]:
    """The code paths whose content under root differs from what root/dvc.lock recorded (or that are gone)."""
    stale = []
    for path, (md5, hash_name) in sorted(recorded_code_deps(root).items()):
        file = root / path
        if not file.is_file() or file_md5(str(file), name=hash_name) != md5:
            stale.append(path)
    return stale


def test_dvc_lock_records_code_deps():
    assert recorded_code_deps(REPO), "dvc.lock records no code dependency: is it the pipeline's lock file?"


def test_an_edited_or_missing_source_file_is_stale(tmp_path):
    for name in ("dvc.lock", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in CODE_DIRS:
        shutil.copytree(REPO / folder, tmp_path / folder)
    recorded = sorted(recorded_code_deps(tmp_path))
    edited, removed = tmp_path / recorded[0], tmp_path / recorded[1]
    baseline = set(stale_code_deps(tmp_path))
    edited.write_text(edited.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    removed.unlink()
    assert set(stale_code_deps(tmp_path)) - baseline == {recorded[0], recorded[1]}


def test_committed_results_match_committed_code():
    stale = stale_code_deps(REPO)
    if stale:
        pytest.fail(
            f"dvc.lock and reports/ were produced by other code than {len(stale)} code file(s) now in the repository: "
            f"{', '.join(stale)}. Run `dvc repro` and commit dvc.lock and reports/."
        )


def test_dvc_lock_holds_only_the_stages_dvc_yaml_defines():
    # DVC keeps a removed stage's entry in dvc.lock (as robustness's and evaluate@*'s were): stale code and results.
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))
    defined = set(yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
    assert {name.split("@")[0] for name in lock["stages"]} <= defined
