"""Writing outputs so that a failure never leaves a half-written file or folder behind.

Work in progress goes under a hidden name beside its target, `.<name>.partial-XXXX` (a file or a
folder; `.<stem>.partial<suffix>` where a writer checks the suffix), renamed into place once
complete. A killed run (kill -9, a power cut) can leave one behind: the next write of the same
target removes it. .gitignore hides them from git.

A stage with several outputs writes them all through StagedOutputs, which renames them into place
together once every one is written: an interrupted run leaves the previous set whole, never a new
model beside the previous model's reports.
"""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def remove_stale_partials(target: Path) -> None:
    """Remove what an earlier, killed write of `target` left beside it; put back a previous copy
    that a kill between replace_dir's two renames left aside."""
    for stale in target.parent.glob(f"{glob.escape(_partial_prefix(target))}*"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    previous = _previous_copy(target)
    if previous.exists() and not target.exists():
        previous.rename(target)


def _previous_copy(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


@contextlib.contextmanager
def naming(path: Path):
    """An OSError raised without a file name (a write that found the disk full) names `path`."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary name next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    file = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=_partial_prefix(path), delete=False, encoding="utf-8")
    try:
        with naming(path), file:
            file.write(text)
        os.chmod(file.name, 0o644)  # temporary files are created private; a report is for every reader
        os.replace(file.name, path)
    finally:
        Path(file.name).unlink(missing_ok=True)  # a failed write's partial file


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def temporary_dir_for(target: Path) -> tempfile.TemporaryDirectory:
    """A scratch folder beside `target` (same file system, so a rename into place is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    try:
        return tempfile.TemporaryDirectory(dir=target.parent, prefix=_partial_prefix(target))
    except OSError as error:  # a read-only or unwritable folder: name it, not the random name it refused
        raise OSError(error.errno, error.strerror, str(target.parent)) from error


def replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` in place of `target`; until the last rename the previous copy stays whole."""
    previous = _previous_copy(target)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    new.chmod(0o755)  # temporary folders are created private
    new.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def save_atomically(path: Path, save) -> None:
    """Call save(temporary_path) with a name ending like `path` (Keras checks it), then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        with naming(partial):
            save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class StagedOutputs(contextlib.ExitStack):
    """A stage's outputs, each written in a scratch folder beside it, then put in place together by
    commit(). A failure, Ctrl-C or kill -9 before commit() leaves every previous output as it was;
    leaving the `with` removes what was not committed.

    Files of one folder share its scratch folder, so that what a writer puts beside a file
    (save_classifier: the labels beside the model) is where that file's own staged name is.
    """

    def __init__(self):
        super().__init__()
        self._staged: dict[Path, Path] = {}  # each output -> where it is written until commit()
        self._scratch: dict[Path, Path] = {}  # each output folder of files -> its scratch folder

    def file(self, target: Path) -> Path:
        """Where to write file `target`: the same name (a writer may check its suffix), staged."""
        if target.parent not in self._scratch:
            self._scratch[target.parent] = Path(self.enter_context(temporary_dir_for(target)))
        self._staged[target] = self._scratch[target.parent] / target.name
        return self._staged[target]

    def folder(self, target: Path) -> Path:
        """An empty folder to fill, which replaces folder `target` on commit()."""
        self._staged[target] = Path(self.enter_context(temporary_dir_for(target)))
        return self._staged[target]

    def commit(self) -> None:
        """Rename every output into place, Ctrl-C ignored meanwhile: stopped midway, the renames would
        leave a mixed set (a kill -9 here still can; DVC then runs the stage again)."""
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for target, staged in self._staged.items():
                if staged.is_dir():
                    replace_dir(staged, target)
                else:
                    os.replace(staged, target)
        finally:
            signal.signal(signal.SIGINT, interrupt)
