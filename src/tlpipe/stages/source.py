"""Stage `source`: is dataset.url there, and what does it hold now -> data/source.json.

It runs on every `dvc repro` (always_changed), before DVC looks at the fetch stage's deps:
an http(s) URL that cannot be reached, or a local path that does not exist, fails here in
one line naming dataset.url and the cause, where DVC would only say "dependency ... does
not exist". For an http(s) URL it records what the server says identifies the content
(ETag, Last-Modified, Content-Length); fetch depends on the file, so it re-runs when that
changes. A local path's content is tracked by DVC itself (fetch lists dataset.url too).
"""

import json

from tlpipe.config import SOURCE_FILE, load_config
from tlpipe.data.sources import local_path, remote_identity
from tlpipe.errors import run_stage
from tlpipe.files import write_text


def main() -> None:
    url = load_config().dataset.url
    identity = {"url": url}
    if local_path(url) is None:
        identity |= remote_identity(url)
    text = json.dumps(identity, indent=2) + "\n"
    # The same answer leaves the file as it was: DVC then need not even hash it again.
    if not SOURCE_FILE.is_file() or SOURCE_FILE.read_text(encoding="utf-8") != text:
        write_text(SOURCE_FILE, text)
    print(f"source: {url} -> {SOURCE_FILE}")


if __name__ == "__main__":
    run_stage(main)
