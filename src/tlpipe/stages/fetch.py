"""Stage `fetch`: dataset.url -> data/raw/, one sub-folder per class.

The source is a local image folder, or a .zip / .tar(.gz|.bz2|.xz) archive given
as a path or an http(s):// URL (tlpipe.data.sources; a download cut short, or killed, is resumed
from data/.downloads/ and removed once used). Archives are checked against
dataset.sha256 and extracted safely; a single top-level folder is unwrapped, the hidden
entries beside it moved into it (split lists them as left out).
data/raw/ is replaced only once the new copy is complete.
"""

import shutil
from pathlib import Path

from tlpipe.config import RAW_DIR, load_config
from tlpipe.data.layout import hidden_reason, left_out_note, top_level
from tlpipe.data.sources import archive_file, extract, local_path, unwrap_single_folder, verify_sha256
from tlpipe.errors import run_stage
from tlpipe.files import replace_dir, temporary_dir_for


def main() -> None:
    dataset = load_config().dataset
    with temporary_dir_for(RAW_DIR) as work:
        work = Path(work)
        fetched = work / "raw"
        local = local_path(dataset.url)
        if local is not None and local.is_dir():
            shutil.copytree(local, fetched)
        else:
            with archive_file(dataset.url, local) as archive:
                verify_sha256(archive, dataset)
                extract(archive, fetched, dataset)
        root = unwrap_single_folder(fetched)
        # What unwrapping could not move into the folder (a name it already holds) is named here.
        beside = [entry for entry in fetched.iterdir() if entry != root] if root != fetched else []
        behind_note = left_out_note({entry: hidden_reason(entry.name, entry.is_dir()) for entry in beside}, "left behind")
        replace_dir(root, RAW_DIR)
    classes, left_out = top_level(RAW_DIR)
    print(f"fetch: {dataset.url} -> {RAW_DIR}/ ({len(classes)} class folders){left_out_note(left_out)}{behind_note}")



if __name__ == "__main__":
    run_stage(main)
