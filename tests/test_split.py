"""tlpipe.stages.split: data/raw/ -> data/split/manifest.csv with stable, content-hashed splits."""

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from builders import make_image_folder, png_bytes, png_declaring_size, sha256_hex, write_conversion_cases, write_params
from tlpipe.data.splitting import assign_splits
from tlpipe.stages import split
from tlpipe.config import SplitConfig
from tlpipe.errors import UserError

RAW = Path("data/raw")
MANIFEST = Path("data/split/manifest.csv")
DATA_REPORT = Path("reports/data.md")
DATA_FILES = Path("reports/data_files.csv")
CLASSES = {"cat": 40, "dog": 40, "owl": 40}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, seed=42, split={"val": 0.15, "test": 0.15})
    return tmp_path


def run_split(workdir: Path) -> pd.DataFrame:
    split.main()
    return pd.read_csv(workdir / MANIFEST, keep_default_na=False)


def splits_by_path(manifest: pd.DataFrame) -> dict[str, str]:
    return dict(zip(manifest["path"], manifest["split"]))


def listed(workdir: Path, action: str) -> dict[str, str]:
    """The files reports/data_files.csv lists with `action`: {path: reason}."""
    files = pd.read_csv(workdir / DATA_FILES, keep_default_na=False)
    assert list(files.columns) == ["path", "action", "reason"]
    chosen = files[files["action"] == action]
    return dict(zip(chosen["path"], chosen["reason"]))


def test_manifest_lists_every_image_once(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)

    manifest = run_split(workdir)

    assert (workdir / MANIFEST).read_text(encoding="utf-8").splitlines()[0] == "path,label,split,sha256"
    assert list(manifest.columns) == ["path", "label", "split", "sha256"]
    assert sorted(manifest["path"]) == sorted(created)
    for row in manifest.itertuples():
        assert row.label == row.path.split("/")[0]
        assert row.sha256 == sha256_hex(workdir / RAW / row.path)
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert data_files(workdir) == ["manifest.csv"]  # no temporary file left beside it


def data_files(workdir: Path) -> list[str]:
    return sorted(path.name for path in (workdir / MANIFEST).parent.iterdir())


def test_every_class_is_in_every_split(workdir):
    make_image_folder(workdir / RAW, CLASSES)

    manifest = run_split(workdir)

    counts = pd.crosstab(manifest["label"], manifest["split"])
    assert sorted(counts.index) == sorted(CLASSES)
    assert sorted(counts.columns) == ["test", "train", "val"]
    assert (counts > 0).all().all()


def test_split_follows_the_content_hash_and_the_fractions(workdir):
    make_image_folder(workdir / RAW, CLASSES)
    write_params(workdir, seed=3, split={"val": 0.2, "test": 0.1})

    manifest = run_split(workdir)

    for row in manifest.itertuples():
        # The rule in tlpipe.data.splitting's docstring: u in [0, 1) from sha256(f"{seed}:{content sha256}").
        position = int.from_bytes(hashlib.sha256(f"3:{row.sha256}".encode()).digest()[:8], "big") / 2**64
        expected = "test" if position < 0.1 else "val" if position < 0.1 + 0.2 else "train"
        assert row.split == expected, row.path
    fractions = SplitConfig(val=0.2, test=0.1)
    assert assign_splits(manifest[["path", "label", "sha256"]], fractions, 3).equals(manifest)


def test_identical_files_land_in_the_same_split(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)
    duplicates = {}
    for original in created[::6]:  # 20 duplicates, spread over the classes
        copy = original.replace(".png", "_copy.png")
        shutil.copyfile(workdir / RAW / original, workdir / RAW / copy)
        duplicates[copy] = original

    manifest = run_split(workdir)
    by_path = splits_by_path(manifest)
    sha_by_path = dict(zip(manifest["path"], manifest["sha256"]))

    assert len(manifest) == len(created) + len(duplicates)
    for copy, original in duplicates.items():
        assert sha_by_path[copy] == sha_by_path[original]
        assert by_path[copy] == by_path[original], copy


def test_adding_images_never_moves_existing_ones(workdir):
    make_image_folder(workdir / RAW, CLASSES)
    before = splits_by_path(run_split(workdir))

    added = make_image_folder(workdir / RAW, {label: count // 10 for label, count in CLASSES.items()}, first_seed=5000)
    after = splits_by_path(run_split(workdir))

    assert set(after) == set(before) | set(added)
    assert {path: after[path] for path in before} == before


def test_changing_the_seed_changes_some_assignments(workdir):
    make_image_folder(workdir / RAW, CLASSES)
    seed_42 = run_split(workdir)

    write_params(workdir, seed=7)
    seed_7 = run_split(workdir)

    assert list(seed_7["path"]) == list(seed_42["path"])
    assert list(seed_7["sha256"]) == list(seed_42["sha256"])
    moved = (seed_7["split"] != seed_42["split"]).sum()
    assert 0 < moved < len(seed_7)


def test_the_same_input_gives_a_byte_identical_manifest(workdir):
    make_image_folder(workdir / RAW, CLASSES)
    split.main()
    first = (workdir / MANIFEST).read_bytes()

    split.main()

    assert (workdir / MANIFEST).read_bytes() == first


def test_unreadable_and_metadata_files_are_skipped(workdir, capsys):
    created = make_image_folder(workdir / RAW, CLASSES)
    data = png_bytes(seed=999, size=32)
    (workdir / RAW / "cat" / "corrupt.png").write_bytes(data[: len(data) // 2])
    (workdir / RAW / "cat" / "notes.txt").write_text("not an image\n")
    (workdir / RAW / "dog" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (workdir / RAW / "owl" / "__MACOSX").mkdir()
    (workdir / RAW / "owl" / "__MACOSX" / "._img.png").write_bytes(png_bytes(seed=998))
    (workdir / RAW / "__MACOSX" / "cat").mkdir(parents=True)  # a top-level one is no class
    (workdir / RAW / "__MACOSX" / "cat" / "._img.png").write_bytes(png_bytes(seed=997))

    manifest = run_split(workdir)
    out = capsys.readouterr().out

    assert sorted(manifest["path"]) == sorted(created)
    assert sorted(set(manifest["label"])) == sorted(CLASSES)
    skipped = sorted(line.split(":")[1].removeprefix(" skipped ") for line in out.splitlines() if line.startswith("split: skipped "))
    assert skipped == ["__MACOSX/cat/._img.png", "cat/corrupt.png", "cat/notes.txt", "dog/.DS_Store", "owl/__MACOSX/._img.png"]
    assert "split: skipped __MACOSX/cat/._img.png: in __MACOSX/: macOS metadata folder (__MACOSX)" in out
    assert "split: skipped cat/corrupt.png: not a readable image (OSError)" in out


def test_images_in_nested_folders_count_for_their_class(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)
    (workdir / RAW / "cat" / "batch 2").mkdir()
    (workdir / RAW / "cat" / "batch 2" / "extra.png").write_bytes(png_bytes(seed=4242))

    manifest = run_split(workdir).set_index("path")

    assert len(manifest) == len(created) + 1
    assert manifest.loc["cat/batch 2/extra.png", "label"] == "cat"


def test_one_class_is_refused(workdir):
    make_image_folder(workdir / RAW, {"cat": 40})

    with pytest.raises(UserError) as error:
        split.main()

    assert "at least 2" in str(error.value)
    assert not (workdir / MANIFEST).exists()


def test_hidden_folder_does_not_count_as_a_class(workdir):
    make_image_folder(workdir / RAW, {"cat": 40, ".cache": 5})

    with pytest.raises(UserError) as error:
        split.main()

    assert "found 1 class folder(s)" in str(error.value)


def test_hidden_folder_and_hidden_file_are_listed_with_their_reason(workdir, capsys):
    created = make_image_folder(workdir / RAW, CLASSES)
    hidden = make_image_folder(workdir / RAW, {".dotclass": 40}, first_seed=5000)
    (workdir / RAW / "cat" / ".hidden.png").write_bytes(png_bytes(seed=6000))
    (workdir / RAW / "labels.txt").write_text("cat dog owl\n")

    manifest = run_split(workdir)
    out = capsys.readouterr().out

    assert sorted(manifest["path"]) == sorted(created)
    assert sorted(set(manifest["label"])) == sorted(CLASSES)
    folder_reason = "in .dotclass/: hidden folder (name starts with '.')"
    assert listed(workdir, "skipped") == {
        **{path: folder_reason for path in hidden},
        "cat/.hidden.png": "hidden file (name starts with '.')",
        "labels.txt": "file outside the class folders",
    }
    report = (workdir / DATA_REPORT).read_text(encoding="utf-8")
    assert f"| skipped | {folder_reason} | 40 |" in report
    assert "| skipped | hidden file (name starts with '.') | 1 |" in report
    assert "| skipped | file outside the class folders | 1 |" in report
    assert "0 of 120 files skipped (0.00%)" in report
    assert "120 images in 3 classes" in out
    assert "2 left out: .dotclass/, a hidden folder (name starts with '.'); labels.txt, a file outside the class folders" in out
    skipped_lines = [line for line in out.splitlines() if line.startswith("split: skipped ")]
    assert len(skipped_lines) == split.SKIPPED_LINES + 1  # 42 skipped: 10 named, then the count of the rest
    assert skipped_lines[-1] == f"split: skipped 32 more files, each listed with its reason in {DATA_FILES}"


def test_class_too_small_for_every_split_is_named(workdir):
    make_image_folder(workdir / RAW, {"cat": 40, "lonely": 1, "dog": 40})

    with pytest.raises(UserError) as error:
        split.main()

    assert "class 'lonely' has 1 images" in str(error.value)
    assert "'cat'" not in str(error.value) and "'dog'" not in str(error.value)
    assert not (workdir / MANIFEST).exists()


def test_missing_raw_folder_is_refused(workdir):
    with pytest.raises(UserError) as error:
        split.main()

    assert "data/raw: missing" in str(error.value)


def test_class_names_with_spaces_and_accents(workdir):
    labels = {"été chaussure": 40, "sac à main": 40}
    created = make_image_folder(workdir / RAW, labels)

    manifest = run_split(workdir)

    assert sorted(manifest["path"]) == sorted(created)
    assert sorted(set(manifest["label"])) == sorted(labels)
    for path in manifest["path"]:
        assert (workdir / RAW / path).is_file()


# --- converted, skipped, duplicate files and the data report ------------------------


def test_converted_images_are_kept_and_listed_with_their_reason(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)
    conversions = write_conversion_cases(workdir / RAW / "cat")

    manifest = run_split(workdir)

    assert sorted(manifest["path"]) == sorted(created + [f"cat/{name}" for name in conversions])
    assert listed(workdir, "converted") == {f"cat/{name}": "; ".join(notes) for name, notes in conversions.items()}
    assert listed(workdir, "skipped") == {}


def test_image_over_max_pixels_is_skipped_with_the_reason(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)  # 8x8: 64 pixels
    (workdir / RAW / "cat" / "big.png").write_bytes(png_bytes(seed=999, size=16))
    write_params(workdir, **{"dataset.max_pixels": 100})

    manifest = run_split(workdir)

    assert sorted(manifest["path"]) == sorted(created)
    assert listed(workdir, "skipped") == {"cat/big.png": "decompression bomb: 16×16 pixels > dataset.max_pixels"}


def test_bomb_sized_header_is_skipped_without_decoding(workdir, recwarn):
    created = make_image_folder(workdir / RAW, CLASSES)
    (workdir / RAW / "dog" / "bomb.png").write_bytes(png_declaring_size(50_000, 50_000))

    manifest = run_split(workdir)

    assert sorted(manifest["path"]) == sorted(created)
    assert listed(workdir, "skipped") == {"dog/bomb.png": "decompression bomb: 50000×50000 pixels > dataset.max_pixels"}
    assert [warning for warning in recwarn if "decompression bomb" in str(warning.message)] == []


def test_identical_files_in_different_classes_are_dropped_as_label_conflicts(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)
    shutil.copyfile(workdir / RAW / "cat/img_00000.png", workdir / RAW / "dog/same_as_cat.png")
    sha256 = sha256_hex(workdir / RAW / "cat/img_00000.png")

    manifest = run_split(workdir)

    assert sorted(manifest["path"]) == sorted(set(created) - {"cat/img_00000.png"})
    reason = f"sha256 {sha256[:12]}: 2 identical files labelled cat, dog"
    assert listed(workdir, "label_conflict") == {"cat/img_00000.png": reason, "dog/same_as_cat.png": reason}
    report = (workdir / DATA_REPORT).read_text(encoding="utf-8")
    assert "| label conflicts (dropped) | 2 | 1 |" in report
    assert "- label_conflict: `cat/img_00000.png` = `dog/same_as_cat.png`" in report


def test_duplicates_within_a_class_are_kept_and_reported(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)
    for copy in ("cat/copy_1.png", "cat/copy_2.png"):
        shutil.copyfile(workdir / RAW / "cat/img_00000.png", workdir / RAW / copy)
    sha256 = sha256_hex(workdir / RAW / "cat/img_00000.png")

    manifest = run_split(workdir)

    copies = ["cat/copy_1.png", "cat/copy_2.png", "cat/img_00000.png"]
    assert sorted(manifest["path"]) == sorted(created + copies[:2])
    assert len({splits_by_path(manifest)[path] for path in copies}) == 1
    assert listed(workdir, "duplicate") == {path: f"sha256 {sha256[:12]}: 3 identical files labelled cat" for path in copies}
    report = (workdir / DATA_REPORT).read_text(encoding="utf-8")
    assert "| duplicates within a class (kept) | 3 | 1 |" in report
    assert "| label conflicts (dropped) | 0 | 0 |" in report
    assert "detected by identical bytes (sha256)" in report


def test_too_many_skipped_files_fail_in_one_line_naming_the_param(workdir):
    make_image_folder(workdir / RAW, CLASSES)  # 120 images
    for index in range(7):
        (workdir / RAW / "owl" / f"broken_{index}.png").write_bytes(b"not a png")

    with pytest.raises(UserError) as error:
        split.main()

    message = str(error.value)
    assert "7 of 127 files skipped (5.51%)" in message
    assert "more than split.max_skipped_fraction = 0.05" in message
    assert "\n" not in message
    assert not (workdir / MANIFEST).exists()
    assert not (workdir / DATA_REPORT).exists()


def test_hidden_files_do_not_count_toward_the_skipped_fraction(workdir):
    created = make_image_folder(workdir / RAW, CLASSES)
    for index in range(6):
        (workdir / RAW / "owl" / f"broken_{index}.png").write_bytes(b"not a png")
    for index in range(20):
        (workdir / RAW / "owl" / f"._resource_fork_{index}.png").write_bytes(b"\x00\x05\x16\x07")

    manifest = run_split(workdir)

    assert sorted(manifest["path"]) == sorted(created)
    assert len(listed(workdir, "skipped")) == 26
    assert "6 of 126 files skipped (4.76%)" in (workdir / DATA_REPORT).read_text(encoding="utf-8")


def test_a_class_left_without_readable_images_is_named(workdir):
    make_image_folder(workdir / RAW, {"cat": 40, "dog": 40})
    (workdir / RAW / "lonely").mkdir()
    (workdir / RAW / "lonely" / "broken.png").write_bytes(b"not a png")

    with pytest.raises(UserError) as error:
        split.main()

    assert "class 'lonely' has 0 images" in str(error.value)


def test_data_report_has_the_per_class_table_and_links_the_file_list(workdir):
    make_image_folder(workdir / RAW, CLASSES)
    write_params(workdir, split={"val": 0.2, "test": 0.1})

    manifest = run_split(workdir)

    report = (workdir / DATA_REPORT).read_text(encoding="utf-8")
    assert "[data_files.csv](data_files.csv)" in report
    assert "| class | train | val | test | total | deviation |" in report
    targets = {"train": 0.7, "val": 0.2, "test": 0.1}
    counts = pd.crosstab(manifest["label"], manifest["split"])
    for label in CLASSES:
        row = counts.loc[label]
        cells = " | ".join(f"{row[name]} ({row[name] / 40:.1%})" for name in targets)
        deviation = max(abs(row[name] / 40 - target) for name, target in targets.items())
        assert f"| {label} | {cells} | 40 | {deviation:.1%} |" in report
    assert "| width | 8 | 8 | 8 |" in report
    assert "| 8 × 8 | 120 (100.0%) |" in report
    assert sorted(path.name for path in (workdir / "reports").iterdir()) == ["data.md", "data_files.csv"]
