"""End to end: real `dvc repro` runs in a temporary copy of the repo, on a tiny generated dataset."""

import json
import re
import subprocess
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from builders import REPO, write_color_archive, write_params
from tlpipe import testing
from tlpipe.files import sha256_of
from tlpipe.data.images import load_rgb

PER_CLASS = 24
CLASSES = 3


def run(project: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    return testing.run(project, *command, check=check)


def stages_run(result: subprocess.CompletedProcess) -> set[str]:
    return set(testing.stages_run(result.stdout + result.stderr))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed copy of the repo whose params point at a tiny colour dataset, after one `dvc repro`."""
    work = tmp_path_factory.mktemp("work")
    archive = write_color_archive(work / "colors.tar.gz", PER_CLASS)
    params = testing.params_with(REPO / "params.yaml", **{
        "dataset.url": str(archive),
        "dataset.sha256": sha256_of(archive),
        "split.val": 0.25,
        "split.test": 0.25,
        "trunk.name": "vgg16",
        "trunk.weights": "none",
        "trunk.image_size": 32,
        "trunk.output_layer": "",
        "heads.flatten.epochs": 30,
        "heads.gap.epochs": 30,
        "train.patience": 30,  # a random trunk: early stopping would end some runs on the first plateau
        "export.formats": ["tflite"],  # the quickest export: the stage and reports/export.md end to end
    })
    project = testing.copy_project(REPO, work / "project", params)
    assert stages_run(run(project, "dvc", "repro")) == {
        "fetch", "split", "features", "train@flatten", "train@gap",
        "finetune@flatten", "finetune@gap", "export@flatten", "export@gap", "report",
    }
    return project


def test_metrics_are_complete_and_counts_add_up(project):
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert set(metrics) == {"flatten", "gap", "flatten_vs_gap", "measured_on"}
    assert len(metrics["measured_on"]["classes"]) == CLASSES  # what a later run's baseline check reads
    assert 0 <= metrics["flatten_vs_gap"]["mcnemar_p"] <= 1
    cost = json.loads((project / "reports/cost.json").read_text())
    for name in ("flatten", "gap"):
        assert cost[name]["inference_images_per_second"] > 0 and cost[name]["train_seconds"] > 0
        head = metrics[name]
        assert head["total_params"] == head["trunk_params"] + head["head_params"]
        assert head["trunk_params"] == 14_714_688  # VGG16 without its top
        assert 0 <= head["macro_f1"] <= 1
        assert head["epochs_run"] >= head["best_epoch"] >= 1
    # Flatten on a 1x1x512 map (32 px) has as many inputs as GAP: the heads must be the same size.
    assert metrics["flatten"]["head_params"] == metrics["gap"]["head_params"] == 512 * 256 + 256 + 256 * 3 + 3


def test_both_heads_beat_a_random_guess_by_a_wide_margin(project):
    metrics = json.loads((project / "reports/metrics.json").read_text())
    for head in ("flatten", "gap"):
        assert metrics[head]["accuracy"] >= 2 / CLASSES, head


def test_comparison_shows_shift_robustness_and_what_each_head_gets_wrong(project):
    comparison = (project / "reports/comparison.md").read_text()
    features = json.loads((project / "reports/features.json").read_text())
    assert features["shift_pixels"] == 4 and features["shifted_images"] == 4 * features["split_sizes"]["test"]
    for head in ("flatten", "gap"):
        robustness = json.loads((project / f"reports/eval/{head}/robustness.json").read_text())
        evaluation = json.loads((project / f"reports/eval/{head}/metrics.json").read_text())
        assert set(robustness["per_shift"]) == {"none", "right", "left", "down", "up"}
        assert robustness["per_shift"]["none"] == robustness["accuracy"] == evaluation["accuracy"]
        assert robustness["drop"] == pytest.approx(robustness["accuracy"] - robustness["shifted_accuracy"])
        assert f"| {head} | {robustness['accuracy']:.1%} |" in comparison
        assert (project / f"reports/plots/top_losses_{head}.png").is_file()
    assert "## Spatial invariance" in comparison and "## What each head gets wrong" in comparison
    assert "![where the heads disagree](plots/disagreements.png)" in comparison
    assert "overfitting gap" in comparison


def test_comparison_names_its_inputs_and_links_its_plots(project):
    comparison = (project / "reports/comparison.md").read_text()
    assert "vgg16, weights `none`" in comparison
    assert "32×32 px" in comparison
    assert "colors.tar.gz`" in comparison
    assert "## Fine-tuning\n\nOff (`finetune.epochs: 0`)" in comparison
    assert "| augmentation | none (`augment.views: 0`) |" in comparison
    assert re.search(r"^\*\*(Flatten|GAP) ahead by .* McNemar p|^\*\*Flatten and GAP level", comparison, re.MULTILINE)
    assert "wins" not in comparison
    images = set(re.findall(r"\]\((plots/[^)]+\.png)\)", comparison))
    for image in images:
        assert (project / "reports" / image).stat().st_size > 1000
    assert {"plots/reliability.png", "plots/training_curves.png", "plots/params_vs_accuracy.png"} <= images


def test_the_saved_model_is_trunk_plus_head_and_agrees_with_the_cache(project):
    model = keras.models.load_model(project / "models/gap.keras")
    cached = np.load(project / "data/features/test_x.npy")
    head = model.get_layer("gap_head")
    test_paths = pd.read_csv(project / "data/split/manifest.csv").query("split == 'test'")["path"]
    images = np.stack([load_rgb(project / "data/raw" / path, 32) for path in test_paths])  # raw uint8 RGB
    end_to_end = model.predict(images, verbose=0)
    from_cache = head.predict(cached, verbose=0)
    np.testing.assert_allclose(end_to_end.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(end_to_end, from_cache, atol=0.02)  # the cache is float16


def test_a_stage_forked_from_the_stage_server_trains_as_one_in_a_process_of_its_own(project):
    """tlpipe.launcher saves imports and nothing else: the same model, the same metrics, but for the timings."""
    results = []
    for server in ("on", "off"):
        env = {**testing.project_env(project), "TLPIPE_STAGE_SERVER": server}
        done = subprocess.run(["dvc", "repro", "-f", "train@gap"], cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "runs in a process of its own" not in done.stderr, done.stderr
        metrics = json.loads((project / "reports/eval/gap/metrics.json").read_text())
        untimed = {key: value for key, value in metrics.items() if not key.endswith("per_second")}
        results.append((untimed, keras.saving.load_model(project / "models/gap.keras").get_weights()))
    (served, served_weights), (alone, alone_weights) = results
    assert served == alone
    assert all(np.array_equal(one, other) for one, other in zip(served_weights, alone_weights, strict=True))
    run(project, "dvc", "repro")  # the stages after train@gap, for the model's new file (its save date)


def test_the_exports_agree_with_the_keras_models_and_predict_reads_class_names(project):
    export = (project / "reports/export.md").read_text()
    for head in ("flatten", "gap"):
        assert (project / f"models/{head}.labels.txt").read_text().splitlines() == ["blue", "green", "red"]
        assert (project / f"models/export/{head}/labels.txt").read_text() == (project / f"models/{head}.labels.txt").read_text()
        figures = json.loads((project / f"reports/export/{head}.json").read_text())["formats"]["tflite"]
        assert figures["top1_agreement"] >= 0.995 and figures["max_abs_difference"] < 1e-4
        assert f"| `models/export/{head}/model.tflite` |" in export
    test_paths = pd.read_csv(project / "data/split/manifest.csv").query("split == 'test'")["path"]
    result = run(project, "python", "-m", "tlpipe.cli", "predict", "data/raw", "--out", "build/predictions.csv")
    assert f"{PER_CLASS * CLASSES} images (0 skipped)" in result.stdout
    predicted = pd.read_csv(project / "build/predictions.csv").set_index("path")["class_1"]
    pipeline = pd.read_csv(project / "reports/eval/gap/predictions.csv").set_index("path")["predicted"]
    # the pipeline's test predictions come from the float16 feature cache
    agreement = (predicted.loc[[f"data/raw/{path}" for path in test_paths]].to_numpy() == pipeline.loc[test_paths].to_numpy()).mean()
    assert agreement >= 0.95


def test_a_second_repro_does_nothing(project):
    assert stages_run(run(project, "dvc", "repro")) == set()


def test_a_second_clone_pulls_from_a_directory_remote_and_reproduces_nothing(project, tmp_path):
    # What a team does through `make push` / `make pull` (the workflows' targets): share data,
    # features and models through a DVC remote, here a real local-directory one.
    makefile = str(REPO / "Makefile")
    run(project, "dvc", "remote", "add", "--default", "shared", str(tmp_path / "remote"))
    testing.commit(project, "the default run, with a remote")
    run(project, "make", "-f", makefile, "push")
    assert any((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the remote"

    clone = tmp_path / "clone"
    run(project, "git", "clone", "-q", str(project), str(clone))
    run(clone, "make", "-f", makefile, "pull")
    assert (clone / "models/gap.keras").stat().st_size == (project / "models/gap.keras").stat().st_size
    # Nothing to do but the stage that asks the dataset's server on every run (always_changed).
    status = run(clone, "dvc", "status").stdout
    assert status.split() == ["source:", "always", "changed"], status
    assert stages_run(run(clone, "dvc", "repro")) == set()  # the trunk does not run again
    run(project, "dvc", "remote", "remove", "shared")  # the later tests expect no remote


def test_changing_one_head_reruns_only_that_head_and_shows_the_change(project):
    testing.commit(project, "the default run")
    write_params(project, base=project / "params.yaml", **{"heads.gap.dropout": 0.3})
    assert stages_run(run(project, "dvc", "repro")) == {"train@gap", "finetune@gap", "export@gap", "report"}

    params_diff = json.loads(run(project, "dvc", "params", "diff", "--json").stdout)
    assert params_diff["params.yaml"]["heads.gap.dropout"] | {"diff": None} == {"old": 0.2, "new": 0.3, "diff": None}
    metrics_diff = json.loads(run(project, "dvc", "metrics", "diff", "--json").stdout)
    # The tiny dataset may leave accuracy at 100% either way; the calibration of the changed head moves.
    assert "gap.log_loss" in metrics_diff["reports/metrics.json"]
    assert "gap.train_seconds" in metrics_diff["reports/cost.json"]  # timings apart from quality and size
    assert not any(key.startswith("flatten.") for key in metrics_diff["reports/metrics.json"])

    comparison = (project / "reports/comparison.md").read_text()
    assert "Against `HEAD` (commit `" in comparison
    before = json.loads(run(project, "git", "show", "HEAD:reports/metrics.json").stdout)
    now = json.loads((project / "reports/metrics.json").read_text())
    change = (now["gap"]["accuracy"] - before["gap"]["accuracy"]) * 100
    assert f"| accuracy | {now['flatten']['accuracy']:.1%} | {before['flatten']['accuracy']:.1%} | +0.0 pts (within ±" in comparison
    assert f"| {now['gap']['accuracy']:.1%} | {before['gap']['accuracy']:.1%} | {change:+.1f} pts (" in comparison


def test_offline_plots_render_in_headless_chromium(project, tmp_path):
    template = REPO / "build" / "plots-template.html"
    assert template.is_file(), f"{template} missing: `make test` builds it (make build/plots-template.html)"
    (project / "build").mkdir(exist_ok=True)
    run(project, "dvc", "plots", "diff", "HEAD", "--html-template", str(template), "--out", "build/plots-diff")
    page = project / "build/plots-diff/index.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html), "no script may be loaded: everything is inlined"
    assert not re.search(r"<link[^>]*https?://", html), "no remote stylesheet"
    assert html.count("vegaEmbed(") >= 6  # 4 comparison plots + 2 confusion matrices

    screenshot = tmp_path / "plots.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--window-size=1200,1600",
         f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    # Charts drawn: axes, lines and the confusion matrices' cells darken several percent of the
    # page; a page whose scripts failed to load stays white.
    assert (pixels < 250).mean() > 0.03


def test_an_experiment_with_mobilenet_v2_runs_through_the_retrain_target(project):
    testing.commit(project, "after one-head change")
    makefile = str(REPO / "Makefile")
    assert "no DVC remote" in run(project, "make", "-f", makefile, "pull").stdout
    # `make retrain` is what the retrain workflow runs: dvc exp run with the overrides.
    run(project, "make", "-f", makefile, "retrain", "SET=-S trunk.name=mobilenet_v2 -S trunk.weights=none")
    features = json.loads((project / "reports/features.json").read_text())
    assert features["feature_shape"] == [1, 1, 1280]
    assert json.loads((project / "reports/metrics.json").read_text())["gap"]["trunk_params"] == 2_257_984


def test_a_bad_param_stops_the_pipeline_with_one_line(project):
    write_params(project, base=project / "params.yaml", **{"trunk.name": "resnet"})
    result = run(project, "python", "-m", "tlpipe.stages.features", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: params.yaml: trunk.name = 'resnet'")
    assert "Traceback" not in result.stderr



def test_each_head_trains_train_repeats_times_and_keeps_the_median_validation_loss(project):
    repeats = testing.params_with(REPO / "params.yaml")["train"]["repeats"]  # the project's: not overridden
    for head in ("flatten", "gap"):
        summary = json.loads((project / f"reports/train/{head}/metrics.json").read_text())
        runs = summary["runs"]
        assert [run["seed"] for run in runs] == [42 + index for index in range(repeats)]
        losses = sorted(run["best_val_loss"] for run in runs)
        assert len(set(losses)) == repeats, "runs with different seeds trained alike"
        kept = runs[summary["saved_run"] - 1]
        assert kept["best_val_loss"] == losses[(repeats - 1) // 2]
        assert summary["best_val_loss"] == kept["best_val_loss"]
        calibration = json.loads((project / f"reports/eval/{head}/metrics.json").read_text())["calibration"]
        assert 0 <= calibration["ece"] <= 1 and sum(calibration["bins"]["count"]) == len(
            pd.read_csv(project / f"reports/eval/{head}/predictions.csv"))
