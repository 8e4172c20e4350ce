"""Uploads files to a Xet CAS with PyPI's hf_xet, as huggingface_hub does.

The tests' CAS (tests/it/common/xet.rs) runs this, so the chunking, xorb packing and
deduplication of the files it serves are HuggingFace's own, not ours. It opens one
upload commit on an `XetSession` (what `huggingface_hub`'s `_upload_xet_files` does),
queues every file, waits for the commit, and prints one JSON object per file, in the
order given: {"path", "hash", "size", "sha256"}.

Usage: upload.py ENDPOINT TOKEN EXP_UNIX_SECS FILE...
"""

import json
import sys

import hf_xet


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, token, exp = sys.argv[1], sys.argv[2], int(sys.argv[3])
    paths = sys.argv[4:]
    session = hf_xet.XetSession()
    handles = []
    with session.new_upload_commit(
        endpoint=endpoint, token=token, token_expiry_unix_secs=exp
    ) as commit:
        for path in paths:
            handles.append((path, commit.start_upload_file(path, sha256=hf_xet.COMPUTE_SHA256)))
    for path, handle in handles:
        info = handle.result().xet_info
        print(
            json.dumps(
                {"path": path, "hash": info.hash, "size": info.file_size, "sha256": info.sha256}
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
