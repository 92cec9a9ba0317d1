"""The fonts of every PNG plot, so that class names in any script are drawn, not boxes.

Importing this module sets rcParams["font.family"] to DejaVu Sans (matplotlib's own: Latin, Greek,
Cyrillic, ...), then the installed fonts of other scripts: matplotlib (>= 3.6) falls back along the
list glyph by glyph. font_warning names the classes that still have characters none of them draws.
"""

import functools
import unicodedata

import matplotlib
from matplotlib import font_manager

# CJK fonts of the Debian/Ubuntu packages, best first; then Noto's fonts, one family per script.
PREFERRED_FAMILIES = ("DejaVu Sans", "Noto Sans CJK JP", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
                      "Droid Sans Fallback", "IPAGothic", "Noto Sans")
INSTALL_HINT = "apt install fonts-wqy-microhei (Chinese, Japanese, Korean) or fonts-noto-core (most other scripts)"


def _register_new_system_fonts() -> None:
    """matplotlib lists the system's fonts once, into its cache: fonts installed since then are added here."""
    cached = {font.fname for font in font_manager.fontManager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in cached:
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError):  # an unreadable font file: matplotlib's own scan skips it too
                pass


def _installed_families() -> list[str]:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    noto_scripts = sorted(name for name in installed
                          if name.startswith("Noto Sans ") and "CJK" not in name and name not in PREFERRED_FAMILIES)
    return [name for name in PREFERRED_FAMILIES if name in installed] + noto_scripts


@functools.cache
def _drawable() -> frozenset[int]:
    """The code points that some font of the plots draws."""
    codes = set()
    for family in matplotlib.rcParams["font.family"]:
        path = font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False)
        codes |= font_manager.get_font(path).get_charmap().keys()
    return frozenset(codes)


def undrawable_characters(text: str) -> list[str]:
    """The characters of `text` that no font of the plots draws (they show as boxes), in order."""
    return [character for character in dict.fromkeys(text) if ord(character) not in _drawable()]


def font_warning(class_names) -> str | None:
    """One line naming the classes with characters no installed font draws, and what to install; None if none."""
    undrawable = {name: undrawable_characters(name) for name in class_names}
    named = [f"{name!r} ({unicodedata.name(missing[0], f'U+{ord(missing[0]):04X}')})"
             for name, missing in undrawable.items() if missing]
    if not named:
        return None
    return (f"warning: no installed font draws the class name(s) {', '.join(named)}: the plots show boxes; "
            f"install a font for the script, e.g. {INSTALL_HINT}")


_register_new_system_fonts()
matplotlib.rcParams["font.family"] = _installed_families()
