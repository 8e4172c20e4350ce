"""The real aria2p (PyPI), as a library and as its CLI, against model-manager.

Run by tests/aria2_clients.rs: argv = RPC port, secret, REST base URL, a fast file's
URL, a slow file's URL. Every action must take effect (checked through REST) and the
numbers aria2p shows must agree with GET /api/downloads. Exits non-zero on a mismatch.
"""

import subprocess
import sys
import time

import aria2p
import requests

port, secret, rest, fast_url, slow_url = sys.argv[1:6]
auth = {"Authorization": f"Bearer {secret}"}


def rest_downloads():
    r = requests.get(f"{rest}/api/downloads", headers=auth, timeout=10)
    r.raise_for_status()
    return r.json()["downloads"]


def rest_by_gid(api, gid):
    """The REST download whose GID (aria2p's view of it) is `gid`."""
    for d in rest_downloads():
        if api.client.tell_status(gid, ["gid"])["gid"] == gid and d["file_name"] == api.get_download(gid).name:
            return d
    raise AssertionError(f"no REST download for {gid}")


def wait(pred, what, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=int(port), secret=secret))

# The library: add, read, pause, resume, remove; numbers against REST.
slow = api.add_uris([slow_url])
check(len(slow.gid) == 16, f"gid {slow.gid}")
wait(lambda: api.get_download(slow.gid).completed_length > 0, "slow under way")
api.pause([slow])
wait(lambda: api.get_download(slow.gid).status == "paused", "slow paused")
d = api.get_download(slow.gid)
r = rest_by_gid(api, slow.gid)
check(r["state"] == "paused", f"REST state {r['state']}")
# aria2 says 0 for a length not known yet, where REST says null.
check(d.completed_length > 0 and (d.total_length, d.completed_length) == (r["bytes_total"] or 0, r["bytes_done"]),
      f"aria2p {d.total_length}/{d.completed_length} vs REST {r['bytes_total']}/{r['bytes_done']}")
check(d.name == r["file_name"] and d.files[0].uris[0]["uri"] == slow_url, f"{d.name} {d.files}")
check(not d.is_torrent and d.followed_by_ids == [] and d.info_hash is None, "plain HTTP download")
stats = api.get_stats()
check(stats.num_waiting == sum(1 for x in rest_downloads() if x["state"] in ("queued", "paused")),
      f"num_waiting {stats.num_waiting}")
api.resume([d])
wait(lambda: rest_by_gid(api, slow.gid)["state"] in ("queued", "downloading"), "REST resumed")
check(all(api.remove([api.get_download(slow.gid)], clean=False)), "remove")
wait(lambda: all(x["file_name"] != "slow.bin" or x["state"] == "cancelled" for x in rest_downloads())
     or not any(x["file_name"] == "slow.bin" for x in rest_downloads()), "REST cancelled")

fast = api.add_uris([fast_url], options={"out": "lib-fast.bin"})
done = wait(lambda: (lambda x: x if x.is_complete else None)(api.get_download(fast.gid)), "fast complete")
r = [x for x in rest_downloads() if x["file_name"] == "lib-fast.bin"][0]
check(r["state"] == "completed", r["state"])
check(done.completed_length == done.total_length == r["bytes_done"] == r["bytes_total"],
      f"{done.completed_length} {done.total_length} {r}")
check(str(done.files[0].path).endswith("/lib-fast.bin"), str(done.files[0].path))


# The CLI: aria2p add/show/pause/resume/remove.
def cli(*args):
    out = subprocess.run(["aria2p", "--host", "http://127.0.0.1", "--port", port, "--secret", secret, *args],
                         capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, f"aria2p {' '.join(args)}: {out.returncode} {out.stdout} {out.stderr}")
    return out.stdout


line = cli("add", slow_url, "-o", "out=cli-slow.bin")
gid = line.split()[-1]
check(line.startswith("Created download ") and len(gid) == 16, line)
wait(lambda: api.get_download(gid).completed_length > 0, "cli under way")
cli("pause", gid)
wait(lambda: [x for x in rest_downloads() if x["file_name"] == "cli-slow.bin"][0]["state"] == "paused", "cli paused")
shown = cli("show")
row = [ln for ln in shown.splitlines() if ln.startswith(gid)]
check(row and "paused" in row[0] and "cli-slow.bin" in row[0], shown)
r = [x for x in rest_downloads() if x["file_name"] == "cli-slow.bin"][0]
percent = f"{r['bytes_done'] / r['bytes_total'] * 100:.2f}%"
check(percent in row[0], f"{percent} not in {row[0]}")
cli("resume", gid)
wait(lambda: [x for x in rest_downloads() if x["file_name"] == "cli-slow.bin"][0]["state"] in ("queued", "downloading"),
     "cli resumed")
cli("remove", gid)
wait(lambda: not any(x["file_name"] == "cli-slow.bin" and x["state"] != "cancelled" for x in rest_downloads()),
     "cli removed")
print("aria2p: library and CLI agree with REST")
