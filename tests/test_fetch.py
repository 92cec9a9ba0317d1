"""tlpipe.stages.fetch.main(): dataset.url -> data/raw/, safely and atomically; and the `source` stage
before it, which checks dataset.url and records its identity (data/source.json)."""

import contextlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from builders import REPO, make_image_folder, make_tar, make_zip, png_bytes, sha256_hex, tree, write_params
from tlpipe.config import SOURCE_FILE
from tlpipe.data import sources
from tlpipe.stages import fetch, source
from tlpipe.errors import UserError

RAW = Path("data/raw")
WRONG_SHA = "0" * 64

# Two classes of tiny images: {entry name below the archive's root: content}.
IMAGES = {f"{label}/{label}_{index}.png": png_bytes(seed) for seed, (label, index) in enumerate(
    [("cat", 0), ("cat", 1), ("dog", 0), ("dog", 1)])}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def configure(workdir: Path, url: str, sha256: str = "", **dataset) -> None:
    write_params(workdir, dataset={"url": url, "sha256": sha256, **dataset})


def make_previous_raw(workdir: Path) -> dict[str, bytes]:
    """A data/raw from an earlier fetch; returns its content to compare against later."""
    make_image_folder(workdir / RAW, {"old_a": 1, "old_b": 1}, first_seed=1000)
    return tree(workdir / RAW)


def data_dir_entries(workdir: Path) -> list[str]:
    return sorted(path.name for path in (workdir / "data").iterdir())


# --- sources ---------------------------------------------------------------------


def test_local_folder_is_copied(workdir, capsys):
    source = workdir / "source"
    make_image_folder(source, {"cat": 2, "dog": 3})
    configure(workdir, "source")

    fetch.main()

    assert tree(workdir / RAW) == tree(source)
    assert tree(source)  # the source is left in place
    assert "(2 class folders)" in capsys.readouterr().out


def test_fetch_counts_a_hidden_folder_as_left_out_not_as_a_class(workdir, capsys):
    source = workdir / "source"
    make_image_folder(source, {"cat": 2, "dog": 2, "owl": 2, ".dotclass": 2})
    configure(workdir, "source")

    fetch.main()

    assert tree(workdir / RAW) == tree(source)
    assert "(3 class folders); 1 left out: .dotclass/, a hidden folder (name starts with '.')" in capsys.readouterr().out


def test_local_folder_replaces_previous_raw(workdir):
    make_previous_raw(workdir)
    source = workdir / "source"
    make_image_folder(source, {"cat": 1, "dog": 1})
    configure(workdir, "source")

    fetch.main()

    assert tree(workdir / RAW) == tree(source)
    assert data_dir_entries(workdir) == ["raw"]


def test_tar_gz_single_top_level_folder_is_unwrapped(workdir):
    archive = make_tar(workdir / "flowers.tar.gz", {f"flowers/{name}": data for name, data in IMAGES.items()})
    configure(workdir, "flowers.tar.gz", sha256_hex(archive))

    fetch.main()

    assert sorted(path.name for path in (workdir / RAW).iterdir()) == ["cat", "dog"]
    assert tree(workdir / RAW) == IMAGES
    assert data_dir_entries(workdir) == ["raw"]


@pytest.mark.parametrize("mode", ["w", "w:bz2", "w:xz"])
def test_other_tar_compressions(workdir, mode):
    archive = make_tar(workdir / "images.tar", IMAGES, mode=mode)
    configure(workdir, "images.tar", sha256_hex(archive))

    fetch.main()

    assert tree(workdir / RAW) == IMAGES


def test_zip_is_extracted(workdir):
    archive = make_zip(workdir / "images.zip", IMAGES)
    configure(workdir, "images.zip", sha256_hex(archive))

    fetch.main()

    assert tree(workdir / RAW) == IMAGES


def test_zip_from_macos_unwraps_and_keeps_macosx_folder_for_split_to_list(workdir, capsys):
    files = {f"shoes/{name}": data for name, data in IMAGES.items()}
    resource_fork = b"\x00\x05\x16\x07 resource fork"
    files["__MACOSX/shoes/cat/._cat_0.png"] = resource_fork
    files[".DS_Store"] = files["shoes/.DS_Store"] = b"Bud1"  # a name the folder holds: it stays behind, named
    archive = make_zip(workdir / "shoes.zip", files)
    configure(workdir, "shoes.zip", sha256_hex(archive))

    fetch.main()

    assert tree(workdir / RAW) == {**IMAGES, "__MACOSX/shoes/cat/._cat_0.png": resource_fork, ".DS_Store": b"Bud1"}
    out = capsys.readouterr().out
    assert "(2 class folders); 2 left out: .DS_Store, a hidden file (name starts with '.'); __MACOSX/, a macOS metadata folder (__MACOSX)" in out
    assert "; 1 left behind: .DS_Store, a hidden file (name starts with '.')" in out


def test_a_file_url_is_refused_with_the_path_to_use_instead(workdir):
    archive = make_tar(workdir / "images.tar.gz", IMAGES)
    configure(workdir, archive.resolve().as_uri(), sha256_hex(archive))

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "DVC cannot track file:// URLs" in str(error.value)
    assert f"write the path itself: {archive.resolve()}" in str(error.value)


def test_empty_sha256_prints_the_hash_to_pin(workdir, capsys):
    archive = make_tar(workdir / "images.tar.gz", IMAGES)
    configure(workdir, "images.tar.gz", "")

    fetch.main()

    assert f"dataset.sha256: {sha256_hex(archive)}" in capsys.readouterr().out
    assert tree(workdir / RAW) == IMAGES


# --- refusals --------------------------------------------------------------------


def test_sha256_mismatch_is_refused_and_keeps_previous_raw(workdir):
    previous = make_previous_raw(workdir)
    archive = make_tar(workdir / "images.tar.gz", IMAGES)
    configure(workdir, "images.tar.gz", WRONG_SHA)

    with pytest.raises(UserError) as error:
        fetch.main()

    assert sha256_hex(archive) in str(error.value)
    assert WRONG_SHA in str(error.value)
    assert tree(workdir / RAW) == previous
    assert data_dir_entries(workdir) == ["raw"]


@pytest.mark.parametrize("entry", ["../evil", "../../../../evil", "cat/../../evil"])
def test_tar_entry_with_dotdot_is_refused(workdir, entry):
    files = {"cat/a.png": png_bytes(1), entry: b"evil", "dog/b.png": png_bytes(2)}
    archive = make_tar(workdir / "images.tar.gz", files)
    configure(workdir, "images.tar.gz", sha256_hex(archive))

    with pytest.raises(UserError) as error:
        fetch.main()

    assert repr(entry) in str(error.value)
    assert not (workdir.parent / "evil").exists()  # where "../../../../evil" would land
    assert list(workdir.rglob("evil")) == []
    assert data_dir_entries(workdir) == []  # the partial extraction is cleaned up, no data/raw appears


def test_tar_entry_with_absolute_path_is_refused(workdir):
    outside = workdir / "outside" / "absolute_entry.png"
    archive = make_tar(workdir / "images.tar.gz", {**IMAGES, str(outside): b"evil"})
    configure(workdir, "images.tar.gz", sha256_hex(archive))

    with pytest.raises(UserError) as error:
        fetch.main()

    assert repr(str(outside)) in str(error.value)
    assert not outside.parent.exists()
    assert data_dir_entries(workdir) == []


@pytest.mark.parametrize("target", ["../../../../../etc/passwd", "/etc/passwd"])
def test_tar_symlink_pointing_outside_is_refused(workdir, target):
    archive = make_tar(workdir / "images.tar.gz", IMAGES, symlinks={"cat/link.png": target})
    configure(workdir, "images.tar.gz", sha256_hex(archive))

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "'cat/link.png'" in str(error.value)
    assert data_dir_entries(workdir) == []


@pytest.mark.parametrize("entry", ["../evil.png", "cat/../../evil.png", "/tmp/evil.png", "..\\evil.png"])
def test_zip_slip_is_refused(workdir, entry):
    archive = make_zip(workdir / "images.zip", {**IMAGES, entry: b"evil"})
    configure(workdir, "images.zip", sha256_hex(archive))

    with pytest.raises(UserError) as error:
        fetch.main()

    assert repr(entry) in str(error.value)
    assert not (workdir.parent / "evil.png").exists()
    assert list(workdir.rglob("evil.png")) == []
    assert data_dir_entries(workdir) == []


def test_zip_symlink_is_refused(workdir):
    archive = make_zip(workdir / "images.zip", IMAGES, symlinks={"cat/link.png": "/etc/passwd"})
    configure(workdir, "images.zip", sha256_hex(archive))

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "'cat/link.png'" in str(error.value)
    assert data_dir_entries(workdir) == []


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_max_files_is_enforced(workdir, kind):
    make = make_tar if kind == "tar" else make_zip
    archive = make(workdir / f"images.{kind}", IMAGES)
    configure(workdir, archive.name, sha256_hex(archive), max_files=len(IMAGES) - 1)

    with pytest.raises(UserError) as error:
        fetch.main()

    assert f"dataset.max_files = {len(IMAGES) - 1}" in str(error.value)
    assert data_dir_entries(workdir) == []

    # Exactly at the limit is allowed.
    configure(workdir, archive.name, sha256_hex(archive), max_files=len(IMAGES))
    fetch.main()
    assert tree(workdir / RAW) == IMAGES


def test_max_bytes_is_enforced(workdir):
    archive = make_tar(workdir / "images.tar.gz", IMAGES)
    total = sum(len(data) for data in IMAGES.values())
    configure(workdir, "images.tar.gz", sha256_hex(archive), max_bytes=total - 1)

    with pytest.raises(UserError) as error:
        fetch.main()

    assert f"dataset.max_bytes = {total - 1}" in str(error.value)
    assert data_dir_entries(workdir) == []


def test_missing_local_path_names_dataset_url(workdir):
    configure(workdir, "no/such/archive.tar.gz")

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "dataset.url" in str(error.value)
    assert "'no/such/archive.tar.gz'" in str(error.value)


def test_file_that_is_not_an_archive_is_refused(workdir):
    previous = make_previous_raw(workdir)
    (workdir / "images.txt").write_text("cat.png\ndog.png\n")
    configure(workdir, "images.txt", "")

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "not a .zip or .tar" in str(error.value)
    assert tree(workdir / RAW) == previous
    assert data_dir_entries(workdir) == ["raw"]


def fails_as_corrupt(workdir: Path, archive: Path) -> str:
    """Fetch `archive` (unpinned), expecting the one-line corrupt-archive error; the previous data/raw survives."""
    previous = make_previous_raw(workdir)
    configure(workdir, archive.name)

    with pytest.raises(UserError) as error:
        fetch.main()

    message = str(error.value)
    assert message.startswith(f"{archive.name}: corrupt or truncated archive (")
    assert "\n" not in message
    assert tree(workdir / RAW) == previous
    assert data_dir_entries(workdir) == ["raw"]
    return message


@pytest.mark.parametrize(("name", "mode", "error"), [
    ("images.tar.gz", "w:gz", "EOFError"),
    ("images.tar.xz", "w:xz", "EOFError"),
    ("images.tar", "w", "ReadError: unexpected end of data"),
])
def test_truncated_tar_fails_in_one_line(workdir, name, mode, error):
    archive = make_tar(workdir / name, IMAGES, mode=mode)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 4])  # the plain tar: its 3rd header, no data

    assert f"({error}" in fails_as_corrupt(workdir, archive)


def test_zip_with_a_corrupt_entry_fails_in_one_line(workdir):
    archive = make_zip(workdir / "images.zip", IMAGES)
    data = bytearray(archive.read_bytes())
    data[30 + len("cat/cat_0.png") + 40] ^= 0xFF  # inside the first entry's data, after its local header and name
    archive.write_bytes(bytes(data))

    assert "BadZipFile: Bad CRC-32 for file 'cat/cat_0.png'" in fails_as_corrupt(workdir, archive)


def test_zip_with_a_garbage_directory_fails_in_one_line(workdir):
    end_of_directory = make_zip(workdir / "images.zip", IMAGES).read_bytes()[-22:]  # the record that makes it look like a zip
    archive = workdir / "images.zip"
    archive.write_bytes(b"garbage " * 100 + end_of_directory)

    assert "BadZipFile" in fails_as_corrupt(workdir, archive)


# --- HTTP ------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers each path from server.plans: a list of (status, body, Content-Length) used in turn, the last one
    repeated; with the ETag in server.etags, if any. Records each request: the path, "HEAD <path>" for a HEAD."""

    def do_GET(self):
        self.server.requests.append(self.path)
        self._answer(send_body=True)

    def do_HEAD(self):
        self.server.requests.append(f"HEAD {self.path}")
        self._answer(send_body=False)

    def _answer(self, send_body: bool):
        plan = self.server.plans.get(self.path)
        if plan is None:
            self.send_error(404)
            return
        status, body, length = plan.pop(0) if len(plan) > 1 else plan[0]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if self.path in self.server.etags:
            self.send_header("ETag", self.server.etags[self.path])
        self.end_headers()
        if send_body:
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler):
    """A real HTTP server on 127.0.0.1 answering with `handler`, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_server():
    with serving(_Handler) as server:
        server.plans, server.etags, server.requests = {}, {}, []
        yield server


@pytest.fixture
def no_sleep(monkeypatch):
    """Record fetch's retry waits instead of sleeping."""
    waits = []
    monkeypatch.setattr(sources, "time", types.SimpleNamespace(sleep=waits.append))
    return waits


def make_served_archive(workdir: Path, first_seed: int = 100) -> tuple[bytes, str, dict[str, bytes]]:
    """A .tar.gz of one folder of cat and dog images: its bytes, its sha256 and what fetch makes of it."""
    files = {f"set/{label}/{index}.png": png_bytes(first_seed + 10 * n + index, size=24)
             for n, label in enumerate(["cat", "dog"]) for index in range(3)}
    archive = make_tar(workdir / f"served-{first_seed}.tar.gz", files)
    expected = {name.removeprefix("set/"): data for name, data in files.items()}
    return archive.read_bytes(), sha256_hex(archive), expected


@pytest.fixture
def served_archive(workdir):
    return make_served_archive(workdir)


def test_http_download_smaller_than_the_write_buffer(workdir, http_server, no_sleep):
    # The length check once read the file size before Python flushed its 4 KiB buffer.
    archive = make_tar(workdir / "small.tar.gz", {"cat/a.png": png_bytes(1, size=4), "dog/b.png": png_bytes(2, size=4)})
    assert archive.stat().st_size < 4096
    http_server.plans["/small.tar.gz"] = [(200, archive.read_bytes(), None)]
    configure(workdir, f"{http_server.base_url}/small.tar.gz", sha256_hex(archive))

    fetch.main()

    assert sorted(tree(workdir / RAW)) == ["cat/a.png", "dog/b.png"]
    assert no_sleep == []


def test_http_download(workdir, http_server, served_archive, no_sleep):
    body, sha, expected = served_archive
    http_server.plans["/data.tar.gz"] = [(200, body, None)]
    configure(workdir, f"{http_server.base_url}/data.tar.gz", sha)

    fetch.main()

    assert tree(workdir / RAW) == expected
    assert http_server.requests == ["/data.tar.gz"]
    assert no_sleep == []
    assert data_dir_entries(workdir) == ["raw"]


def test_http_404_is_not_retried(workdir, http_server, no_sleep):
    configure(workdir, f"{http_server.base_url}/missing.tar.gz")

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "404" in str(error.value)
    assert "dataset.url" in str(error.value)
    assert http_server.requests == ["/missing.tar.gz"]
    assert no_sleep == []
    assert data_dir_entries(workdir) == []


def test_http_500_is_retried(workdir, http_server, served_archive, no_sleep, capsys):
    body, sha, expected = served_archive
    http_server.plans["/data.tar.gz"] = [(500, b"", None), (200, body, None)]
    configure(workdir, f"{http_server.base_url}/data.tar.gz", sha)

    fetch.main()

    assert tree(workdir / RAW) == expected
    assert http_server.requests == ["/data.tar.gz"] * 2
    assert no_sleep == [1]
    assert "dataset.url: HTTP 500 Internal Server Error; retrying in 1 s" in capsys.readouterr().out


def test_http_500_every_time_fails_after_all_tries(workdir, http_server, no_sleep):
    previous = make_previous_raw(workdir)
    http_server.plans["/data.tar.gz"] = [(503, b"", None)]
    configure(workdir, f"{http_server.base_url}/data.tar.gz")

    with pytest.raises(UserError) as error:
        fetch.main()

    assert "503" in str(error.value)
    assert http_server.requests == ["/data.tar.gz"] * sources.DOWNLOAD_TRIES
    assert no_sleep == [1, 2, 4]
    assert tree(workdir / RAW) == previous
    assert data_dir_entries(workdir) == ["raw"]


def test_http_truncated_body_fails_after_retries_and_keeps_previous_raw(workdir, http_server, served_archive, no_sleep):
    previous = make_previous_raw(workdir)
    body, sha, _ = served_archive
    http_server.plans["/data.tar.gz"] = [(200, body[:1000], len(body))]
    configure(workdir, f"{http_server.base_url}/data.tar.gz", sha)

    with pytest.raises(UserError) as error:
        fetch.main()

    assert f"(after {sources.DOWNLOAD_TRIES} tries)" in str(error.value)
    assert f"of {len(body)} bytes" in str(error.value)
    assert http_server.requests == ["/data.tar.gz"] * sources.DOWNLOAD_TRIES
    assert no_sleep == [1, 2, 4]
    assert tree(workdir / RAW) == previous
    assert data_dir_entries(workdir) == ["raw"]  # no stray .raw-* temporary folders


def test_http_truncated_once_then_complete_succeeds(workdir, http_server, served_archive, no_sleep):
    body, sha, expected = served_archive
    http_server.plans["/data.tar.gz"] = [(200, body[:1000], len(body)), (200, body, None)]
    configure(workdir, f"{http_server.base_url}/data.tar.gz", sha)

    fetch.main()

    assert tree(workdir / RAW) == expected
    assert no_sleep == [1]


# --- HTTP: resuming a download cut short or killed --------------------------------


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.body with the validator server.validator (a header: ETag or Last-Modified) as a file
    server does: a Range request is answered 206 from the byte it asks for (416 past the end), unless its
    If-Range names another validator (200, the whole body); with server.chunked, in one HTTP/1.1 chunk
    and no Content-Length. The first server.cuts answers are cut after
    server.cut_after bytes of body; each waits for server.drop before it drops the connection (a stalled
    server). Records each GET's Range and If-Range headers, and counts the body bytes sent (server.served)."""

    def do_GET(self):
        server = self.server
        server.requests.append({name: self.headers[name] for name in ("Range", "If-Range") if name in self.headers})
        body, (validator_name, validator) = server.body, server.validator
        start = 0
        if "Range" in self.headers and self.headers.get("If-Range", validator) == validator:
            start = int(re.fullmatch(r"bytes=(\d+)-", self.headers["Range"])[1])
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if server.chunked:
            self.protocol_version, self.close_connection = "HTTP/1.1", True
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if server.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body) - start))
        self.send_header(validator_name, validator)
        self.end_headers()
        cut = server.cuts > 0
        server.cuts -= cut
        sent = body[start:start + server.cut_after] if cut else body[start:]
        if server.chunked:  # the chunk's size says what the cut leaves out
            self.wfile.write(f"{len(body) - start:x}\r\n".encode() + sent + (b"" if cut else b"\r\n0\r\n\r\n"))
        else:
            self.wfile.write(sent)
        server.served += len(sent)
        if cut:
            server.drop.wait(timeout=60)

    def log_message(self, *args):
        pass


@pytest.fixture
def range_server():
    with serving(_RangeHandler) as server:
        server.validator, server.requests, server.served, server.cuts, server.drop = ("ETag", '"v1"'), [], 0, 0, threading.Event()
        server.chunked = False
        server.drop.set()
        try:
            yield server
        finally:
            server.drop.set()  # a stalled answer's thread ends


@pytest.mark.parametrize(("validator", "chunked"), [
    (("ETag", '"v1"'), False), (("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT"), False), (("ETag", '"v1"'), True),
], ids=["etag", "last-modified", "chunked"])
def test_a_download_cut_short_resumes_with_a_range_request(workdir, range_server, served_archive, no_sleep, capsys,
                                                           validator, chunked):
    body, sha, expected = served_archive
    range_server.body, range_server.validator, range_server.cuts, range_server.cut_after = body, validator, 1, 1000
    range_server.chunked = chunked
    configure(workdir, f"{range_server.base_url}/data.tar.gz", sha)

    fetch.main()

    out = capsys.readouterr().out
    assert "dataset.url: connection closed after 1000 " in out
    assert f"dataset.url: resuming the download at byte 1000 ({sources.download_path(range_server.base_url + '/data.tar.gz')})" in out
    assert range_server.requests == [{}, {"Range": "bytes=1000-", "If-Range": validator[1]}]
    assert range_server.served == len(body)  # every byte once
    assert no_sleep == [1]
    assert tree(workdir / RAW) == expected
    assert data_dir_entries(workdir) == ["raw"]  # the download is removed once extracted


def fail_cut_in_every_try(workdir: Path, server) -> tuple[str, int]:
    """A fetch from `server` whose every try is cut after 1000 more bytes: its url, and the bytes it leaves
    in its download for the next run."""
    body, sha, _ = make_served_archive(workdir)
    url = f"{server.base_url}/data.tar.gz"
    server.body, server.cuts, server.cut_after = body, sources.DOWNLOAD_TRIES, 1000
    configure(workdir, url, sha)

    with pytest.raises(UserError) as error:
        fetch.main()

    cut_at = 1000 * sources.DOWNLOAD_TRIES
    assert f"connection closed after {cut_at} of {len(body)} bytes (after {sources.DOWNLOAD_TRIES} tries)" in str(error.value)
    assert server.requests == [{}] + [{"Range": f"bytes={1000 * tries}-", "If-Range": '"v1"'} for tries in range(1, sources.DOWNLOAD_TRIES)]
    assert sources.download_path(url).stat().st_size == cut_at  # kept for the next run
    assert data_dir_entries(workdir) == [".downloads"]
    del server.requests[:]
    server.served = 0
    return url, cut_at


@pytest.mark.parametrize("upstream", ["same", "changed"])
def test_a_download_cut_in_every_try_is_resumed_by_the_next_run_unless_upstream_changed(workdir, range_server, no_sleep, upstream):
    url, cut_at = fail_cut_in_every_try(workdir, range_server)
    body, sha, expected = make_served_archive(workdir, first_seed=100 if upstream == "same" else 200)
    if upstream == "changed":
        range_server.body, range_server.validator = body, ("ETag", '"v2"')
        configure(workdir, url, sha)

    fetch.main()

    assert range_server.requests == [{"Range": f"bytes={cut_at}-", "If-Range": '"v1"'}]
    assert range_server.served == (len(body) - cut_at if upstream == "same" else len(body))
    assert tree(workdir / RAW) == expected
    assert data_dir_entries(workdir) == ["raw"]


def test_a_416_short_of_the_length_downloaded_under_that_validator_starts_over(workdir, range_server, no_sleep, capsys):
    url, cut_at = fail_cut_in_every_try(workdir, range_server)
    # Shorter than the bytes kept, under the same ETag (a misconfigured server): the range is past its end.
    files = {"cat/a.png": png_bytes(1, size=4), "dog/b.png": png_bytes(2, size=4)}
    archive = make_tar(workdir / "small.tar.gz", files)
    assert archive.stat().st_size < cut_at
    range_server.body = archive.read_bytes()
    configure(workdir, url, sha256_hex(archive))

    fetch.main()

    assert range_server.requests == [{"Range": f"bytes={cut_at}-", "If-Range": '"v1"'}, {}]
    assert f"dataset.url: the server has no bytes past {cut_at} of a partial download; starting over; retrying in 1 s" in capsys.readouterr().out
    assert tree(workdir / RAW) == files
    assert data_dir_entries(workdir) == ["raw"]


def test_a_download_of_a_url_no_longer_configured_is_removed(workdir, range_server, no_sleep):
    old_url, _ = fail_cut_in_every_try(workdir, range_server)
    _, sha, expected = make_served_archive(workdir)
    configure(workdir, f"{range_server.base_url}/other.tar.gz", sha)

    fetch.main()

    assert range_server.requests == [{}]
    assert not sources.download_path(old_url).exists()
    assert tree(workdir / RAW) == expected
    assert data_dir_entries(workdir) == ["raw"]


def test_a_complete_download_left_by_a_killed_run_is_used_without_downloading_it_again(workdir, range_server, served_archive, no_sleep):
    body, sha, expected = served_archive
    url = f"{range_server.base_url}/data.tar.gz"
    range_server.body = body
    configure(workdir, url, sha)
    sources.download(url)  # as a run killed after its download, before it extracted it, leaves it

    fetch.main()

    assert range_server.requests == [{}, {"Range": f"bytes={len(body)}-", "If-Range": '"v1"'}]  # answered 416
    assert range_server.served == len(body)
    assert tree(workdir / RAW) == expected
    assert data_dir_entries(workdir) == ["raw"]


def test_a_download_that_fails_its_sha256_is_removed_and_named_in_one_line(workdir, range_server, served_archive, no_sleep):
    previous = make_previous_raw(workdir)
    body, sha, _ = served_archive
    url = f"{range_server.base_url}/data.tar.gz"
    range_server.body = body
    configure(workdir, url, WRONG_SHA)

    with pytest.raises(UserError) as error:
        fetch.main()

    assert str(error.value) == (f"dataset.url = {url!r}: sha256 is {sha}, but params.yaml dataset.sha256 is {WRONG_SHA}; "
                                "fix dataset.url or update dataset.sha256, then run dvc repro again")
    assert tree(workdir / RAW) == previous
    assert data_dir_entries(workdir) == ["raw"]  # the next run downloads it afresh


def test_a_fetch_killed_midway_resumes_its_download_in_the_next_run(workdir, range_server):
    # Incompressible content, large enough that the first half spans many reads and writes.
    noise = np.random.default_rng(7).bytes
    files = {"cat/a.png": noise(200_000), "dog/b.png": noise(200_000)}
    archive = make_tar(workdir / "noise.tar", files, mode="w")
    body = archive.read_bytes()
    url = f"{range_server.base_url}/noise.tar"
    range_server.body, range_server.cuts, range_server.cut_after = body, 1, len(body) // 2
    range_server.drop.clear()  # the first answer stalls after its first half
    configure(workdir, url, sha256_hex(archive))
    part = sources.download_path(url)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tlpipe.stages.fetch"]

    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (part.is_file() and part.stat().st_size >= len(body) // 4):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.kill()
    process.communicate(timeout=60)
    range_server.drop.set()
    kept = part.stat().st_size
    shutil.copy(REPO / ".gitignore", workdir / ".gitignore")
    subprocess.run(["git", "init", "-q", str(workdir)], check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=workdir,
                            capture_output=True, text=True, check=True).stdout
    assert "params.yaml" in status and ".downloads" not in status

    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert f"dataset.url: resuming the download at byte {kept} ({part})" in result.stdout
    assert range_server.requests == [{}, {"Range": f"bytes={kept}-", "If-Range": '"v1"'}]
    assert range_server.served == len(body) // 2 + len(body) - kept  # the second run sent only what was missing
    assert tree(workdir / RAW) == files
    assert not (workdir / sources.DOWNLOADS_DIR).exists()


# --- the source stage: is dataset.url there, and what does it hold -------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (the system's pick, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_source_records_the_url_identity_and_rewrites_only_when_it_changes(workdir, http_server, served_archive, no_sleep):
    body, _, _ = served_archive
    url = f"{http_server.base_url}/data.tar.gz"
    http_server.plans["/data.tar.gz"] = [(200, body, None)]
    http_server.etags["/data.tar.gz"] = '"v1"'
    configure(workdir, url)

    source.main()
    assert json.loads(SOURCE_FILE.read_text()) == {"url": url, "ETag": '"v1"', "Content-Length": str(len(body))}

    # The same answer: the file is left as it was (same bytes for DVC's hash, and not even written).
    recorded = SOURCE_FILE.read_bytes()
    os.utime(SOURCE_FILE, ns=(0, 0))
    source.main()
    assert SOURCE_FILE.read_bytes() == recorded
    assert SOURCE_FILE.stat().st_mtime_ns == 0

    # A new ETag upstream: the file changes, so DVC re-runs fetch.
    http_server.etags["/data.tar.gz"] = '"v2"'
    source.main()
    assert json.loads(SOURCE_FILE.read_text())["ETag"] == '"v2"'
    assert http_server.requests == ["HEAD /data.tar.gz"] * 3  # asked, never downloaded
    assert no_sleep == []


def test_source_of_a_local_archive_records_its_path_only(workdir):
    make_tar(workdir / "images.tar.gz", IMAGES)
    configure(workdir, "images.tar.gz")

    source.main()

    assert json.loads(SOURCE_FILE.read_text()) == {"url": "images.tar.gz"}  # DVC hashes the archive itself


def test_source_with_nothing_listening_names_dataset_url_and_writes_nothing(workdir, no_sleep):
    url = f"http://127.0.0.1:{closed_port()}/data.tar.gz"
    configure(workdir, url)

    with pytest.raises(UserError) as error:
        source.main()

    assert str(error.value) == (f"dataset.url = {url!r}: connection refused (after {sources.DOWNLOAD_TRIES} tries); "
                                "check the URL or your network, then run dvc repro again")
    assert no_sleep == [1, 2, 4]
    assert not (workdir / "data").exists()


def test_source_stage_on_http_404_exits_2_with_one_line(workdir, http_server):
    url = f"{http_server.base_url}/missing.tar.gz"
    configure(workdir, url)

    # As DVC runs it: a subprocess, whose exit status and stderr are what the user sees.
    result = subprocess.run([sys.executable, "-m", "tlpipe.stages.source"], cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=120)

    assert result.returncode == 2
    assert result.stderr == (f"error: dataset.url = {url!r}: HTTP 404 Not Found; "
                             "check the URL or your network, then run dvc repro again\n")
    assert http_server.requests == ["HEAD /missing.tar.gz"]  # a 4xx is not retried
    assert not (workdir / "data").exists()
