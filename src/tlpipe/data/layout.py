"""What in an image-folder dataset is data: the class folders, and what is left out, with the reason.

Each class is a top-level folder. Left out, with everything below them: hidden entries at any
depth (a name starting with '.', macOS's __MACOSX folders, Windows' Thumbs.db files), and files
beside the class folders. Fetch names what it sees left out; split lists every file left out in
reports/data_files.csv.
"""

from pathlib import Path

METADATA = {"__MACOSX": "macOS metadata folder (__MACOSX)", "Thumbs.db": "Windows thumbnail cache (Thumbs.db)"}
OUTSIDE_CLASSES = "file outside the class folders"


def hidden_reason(name: str, is_dir: bool) -> str | None:
    """Why an entry of this name is hidden, or None when it is not."""
    if name in METADATA:
        return METADATA[name]
    if name.startswith("."):
        return f"hidden {'folder' if is_dir else 'file'} (name starts with '.')"
    return None


def left_out_reason(relative: Path, is_dir: bool) -> str | None:
    """Why the entry at `relative` (a path below the dataset's root) is left out, or None when it is data."""
    parts = relative.parts
    for depth, name in enumerate(parts, start=1):
        is_last = depth == len(parts)
        reason = hidden_reason(name, is_dir or not is_last)
        if reason is not None:
            return reason if is_last else f"in {'/'.join(parts[:depth])}/: {reason}"
    if len(parts) == 1 and not is_dir:
        return OUTSIDE_CLASSES
    return None


def top_level(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """root's class folders, sorted, and its other entries with the reason each is left out."""
    classes, left_out = [], {}
    for entry in sorted(root.iterdir()):
        reason = left_out_reason(Path(entry.name), entry.is_dir())
        if reason is None:
            classes.append(entry)
        else:
            left_out[entry] = reason
    return classes, left_out


def left_out_note(left_out: dict[Path, str], verb: str = "left out") -> str:
    """For a console line: '; 1 left out: .cache/, a hidden folder (...)', or '' when nothing is."""
    if not left_out:
        return ""
    names = [f"{entry.name}{'/' if entry.is_dir() else ''}, a {reason}" for entry, reason in left_out.items()]
    return f"; {len(left_out)} {verb}: {'; '.join(names)}"
