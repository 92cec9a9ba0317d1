"""Class names in any script are drawn in the PNG plots, or the report says which fonts are missing.

Needs a Chinese font installed (`make test` installs fonts-wqy-microhei when fc-list finds none)."""

import warnings

import pandas as pd
import pytest

from tlpipe.config import EVAL_REPORTS_DIR
from tlpipe.reporting.fonts import font_warning
from tlpipe.reporting.plots import plot_confusion_matrix

TOTO = "\U0001E290"  # TOTO LETTER PA (Unicode 14): a script no Debian font package draws


def confusion_png(directory, classes: list[str]):
    """The confusion matrix plot of a head whose test split has these classes."""
    matrix = pd.DataFrame([[index + 1] * len(classes) for index in range(len(classes))], index=classes, columns=classes)
    (directory / EVAL_REPORTS_DIR / "flatten").mkdir(parents=True)
    matrix.to_csv(directory / EVAL_REPORTS_DIR / "flatten" / "confusion_matrix.csv")
    plot_confusion_matrix("flatten", directory / "confusion.png")
    return directory / "confusion.png"


def test_chinese_class_names_are_drawn_without_a_missing_glyph(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    classes = ["犬", "猫", "dog"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph .* missing from font")
        assert confusion_png(tmp_path, classes).stat().st_size > 0
    assert font_warning(classes) is None


def test_a_class_name_no_font_draws_is_named_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    classes = ["犬", f"{TOTO} pa", "dog"]
    with pytest.warns(UserWarning, match="missing from font"):  # matplotlib draws a box: the check agrees
        confusion_png(tmp_path, classes)
    line = font_warning(classes)
    assert line.count("\n") == 0
    assert f"'{TOTO} pa' (TOTO LETTER PA)" in line
    assert "犬" not in line and "dog" not in line
    assert "apt install fonts-wqy-microhei" in line
