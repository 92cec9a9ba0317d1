"""Faults end in one `error:` line and lose nothing: Ctrl-C, a full disk, a truncated cache, kill -9.

Each case drives the stages as DVC does, `python -m tlpipe.stages.<stage>` in a real subprocess,
in a tiny project (trunk.weights: none, 32 px), and checks what the user sees (one line, no
traceback) and what is left on disk (the previous outputs, whole; no work in progress).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from builders import REPO, write_params, write_split_dataset

STAGE_PARAMS = {
    "trunk.name": "vgg16", "trunk.weights": "none", "trunk.image_size": 32, "trunk.output_layer": "",
    "trunk.precision": "float32",
    # One image per trunk call: the pass lasts long enough (about 100 calls) to be interrupted midway.
    "trunk.batch_size": 1,
    "train.repeats": 1, "heads.flatten.epochs": 2,
}
# Long enough to be interrupted in the middle of model.fit.
LONG_TRAINING = {**STAGE_PARAMS, "heads.flatten.epochs": 10_000, "train.patience": 10_000}
INTERRUPTED = "error: interrupted; nothing was written; run dvc repro again"


def stage_env() -> dict[str, str]:
    """The environment a stage subprocess runs in: this checkout's code, output unbuffered."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}


def stage(project: Path, *arguments: str) -> subprocess.Popen:
    """`python -m tlpipe.stages.<stage> [head]` in `project`, with this checkout's code, as DVC runs it
    (through scripts/stage, which execs it: the signals below reach the stage itself)."""
    return subprocess.Popen([sys.executable, "-m", f"tlpipe.stages.{arguments[0]}", *arguments[1:]], cwd=project,
                            env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def run_stage(project: Path, *arguments: str) -> None:
    status, stdout, stderr = finish(stage(project, *arguments))
    assert status == 0, f"{arguments} failed with status {status}:\n{stdout}\n{stderr}"


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def partial_features(project: Path) -> list[Path]:
    """The features stage's work in progress (tlpipe.files): data/.features.partial-XXXX/."""
    return sorted((project / "data").glob(".features.partial-*"))


def wait_for_trunk_pass(project: Path) -> None:
    """Until the features stage is writing feature maps into its scratch folder."""
    wait_for(lambda: any((folder / "train_x.npy").is_file() for folder in partial_features(project)),
             "the features stage to start writing feature maps")


def digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (files or folders), by path; work in progress (hidden) left out."""
    files = [path for root in roots for path in ([root] if root.is_file() else sorted(root.rglob("*")))
             if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root.parent).parts)]
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def assert_one_error_line(stderr: str, expected_start: str) -> str:
    """stderr ends in one `error:` line beginning with `expected_start`, with no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert errors[0].startswith(expected_start), stderr
    return errors[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A split dataset, its feature cache and a trained flatten head: the previous outputs every fault must leave whole."""
    project = tmp_path_factory.mktemp("faults")
    write_split_dataset(project, {"train": 30, "val": 2, "test": 2})
    write_params(project, **STAGE_PARAMS)
    run_stage(project, "features")
    run_stage(project, "train", "flatten")
    return project


def features_outputs(project: Path) -> dict[str, str]:
    return digest(project / "data/features", project / "reports/features.json")


def train_outputs(project: Path) -> dict[str, str]:
    return digest(project / "reports/train/flatten", project / "reports/eval/flatten", project / "models")


def test_ctrl_c_during_the_trunk_pass_is_one_line_and_keeps_the_previous_cache(project):
    before = features_outputs(project)
    process = stage(project, "features")
    wait_for_trunk_pass(project)
    process.send_signal(signal.SIGINT)
    status, _, stderr = finish(process)
    assert status == 130, stderr
    assert assert_one_error_line(stderr, INTERRUPTED) == INTERRUPTED
    assert features_outputs(project) == before
    assert partial_features(project) == []


# At 0 s the signal lands while the cache loads: inside numpy.fromfile it surfaces as a TypeError.
@pytest.mark.parametrize("delay", [0, 1], ids=["while-loading", "in-fit"])
def test_ctrl_c_during_training_is_one_line_and_keeps_the_previous_reports_and_model(project, delay):
    before = train_outputs(project)
    write_params(project, **LONG_TRAINING)
    try:
        process = stage(project, "train", "flatten")
        wait_for(lambda: "run(s) on" in process.stdout.readline(), "training to start")
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        status, _, stderr = finish(process)
    finally:
        write_params(project, **STAGE_PARAMS)
    assert status == 130, stderr
    assert assert_one_error_line(stderr, INTERRUPTED) == INTERRUPTED
    assert train_outputs(project) == before
    assert list((project / "reports/train").glob(".*")) == []


def staged_leftovers(project: Path) -> list[Path]:
    """Work in progress of the train stage (tlpipe.files.StagedOutputs) left in models/ or reports/."""
    return sorted(path for folder in ("models", "reports") for path in (project / folder).rglob(".*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_while_evaluating_the_new_model_keeps_the_previous_model_and_reports(project, tmp_path, signum):
    project = shutil.copytree(project, tmp_path / "project")
    before = train_outputs(project)
    write_params(project, **{**STAGE_PARAMS, "seed": 7})  # another model than the one in place
    process = stage(project, "train", "flatten")
    wait_for(lambda: "kept run" in process.stdout.readline(), "the new model to be saved")  # evaluation starts
    assert list(project.glob("models/.flatten.keras.partial-*/flatten.keras")), "the new model is not staged"
    process.send_signal(signum)
    status, _, stderr = finish(process)
    assert train_outputs(project) == before
    if signum == signal.SIGINT:
        assert status == 130, stderr
        assert assert_one_error_line(stderr, INTERRUPTED) == INTERRUPTED
        assert staged_leftovers(project) == []
    else:
        assert staged_leftovers(project), "the kill came too late: the stage had put its outputs in place"

    started = time.time_ns()
    run_stage(project, "train", "flatten")
    after = train_outputs(project)
    assert staged_leftovers(project) == []
    assert after.keys() == before.keys()
    assert all(Path(path).stat().st_mtime_ns >= started for path in after), "an output was not written by the rerun"
    assert after[str(project / "models/flatten.keras")] != before[str(project / "models/flatten.keras")]


def test_a_truncated_feature_file_is_one_line_naming_it_and_the_training_reports_stay(project):
    features = project / "data/features/train_x.npy"
    intact = features.read_bytes()
    before = train_outputs(project)
    try:
        features.write_bytes(intact[:len(intact) // 2])
        status, _, stderr = finish(stage(project, "train", "flatten"))
    finally:
        features.write_bytes(intact)
    assert status == 2
    line = assert_one_error_line(stderr, "error: data/features/train_x.npy: missing, truncated or corrupt (ValueError: mmap length")
    assert line.endswith("rebuild the cache: dvc repro -f features")
    assert train_outputs(project) == before


def test_a_corrupt_model_file_is_one_line_naming_it(project):
    model = project / "models/flatten.keras"
    intact = model.read_bytes()
    write_params(project, **{**STAGE_PARAMS, "export.formats": ["saved_model"]})
    try:
        model.write_bytes(intact[:1000])
        status, _, stderr = finish(stage(project, "export", "flatten"))
    finally:
        model.write_bytes(intact)
        write_params(project, **STAGE_PARAMS)
    assert status == 2
    line = assert_one_error_line(stderr, "error: models/flatten.keras: not a Keras model tlpipe can load (")
    assert line.endswith("run dvc repro -f train@flatten")


def unshare_can_mount_tmpfs(directory: Path) -> bool:
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "tmpfs", str(directory)],
                           capture_output=True)
    return probe.returncode == 0


def features_under_mounts(project: Path, scratch: Path, mounts: str, after: str = "") -> tuple[str, str]:
    """The features stage in `project`, in a private mount namespace (nothing outside sees its mounts),
    after the shell commands `mounts` and before those of `after`: its exit status and stderr."""
    if shutil.which("unshare") is None or not unshare_can_mount_tmpfs(scratch):
        pytest.skip("needs unshare and mounts in a user namespace (Linux)")
    script = f"""
        set -e
        {mounts}
        set +e
        "{sys.executable}" -m tlpipe.stages.features 2> {scratch}/stderr
        echo $? > {scratch}/status
        {after}
    """
    subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], cwd=project, env=stage_env(),
                   check=True, capture_output=True)
    return (scratch / "status").read_text().strip(), (scratch / "stderr").read_text()


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_cache(project, tmp_path):
    # data/ on a tmpfs of its own, in a private mount namespace (nothing outside sees it), holding a
    # copy of data/, then filled up but for 8 KiB: the labels fit, the feature maps do not.
    shutil.copytree(project / "data", tmp_path / "data")
    size = sum(path.stat().st_size for path in (tmp_path / "data").rglob("*")) + 4 * 2**20  # the copy, and room to fill
    status, stderr = features_under_mounts(project, tmp_path, f"""
        mount -t tmpfs -o size={size} tmpfs data
        cp -a {tmp_path}/data/. data/
        dd if=/dev/zero of=data/filler bs=64k 2>/dev/null || true
        truncate -s -8K data/filler
    """, after=f"""
        ls -a data > {tmp_path}/listing
        sha256sum data/features/* > {tmp_path}/after
        cd {tmp_path} && sha256sum data/features/* > {tmp_path}/before
    """)
    assert status == "2", stderr
    line = assert_one_error_line(stderr, "error: data/.features.partial-")
    assert "/train_x.npy: No space left on device; free space on the file system that holds it" in line
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text()
    assert not [name for name in (tmp_path / "listing").read_text().split() if ".partial" in name]


# A test image: the features stage reads it last, its feature maps for train and val already written.
@pytest.mark.parametrize("damage", [lambda intact: b"not an image at all", lambda intact: intact[:len(intact) // 2]],
                         ids=["garbage", "truncated"])
def test_a_raw_image_damaged_after_the_split_is_one_line_naming_it(project, damage):
    image = project / "data/raw/red/test_001.png"
    intact = image.read_bytes()
    before = features_outputs(project)
    try:
        image.write_bytes(damage(intact))
        status, _, stderr = finish(stage(project, "features"))
    finally:
        image.write_bytes(intact)
    assert status == 2, stderr
    line = assert_one_error_line(stderr, "error: data/raw/red/test_001.png: no longer a readable image (")
    assert line.endswith("it changed since the split stage read it: restore it with dvc repro -f fetch, then run dvc repro again")
    assert features_outputs(project) == before
    assert partial_features(project) == []


def without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply to this user: root ignores them, so as root,
    without the capabilities that override them (a process owning the files, as here, is then
    held to their owner's permissions)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, which file permissions do not stop, and no setpriv to drop that power")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_a_models_folder_without_write_permission_is_one_line_naming_it_and_keeps_the_previous_outputs(project):
    before = train_outputs(project)
    as_this_user = without_root_powers()
    (project / "models").chmod(0o555)
    try:
        done = subprocess.run([*as_this_user, sys.executable, "-m", "tlpipe.stages.train", "flatten"],
                              cwd=project, env=stage_env(), capture_output=True, text=True, timeout=300)
    finally:
        (project / "models").chmod(0o755)
    assert done.returncode == 2, done.stderr
    # The stage's scratch folder for the model is the first thing it cannot make there (tlpipe.files.StagedOutputs).
    line = assert_one_error_line(done.stderr, "error: models: Permission denied; ")
    assert line.endswith("fix its permissions, or those of its folder, for this user, then run dvc repro again")
    assert train_outputs(project) == before
    assert list((project / "reports/train").glob(".*")) == [] and list((project / "models").glob(".*")) == []


def test_a_read_only_file_system_is_one_line_naming_the_folder_and_keeps_the_previous_cache(project, tmp_path):
    before = features_outputs(project)
    # data/ bind-mounted onto itself, read-only: the scratch folder for the new cache cannot be made there.
    status, stderr = features_under_mounts(project, tmp_path, "mount --bind data data; mount -o remount,bind,ro data")
    assert status == "2", stderr
    line = assert_one_error_line(stderr, "error: data: Read-only file system; its file system is mounted read-only: ")
    assert line.endswith("work in a writable copy, then run dvc repro again")
    assert features_outputs(project) == before
    assert partial_features(project) == []


def test_kill_9_midway_leaves_a_partial_cache_that_git_ignores_and_the_next_run_removes(project):
    before = features_outputs(project)
    process = stage(project, "features")
    wait_for_trunk_pass(project)
    process.kill()
    finish(process)
    assert partial_features(project), "the kill came too late: the stage had finished"
    assert features_outputs(project) == before
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    assert ".partial" not in status

    run_stage(project, "features")
    assert partial_features(project) == []
    assert features_outputs(project).keys() == before.keys()


FINETUNE_PARAMS = {
    "trunk.name": "vgg16", "trunk.weights": "none", "trunk.image_size": 32, "trunk.output_layer": "block2_pool",
    "trunk.precision": "float32", "heads.gap.dropout": 0.2,  # dropout and augmentation: random draws every epoch
    "finetune": {"epochs": 5, "from_layer": 3, "learning_rate": 1e-3, "batch_size": 4, "patience": 2, "augment": True},
}
FINETUNE_BACKUP = "data/.finetune-gap.backup"


def finished_epochs(project: Path) -> int:
    """The epochs the finetune stage's backup holds (tlpipe.model.fitting.Resumption), 0 without one."""
    state = project / FINETUNE_BACKUP / "resumption.json"
    return len(json.loads(state.read_text())["epoch_logs"]) if state.is_file() else 0


def epochs_printed(stdout: str) -> list[int]:
    """The epochs a run trained, from Keras's `Epoch 3/5` lines."""
    return [int(line.split()[1].split("/")[0]) for line in stdout.splitlines() if line.startswith("Epoch ")]


def finetune_outputs(project: Path) -> dict:
    """The fine-tuned model's weights and its metrics, but the wall time."""
    import keras

    metrics = json.loads((project / "reports/finetune/gap/metrics.json").read_text())
    del metrics["train_seconds"]
    return {"weights": keras.models.load_model(project / "models/gap-finetuned.keras").get_weights(), "metrics": metrics}


# Augmentation off as well: the training dataset's length is then known, for which Keras's fit makes its iterators otherwise.
@pytest.fixture(scope="module", params=[True, False], ids=["augment-on", "augment-off"])
def killed_finetune(tmp_path_factory, request) -> dict:
    """Copies of a tiny fine-tuning project: one fine-tuned without interruption, two whose finetune
    stage was killed (kill -9) after its second finished epoch (the second a copy of the first), the
    epochs their backup holds, and their params."""
    from tlpipe.config import HeadConfig, TrunkConfig, load_config
    from tlpipe.model.heads import assemble, build_head
    from tlpipe.model.saving import save_classifier
    from tlpipe.model.trunks import build_trunk

    uninterrupted = tmp_path_factory.mktemp("finetune-uninterrupted")
    write_split_dataset(uninterrupted, {"train": 8, "val": 2, "test": 2})
    params = {**FINETUNE_PARAMS, "finetune": {**FINETUNE_PARAMS["finetune"], "augment": request.param}}
    config = load_config(write_params(uninterrupted, **params))
    trunk = build_trunk(config.trunk)
    (uninterrupted / "models").mkdir()
    save_classifier(assemble(trunk, build_head("gap", trunk.output_shape[1:], 3, config.heads.gap)),
                    uninterrupted / "models/gap.keras", ["blue", "green", "red"])
    killed = tmp_path_factory.mktemp("finetune-killed")
    shutil.copytree(uninterrupted, killed, dirs_exist_ok=True)
    run_stage(uninterrupted, "finetune", "gap")

    process = stage(killed, "finetune", "gap")
    # After two epochs: the resumed run restores the input pipeline's state of more than one pass.
    wait_for(lambda: finished_epochs(killed) >= 2, "two fine-tuning epochs to be backed up", timeout=240)
    process.kill()
    finish(process)
    killed_copy = tmp_path_factory.mktemp("finetune-killed-copy")
    shutil.copytree(killed, killed_copy, dirs_exist_ok=True)
    return {"uninterrupted": uninterrupted, "killed": killed, "killed_copy": killed_copy, "backed_up": finished_epochs(killed),
            "params": params}


@pytest.fixture(scope="module")
def resumed_finetune(killed_finetune) -> str:
    """The killed project's finetune stage run again, to the end: its stdout."""
    status, stdout, stderr = finish(stage(killed_finetune["killed"], "finetune", "gap"))
    assert status == 0, stderr
    return stdout


def test_a_fine_tuning_backup_is_git_ignored(killed_finetune):
    project = killed_finetune["killed_copy"]
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    assert ".finetune-gap" not in status


def test_fine_tuning_killed_midway_resumes_after_its_last_finished_epoch(killed_finetune, resumed_finetune):
    backed_up = killed_finetune["backed_up"]
    epochs_run = json.loads((killed_finetune["uninterrupted"] / "reports/finetune/gap/metrics.json").read_text())["epochs_run"]
    assert 2 <= backed_up < epochs_run, "the kill came too late: fine-tuning had finished"
    assert f"resuming after epoch {backed_up} from the backup in {FINETUNE_BACKUP}" in resumed_finetune
    assert epochs_printed(resumed_finetune)[0] == backed_up + 1
    assert not (killed_finetune["killed"] / FINETUNE_BACKUP).exists()


def test_fine_tuning_resumed_after_a_kill_ends_as_an_uninterrupted_run(killed_finetune, resumed_finetune):
    resumed, expected = finetune_outputs(killed_finetune["killed"]), finetune_outputs(killed_finetune["uninterrupted"])
    # Bit for bit: the same float32 computations, in the same order, from the same restored state.
    assert resumed["metrics"] == expected["metrics"]
    for resumed_weights, expected_weights in zip(resumed["weights"], expected["weights"], strict=True):
        assert np.array_equal(resumed_weights, expected_weights)


def test_a_fine_tuning_backup_made_with_other_params_is_discarded(killed_finetune):
    project = killed_finetune["killed_copy"]
    assert finished_epochs(project) >= 1
    params = killed_finetune["params"]
    write_params(project, **{**params, "finetune": {**params["finetune"], "learning_rate": 5e-4}})
    status, stdout, stderr = finish(stage(project, "finetune", "gap"))
    assert status == 0, stderr
    assert f"{FINETUNE_BACKUP}: a backup of other params, inputs or code; removed, training from epoch 1" in stdout
    assert "resuming" not in stdout
    assert epochs_printed(stdout)[0] == 1
    assert not (project / FINETUNE_BACKUP).exists()
