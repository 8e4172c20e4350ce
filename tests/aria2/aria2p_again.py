"""The real aria2p (PyPI) adding the same URI twice, then another URI of the same name.

Run by tests/it/first_hour_terminal.rs: argv = RPC port, REST base URL, a URL, another
URL ending in the same file name. The second add of the same URI must answer the first
one's gid (nothing new queued); the other source gets a numbered name of its own.
Exits non-zero on a mismatch.
"""

import sys
import time

import aria2p
import requests

port, rest, url, other = sys.argv[1:5]
api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=int(port), secret=""))


def wait(pred, what, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


first = api.add_uris([url])
wait(lambda: api.get_download(first.gid).status == "complete", "the first add completes")
again = api.add_uris([url])
check(again.gid == first.gid, f"asked again: gid {again.gid}, the first was {first.gid}")
downloads = requests.get(f"{rest}/api/downloads", timeout=10).json()["downloads"]
check(len(downloads) == 1, f"asking again queued another download: {downloads}")
third = api.add_uris([other])
check(third.gid != first.gid, "another source got the first gid")
wait(lambda: api.get_download(third.gid).status == "complete", "the other source completes")
name = api.get_download(third.gid).name
check(name.endswith(" (1).gguf"), f"the other source's name: {name!r}")
print("aria2p: the same URI answers its gid; another source is numbered")
