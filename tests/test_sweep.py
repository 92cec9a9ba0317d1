"""The sweep reader on a real `dvc exp` run: two tiny experiments queued, run and read back."""

from pathlib import Path

from builders import REPO, write_color_archive
from tlpipe import sweep, testing
from tlpipe.files import sha256_of
from tlpipe.reporting.sweep_report import first_dense_growth, sweep_markdown


def test_size_sweep_reads_dvc_experiments_and_flatten_grows_with_the_square_of_the_side(tmp_path):
    archive = write_color_archive(tmp_path / "colors.tar.gz", 12)
    params = testing.params_with(REPO / "params.yaml", **{
        "dataset.url": str(archive),
        "dataset.sha256": sha256_of(archive),
        "split.val": 0.25,
        "split.test": 0.25,
        "trunk.weights": "none",
        "trunk.image_size": 32,
        "trunk.output_layer": "",          # VGG16's block5_pool: 32 px -> 1x1, 64 px -> 2x2, 96 px -> 3x3
        "heads.flatten.epochs": 2,
        "heads.gap.epochs": 2,
    })
    project = testing.copy_project(REPO, tmp_path / "project", params)
    environment = testing.project_env(project)
    names = sweep.queue(project, "trunk.image_size", ["64", "96"], env=environment)
    sweep.run_queue(project, env=environment)
    results = sweep.read_results(project, "trunk.image_size", names, env=environment)

    assert [(result.value, result.state) for result in results] == [(64, "success"), (96, "success")]
    assert [result.features["feature_map"] for result in results] == [
        {"height": side, "width": side, "channels": 512} for side in (2, 3)]
    hidden = params["heads"]["flatten"]["hidden"][0]
    assert first_dense_growth(results, "flatten") == [512 * hidden]   # (9 - 4) * 512 * 256 more weights
    assert first_dense_growth(results, "gap") == [0]
    assert results[0].head("gap")["head_params"] == results[1].head("gap")["head_params"]
    markdown = sweep_markdown(results, "trunk.image_size", "plots/sweep.png")
    assert "| 96 |" in markdown
    if params["train"]["repeats"] > 1:  # the spread over the runs beside each saved run's accuracy
        assert markdown.count("(runs ") == 2 * len(results)


def test_a_queued_experiment_missing_from_dvc_is_reported_failed():
    results = sweep.parse_exp_show([], "trunk.image_size", {"exp-a": "48"})
    assert [(result.name, result.value, result.state, result.succeeded) for result in results] == [
        ("exp-a", "48", "failed", False)]
    assert "**failed**" in sweep_markdown(results, "trunk.image_size", "plots/sweep.png")
