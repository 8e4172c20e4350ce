"""The LAN mirror as HuggingFace tools use it: huggingface_hub (PyPI) with HF_ENDPOINT at
the service. Prints one JSON object. Usage:

    client.py download REPO FILE [REVISION]     hf_hub_download; sha256 and size of the file
    client.py two REPO FILE                     two hf_hub_download at once (two caches)
    client.py snapshot REPO PATTERN...          snapshot_download(allow_patterns=...)
    client.py info REPO                         HfApi().model_info
    client.py refs REPO                         HfApi().list_repo_refs: [name, ref, commit]s
    client.py tree REPO                         HfApi().list_repo_tree(recursive=True): paths
"""

import hashlib
import json
import os
import sys
import tempfile
import threading

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError


# Every cache of this run lives in one scratch folder, removed when the run ends.
SCRATCH = tempfile.TemporaryDirectory(prefix="mm-mirror-client-")


def fresh_cache():
    return tempfile.mkdtemp(dir=SCRATCH.name)


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "size": os.path.getsize(path)}


def download(repo, filename, revision=None, cache=None):
    try:
        path = hf_hub_download(repo, filename, revision=revision, cache_dir=cache or fresh_cache())
        return digest(path)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        return {"error": type(e).__name__, "status": status, "message": str(e)[:300]}
    except Exception as e:  # a cut body, after the client's own resumes
        return {"error": type(e).__name__, "status": None, "message": str(e)[:300]}


def two(repo, filename):
    out = [None, None]

    def run(i):
        out[i] = download(repo, filename, cache=fresh_cache())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": out}


def snapshot(repo, patterns):
    root = snapshot_download(repo, allow_patterns=patterns, cache_dir=fresh_cache())
    files = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            files[os.path.relpath(full, root)] = digest(full)["sha256"]
    return {"files": files}


def info(repo):
    m = HfApi().model_info(repo)
    return {"sha": m.sha, "id": m.id, "siblings": sorted(s.rfilename for s in m.siblings or [])}


def refs(repo):
    r = HfApi().list_repo_refs(repo)
    shape = lambda refs: [[g.name, g.ref, g.target_commit] for g in refs]
    return {"branches": shape(r.branches), "tags": shape(r.tags), "converts": shape(r.converts)}


def tree(repo):
    try:
        return {"paths": sorted(e.path for e in HfApi().list_repo_tree(repo, recursive=True))}
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        return {"error": type(e).__name__, "status": status, "message": str(e)[:300]}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "download":
        result = download(*args)
    elif cmd == "two":
        result = two(*args)
    elif cmd == "snapshot":
        result = snapshot(args[0], args[1:])
    elif cmd == "info":
        result = info(args[0])
    elif cmd == "refs":
        result = refs(args[0])
    elif cmd == "tree":
        result = tree(args[0])
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
