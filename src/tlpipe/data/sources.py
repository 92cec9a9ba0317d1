"""Where a dataset comes from: a local folder, or a .zip / .tar(.gz|.bz2|.xz) archive by path or
http(s):// URL; downloaded with retries, checked against its sha256 and extracted safely."""

import contextlib
import hashlib
import json
import lzma
import re
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tlpipe.config import DatasetConfig
from tlpipe.data.layout import hidden_reason
from tlpipe.errors import UserError
from tlpipe.files import CHUNK_BYTES, sha256_of, write_json

DOWNLOAD_TRIES = 4
# Downloads in progress (download_path): git- and dvc-ignored, resumed by the next attempt or run.
DOWNLOADS_DIR = Path("data/.downloads")
# The response headers that identify a URL's content (DVC tracks http(s) dependencies by the same).
IDENTITY_HEADERS = ("ETag", "Last-Modified", "Content-Length")
# What zipfile, tarfile and the decompressors raise on a truncated or corrupt archive.
CORRUPT_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error, lzma.LZMAError)


def local_path(url: str) -> Path | None:
    """The local path an url names, or None for an http(s) URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    path = Path(url)
    if not path.exists():
        raise UserError(f"params.yaml: dataset.url = {url!r}: no such file or folder")
    return path


def download_path(url: str) -> Path:
    """Where url is downloaded to: data/.downloads/<sha256 of url>.part, kept until the fetch ends so that
    another attempt, or the next run after a kill, resumes it; its sidecar <sha256 of url>.json records the url,
    the validator (ETag or Last-Modified) that says whether the server still holds the same content,
    and the full length."""
    return DOWNLOADS_DIR / f"{hashlib.sha256(url.encode()).hexdigest()}.part"


def discard_download(url: str) -> None:
    """Remove url's download and sidecar, and data/.downloads/ itself once empty."""
    part = download_path(url)
    part.unlink(missing_ok=True)
    part.with_suffix(".json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: another url's download, or none at all
        DOWNLOADS_DIR.rmdir()


def download(url: str) -> Path:
    """Stream url to download_path(url), retrying transient failures. What an earlier attempt or a killed
    run left there is resumed (Range, with If-Range: the validator it was downloaded under); a server
    that answers with the whole content instead (it changed, or it ignores ranges) starts it over."""
    # Imported here and in remote_identity, not at the top: 40 ms that the source stage pays on every
    # dvc repro, for a local dataset.url that never downloads.
    import urllib.request

    part = download_path(url)
    for stale in DOWNLOADS_DIR.glob("*"):  # another dataset.url's, left from before it was changed
        if stale.stem != part.stem:
            stale.unlink()

    def attempt() -> Path:
        offset, known = _resumable(url, part)
        request = urllib.request.Request(url)
        if offset:
            print(f"dataset.url: resuming the download at byte {offset} ({part})")
            request.add_header("Range", f"bytes={offset}-")
            request.add_header("If-Range", known["validator"])
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            if error.code != 416 or not offset:
                raise
            error.close()
            if offset == known["length"]:
                return part  # every byte was there: a run killed before it used the download
            raise _start_over(url, f"the server has no bytes past {offset} of a partial download")
        with response:
            if offset and response.status == 206:
                start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                if start is None or int(start[1]) != offset:
                    raise _start_over(url, f"asked for bytes from {offset}, got {response.headers.get('Content-Range')!r}")
            else:  # the whole content (it changed, or the server ignores ranges): from byte 0
                offset = 0
                known = _start(url, part, response)
            _receive(response, part, offset, known["length"])
        return part

    try:
        return _with_retries(url, attempt)
    except UserError:
        if not _resumable(url, part)[0]:
            discard_download(url)  # nothing a later run could resume
        raise


def _resumable(url: str, part: Path) -> tuple[int, dict]:
    """How many bytes of url `part` holds that a Range request can resume from, and its sidecar;
    (0, {}) without a validator to ask whether they are still the server's."""
    try:
        known = json.loads(part.with_suffix(".json").read_text(encoding="utf-8"))
        size = part.stat().st_size
    except (OSError, ValueError):
        return 0, {}
    if known.get("url") != url or not known.get("validator"):
        return 0, {}
    return size, known


def _start(url: str, part: Path, response) -> dict:
    """Empty `part` and record what identifies the content `response` begins, before any of it is
    written: a kill never leaves bytes beside another content's validator."""
    length = response.headers.get("Content-Length")
    known = {"url": url, "validator": response.headers.get("ETag") or response.headers.get("Last-Modified"),
             "length": int(length) if length else None}
    part.unlink(missing_ok=True)
    write_json(part.with_suffix(".json"), known)
    return known


def _start_over(url: str, reason: str) -> urllib.error.URLError:
    """A transient failure (the next attempt downloads from byte 0), the partial download removed."""
    discard_download(url)
    return urllib.error.URLError(f"{reason}; starting over")


def _receive(response, part: Path, offset: int, length: int | None) -> None:
    """Append the response's body to `part`, which holds `offset` bytes of the content."""
    import http.client  # loaded with urllib.request by now
    from tqdm import tqdm  # as urllib.request in download()

    remaining = response.headers.get("Content-Length")
    expected = offset + int(remaining) if remaining else None
    with open(part, "ab") as out, tqdm(total=length, initial=offset, unit="B", unit_scale=True, desc="download",
                                       disable=None) as progress:
        try:
            # read1: what has arrived, written as it comes, so that a kill loses next to nothing.
            while chunk := response.read1(CHUNK_BYTES):
                out.write(chunk)
                progress.update(len(chunk))
        except http.client.IncompleteRead:  # a chunked body cut short
            raise urllib.error.URLError(f"connection closed after {out.tell()} bytes") from None
        received = out.tell()
    if expected is not None and received != expected:
        raise urllib.error.URLError(f"connection closed after {received} of {expected} bytes")


def remote_identity(url: str) -> dict[str, str]:
    """What the server says identifies url's content now (a HEAD request, retried as a download is):
    those of its ETag, Last-Modified and Content-Length headers that it sends."""
    import urllib.request  # as in download()

    def attempt() -> dict[str, str]:
        # urllib follows a redirect with a GET; closed unread, that transfers only what is in flight.
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as response:
            return {name: response.headers[name] for name in IDENTITY_HEADERS if name in response.headers}

    return _with_retries(url, attempt)


def _with_retries(url: str, attempt):
    """attempt(), retried with backoff on transient failures (timeouts, 5xx, dropped connections);
    what still fails raises a UserError naming dataset.url and the cause."""
    for tries in range(1, DOWNLOAD_TRIES + 1):
        try:
            return attempt()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            # An HTTPError is a URLError: a 4xx answer is final, a 5xx one may pass.
            final = isinstance(error, urllib.error.HTTPError) and error.code < 500
            if final or tries == DOWNLOAD_TRIES:
                raise _request_failed(url, error, tries) from None
            reason = _cause(error)
        wait = 2 ** (tries - 1)
        print(f"dataset.url: {reason}; retrying in {wait} s")
        time.sleep(wait)
    raise AssertionError("unreachable")


def _request_failed(url: str, error: Exception, tries: int) -> UserError:
    after = f" (after {tries} tries)" if tries > 1 else ""
    return UserError(f"dataset.url = {url!r}: {_cause(error)}{after}; check the URL or your network, then run dvc repro again")


def _cause(error: Exception) -> str:
    """Why a request failed, in a few words: 'HTTP 404 Not Found', 'connection refused', 'name not resolved'."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error  # URLError wraps the socket's error
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "name not resolved"
    return str(reason)


@contextlib.contextmanager
def archive_file(url: str, local: Path | None):
    """The archive file url names: `local`, or url downloaded, the download removed once used or refused
    (no big file lingers; one that fails its sha256 or is corrupt is downloaded afresh next time)."""
    if local is not None:
        yield local
        return
    archive = download(url)
    try:
        yield archive
    finally:
        discard_download(url)


def verify_sha256(archive: Path, dataset: DatasetConfig) -> None:
    actual = sha256_of(archive)
    if not dataset.sha256:
        print(f"fetch: dataset.sha256 is empty; pin this archive with dataset.sha256: {actual}")
    elif actual != dataset.sha256:
        raise UserError(
            f"dataset.url = {dataset.url!r}: sha256 is {actual}, but params.yaml dataset.sha256 is {dataset.sha256}; "
            "fix dataset.url or update dataset.sha256, then run dvc repro again"
        )


def extract(archive: Path, destination: Path, dataset: DatasetConfig) -> None:
    """Extract a zip or tar archive, refusing entries that would escape `destination` or that are bombs;
    a corrupt or truncated archive fails in one line."""
    destination.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, destination, dataset)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, destination, dataset)
        else:
            raise UserError(f"{dataset.url}: not a .zip or .tar(.gz|.bz2|.xz) archive, nor a folder")
    except CORRUPT_ARCHIVE_ERRORS as error:
        detail = " ".join(str(error).split())  # one line, whatever the library wrote
        raise UserError(f"{dataset.url}: corrupt or truncated archive ({type(error).__name__}: {detail}); fetch it again or fix dataset.url") from None


def _check_budget(url: str, count: int, total_bytes: int, dataset: DatasetConfig) -> None:
    if count > dataset.max_files:
        raise UserError(f"{url}: more than dataset.max_files = {dataset.max_files} entries; raise it if the archive is trusted")
    if total_bytes > dataset.max_bytes:
        raise UserError(f"{url}: unpacks to more than dataset.max_bytes = {dataset.max_bytes}; raise it if the archive is trusted")


def _extract_zip(archive: Path, destination: Path, dataset: DatasetConfig) -> None:
    with zipfile.ZipFile(archive) as zip_file:
        members = zip_file.infolist()
        _check_budget(dataset.url, len(members), sum(member.file_size for member in members), dataset)
        for member in members:
            path = PurePosixPath(member.filename.replace("\\", "/"))
            is_symlink = (member.external_attr >> 16) & 0o170000 == 0o120000
            if path.is_absolute() or ".." in path.parts or is_symlink:
                raise UserError(f"{dataset.url}: unsafe archive entry {member.filename!r} (absolute, '..' or a link); refusing to extract")
        zip_file.extractall(destination)


def _extract_tar(archive: Path, destination: Path, dataset: DatasetConfig) -> None:
    with tarfile.open(archive) as tar_file:
        members = tar_file.getmembers()
        _check_budget(dataset.url, len(members), sum(member.size for member in members), dataset)
        for member in members:
            # The "data" filter below would strip a leading '/' silently; refuse it, as for zip files.
            if PurePosixPath(member.name).is_absolute():
                raise UserError(f"{dataset.url}: unsafe archive entry {member.name!r} (absolute); refusing to extract")
        try:
            # The "data" filter refuses '..', links leaving the folder and device files.
            tar_file.extractall(destination, filter="data")
        except tarfile.FilterError as error:
            raise UserError(f"{dataset.url}: unsafe archive entry {error.tarinfo.name!r} ({error}); refusing to extract") from None


def unwrap_single_folder(root: Path) -> Path:
    """An archive holding one top-level folder (as flower_photos.tgz does) yields that folder. The hidden
    entries beside it (a zip from macOS has __MACOSX/) move into it, so that split lists them as left out;
    one whose name the folder already holds stays behind in root."""
    entries = [entry for entry in root.iterdir() if hidden_reason(entry.name, entry.is_dir()) is None]
    if not (len(entries) == 1 and entries[0].is_dir() and any(child.is_dir() for child in entries[0].iterdir())):
        return root
    folder = entries[0]
    for entry in sorted(root.iterdir()):
        if entry != folder and not (folder / entry.name).exists():
            entry.rename(folder / entry.name)
    return folder

