"""Downloads one Hub file with PyPI's huggingface_hub, the real client of Xet storage.

tests/it/xet_setup.rs runs this against the emulated Hub in Xet mode: for a Xet-backed
file, `hf_hub_download` reads `X-Xet-Hash` and the `xet-auth` link of the `resolve`
answer, asks the token route, and has hf_xet fetch the file from the CAS by its
reconstruction and xorbs, never from the bridge. Prints one JSON object:
{"path", "seconds"}.

Usage: download.py ENDPOINT REPO FILENAME CACHE_DIR [TOKEN]
"""

import json
import sys
import time

from huggingface_hub import hf_hub_download


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, repo, filename, cache_dir = sys.argv[1:5]
    token = sys.argv[5] if len(sys.argv) == 6 else False
    start = time.monotonic()
    path = hf_hub_download(
        repo_id=repo, filename=filename, endpoint=endpoint, cache_dir=cache_dir, token=token
    )
    print(json.dumps({"path": path, "seconds": time.monotonic() - start}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
