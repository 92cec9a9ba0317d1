"""Where a dataset comes from: a local folder, or a .zip / .tar(.gz|.bz2|.xz) archive by path or
http(s):// URL; downloaded with retries, checked against its sha256 and extracted safely."""

import lzma
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from tlpipe.config import DatasetConfig
from tlpipe.errors import UserError
from tlpipe.files import CHUNK_BYTES, sha256_of

DOWNLOAD_TRIES = 4
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


def download(url: str, destination: Path) -> Path:
    """Stream url to destination, retrying transient failures."""

    def attempt() -> Path:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=None) as progress:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
            if total is not None and received != total:
                raise urllib.error.URLError(f"connection closed after {received} of {total} bytes")
        return destination

    return _with_retries(url, attempt)


def remote_identity(url: str) -> dict[str, str]:
    """What the server says identifies url's content now (a HEAD request, retried as a download is):
    those of its ETag, Last-Modified and Content-Length headers that it sends."""

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


def verify_sha256(archive: Path, dataset: DatasetConfig) -> None:
    actual = sha256_of(archive)
    if not dataset.sha256:
        print(f"fetch: dataset.sha256 is empty; pin this archive with dataset.sha256: {actual}")
    elif actual != dataset.sha256:
        raise UserError(
            f"{dataset.url}: sha256 is {actual}, params.yaml dataset.sha256 expects {dataset.sha256}; "
            "fix the URL or update dataset.sha256"
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
    """An archive holding one top-level folder (as flower_photos.tgz does) yields that folder."""
    entries = [entry for entry in root.iterdir() if not entry.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and any(child.is_dir() for child in entries[0].iterdir()):
        return entries[0]
    return root

