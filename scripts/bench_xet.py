#!/usr/bin/env python3
"""The Xet benchmark (issue #25, acceptance 6), in one run on this machine:

- a 512 MiB Xet-backed file fetched from HuggingFace's own CAS (`local_cas_server`,
  `cargo install xet-client --version 1.8.0 --features simulation`) by PyPI's
  huggingface_hub + hf_xet (`hf_hub_download`, what `hf download` runs) and by
  model-manager (release build, `POST /api/downloads` of the Hub file), wall time each;
- the delta update: the same model re-uploaded with a chat template 288 bytes longer
  (everything after the header shifts), fetched by model-manager with the first version
  on disk, against a full download of it.

The files are uploaded with hf_xet (its chunking and dedup); a small Hub stand-in in
this process answers `resolve` as the real Hub does for Xet-backed files (302 to a
bridge on another port, `X-Xet-Hash`, the `xet-auth` link) and the token route.
Prints a markdown table and the pass/fail of: ours >= 1.0x hf_xet's speed, and the
delta's wall time <= 5 % of a full download's.

Usage: bench_xet.py --binary target/release/model-manager [--reps 3] [--mib 512]
"""

import argparse
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = "bench/Xet-GGUF"
COMMIT = "b" * 40
TEMPLATE_GROWTH = 288


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"bench_xet: {url} did not answer")


def gguf(template, tensor):
    """A GGUF v3 file: a chat template, then one F32 tensor of `tensor`."""
    def gstr(s):
        b = s.encode()
        return len(b).to_bytes(8, "little") + b
    out = b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    for k, v in (("general.architecture", "llama"), ("tokenizer.chat_template", template)):
        out += gstr(k) + (8).to_bytes(4, "little") + gstr(v)
    out += gstr("token_embd.weight") + (1).to_bytes(4, "little")
    out += (len(tensor) // 4).to_bytes(8, "little") + (0).to_bytes(4, "little") + (0).to_bytes(8, "little")
    out += b"\0" * (-len(out) % 32)
    return out + tensor


def write_pair(root, mib):
    tensor = os.urandom(mib * 1024 * 1024 - 4096)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    fix = "{# system default #}" + "." * (TEMPLATE_GROWTH - 20)
    assert len(fix) == TEMPLATE_GROWTH
    paths = []
    for name, t in (("v1.gguf", template), ("v2.gguf", fix + template)):
        p = os.path.join(root, name)
        with open(p, "wb") as f:
            f.write(gguf(t, tensor))
        paths.append(p)
    return paths


def upload(cas_url, paths, home):
    """hf_xet's upload of `paths` (one session: v2 dedups against v1)."""
    env = dict(os.environ, HF_HOME=home, HF_XET_CACHE=os.path.join(home, "xet"))
    code = (
        "import sys, json, hf_xet\n"
        "s = hf_xet.XetSession()\n"
        "hs = []\n"
        "with s.new_upload_commit(endpoint=sys.argv[1], token='t', token_expiry_unix_secs=4000000000) as c:\n"
        "    for p in sys.argv[2:]: hs.append(c.start_upload_file(p, sha256=hf_xet.COMPUTE_SHA256))\n"
        "for h in hs:\n"
        "    i = h.result().xet_info; print(json.dumps({'hash': i.hash, 'size': i.file_size, 'sha256': i.sha256}))\n"
    )
    files = []
    for p in paths:  # one after the other, as two uploads of two versions would be
        out = subprocess.run([sys.executable, "-c", code, cas_url, p], env=env, check=True,
                             capture_output=True, text=True).stdout
        files.append(json.loads(out.strip().splitlines()[-1]))
    return files


class Hub:
    """resolve (302 to the bridge, with the Xet headers) and the token route."""

    def __init__(self, cas_url, files, bridge_root):
        self.cas_url, self.files = cas_url, files
        self.port, self.bridge_port = free_port(), free_port()
        hub = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.answer()

            def do_GET(self):
                self.answer()

            def answer(self):
                p = self.path.split("?")[0]
                if "/xet-read-token/" in p:
                    exp = str(int(time.time()) + 3600)
                    body = json.dumps({"accessToken": "t", "exp": int(exp), "casUrl": hub.cas_url}).encode()
                    self.send_response(200)
                    for k, v in (("X-Xet-Cas-Url", hub.cas_url), ("X-Xet-Access-Token", "t"),
                                 ("X-Xet-Token-Expiration", exp), ("Content-Length", str(len(body)))):
                        self.send_header(k, v)
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(body)
                    return
                name = p.rsplit("/", 1)[-1]
                f = hub.files.get(name)
                if "/resolve/" not in p or f is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(302)
                headers = (
                    ("Location", f"http://127.0.0.1:{hub.bridge_port}/{name}"),
                    ("X-Repo-Commit", COMMIT), ("ETag", f'"{f["sha256"]}"'),
                    ("X-Linked-Etag", f'"{f["sha256"]}"'), ("X-Linked-Size", str(f["size"])),
                    ("X-Xet-Hash", f["hash"]),
                    ("Link", f'<http://127.0.0.1:{hub.port}/api/models/{REPO}/xet-read-token/{COMMIT}>; '
                             f'rel="xet-auth", <{hub.cas_url}/v1/reconstructions/{f["hash"]}>; '
                             'rel="xet-reconstruction-info"'),
                    ("Content-Length", "0"),
                )
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()

        class Bridge(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=bridge_root, **kw)

            def log_message(self, *a):
                pass

        for port, handler in ((self.port, H), (self.bridge_port, Bridge)):
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"


def hf_download(endpoint, name, workdir):
    """hf_hub_download's own time for the call (python start-up excluded)."""
    cache = tempfile.mkdtemp(dir=workdir)
    code = (
        "import sys, time, json\n"
        "from huggingface_hub import hf_hub_download\n"
        "t = time.monotonic()\n"
        "p = hf_hub_download(sys.argv[2], sys.argv[3], endpoint=sys.argv[1], cache_dir=sys.argv[4], token=False)\n"
        "print(json.dumps({'path': p, 'seconds': time.monotonic() - t}))\n"
    )
    env = dict(os.environ, HF_HOME=cache, HF_XET_CACHE=os.path.join(cache, "xet"), HF_HUB_DISABLE_TELEMETRY="1")
    out = subprocess.run([sys.executable, "-c", code, endpoint, REPO, name, cache], env=env,
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    digest = sha256(r["path"])
    shutil.rmtree(cache, ignore_errors=True)
    return r["seconds"], digest


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Service:
    def __init__(self, binary, endpoint, workdir):
        self.dir = tempfile.mkdtemp(dir=workdir)
        self.port = free_port()
        cfg = os.path.join(self.dir, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\nbind = "127.0.0.1:{self.port}"\n[storage]\ndata_dir = "{self.dir}/data"\n'
                    f'download_dir = "{self.dir}/dl"\n[hub]\nendpoint = "{endpoint}"\n'
                    '[library]\ncheck_updates_hours = 0\n')
        log = os.path.join(self.dir, "log")
        # MM_* variables are config keys to the service (bench.sh exports one of its own).
        env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
        self.proc = subprocess.Popen([binary, "--config", cfg], stdout=subprocess.DEVNULL,
                                     stderr=open(log, "w"), env=env)
        pidfile = os.environ.get("MM_BENCH_PIDFILE")
        if pidfile:  # bench.sh stops it whatever way the run ends
            with open(pidfile, "a") as f:
                f.write(f"{self.proc.pid}\n")
        try:
            wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=60)
        except SystemExit:
            with open(log) as f:
                sys.stderr.write(f.read()[-4000:])
            raise

    def fetch(self, name):
        """Wall time from the request to the completed, verified file; the record."""
        body = json.dumps({"hub": {"repo": REPO, "file": name}}).encode()
        start = time.monotonic()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/downloads", body,
                                     {"Content-Type": "application/json"})
        d = json.loads(urllib.request.urlopen(req).read())
        while d["state"] not in ("completed", "failed"):
            time.sleep(0.02)
            d = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/downloads/{d['id']}").read())
        if d["state"] != "completed":
            raise SystemExit(f"bench_xet: the download failed: {d}")
        return time.monotonic() - start, d

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/model-manager")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    cas_bin = shutil.which("local_cas_server") or os.path.expanduser("~/.cargo/bin/local_cas_server")
    if not os.access(cas_bin, os.X_OK):
        raise SystemExit("bench_xet: local_cas_server is missing (scripts/test.sh installs it)")
    work = tempfile.mkdtemp(prefix="mm-bench-xet-", dir=a.workdir)
    cas_port = free_port()
    cas = subprocess.Popen([cas_bin, "--data-directory", os.path.join(work, "cas"), "--port", str(cas_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cas_url = f"http://127.0.0.1:{cas_port}"
        wait_http(cas_url + "/health")
        files_dir = os.path.join(work, "files")
        os.makedirs(files_dir)
        v1, v2 = write_pair(files_dir, a.mib)
        assert os.path.getsize(v1) >= a.mib * 1024 * 1024 - 4096, "the model files are written whole"
        t = time.monotonic()
        up = upload(cas_url, [v1, v2], os.path.join(work, "home"))
        print(f"uploaded v1 and v2 ({a.mib} MiB each) with hf_xet in {time.monotonic() - t:.1f} s", file=sys.stderr)
        hub = Hub(cas_url, {"v1.gguf": up[0], "v2.gguf": up[1]}, files_dir)
        rows = run_cases(a, hub, up, work)
    finally:
        os.killpg(cas.pid, signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)
    report(rows, a.mib)


def run_cases(a, hub, up, work):
    rows = {"hf_xet": [], "ours": [], "ours_full_v2": [], "ours_delta_v2": []}
    deltas = []
    for _ in range(a.reps):
        secs, digest = hf_download(hub.endpoint, "v1.gguf", work)
        assert digest == up[0]["sha256"], "hf_xet fetched other bytes"
        rows["hf_xet"].append(secs)
        svc = Service(a.binary, hub.endpoint, work)
        try:
            secs, d = svc.fetch("v1.gguf")
            assert d["transport"] == "xet" and d["sha256"] == up[0]["sha256"], d
            rows["ours"].append(secs)
            secs, d = svc.fetch("v2.gguf")
            assert d["sha256"] == up[1]["sha256"], d
            rows["ours_delta_v2"].append(secs)
            deltas.append(d["bytes_reused"])
        finally:
            svc.stop()
        svc = Service(a.binary, hub.endpoint, work)
        try:
            secs, d = svc.fetch("v2.gguf")
            rows["ours_full_v2"].append(secs)
        finally:
            svc.stop()
    rows["reused"] = deltas
    return rows


def report(rows, mib):
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    size = mib * 1024 * 1024
    print(f"\n| case ({mib} MiB Xet file, local CAS) | wall s (median) | MiB/s |")
    print("|---|---|---|")
    for k, label in (("hf_xet", "hf_hub_download (hf_xet 1.8.0)"), ("ours", "model-manager"),
                     ("ours_full_v2", "model-manager, v2 with nothing on disk"),
                     ("ours_delta_v2", "model-manager, v2 with v1 on disk (delta)")):
        print(f"| {label} | {med[k]:.2f} | {size / med[k] / 2**20:.0f} |")
    speed = med["hf_xet"] / med["ours"]
    delta = med["ours_delta_v2"] / med["ours_full_v2"]
    print(f"\nreused by the delta: {int(med['reused'])} bytes of {size}")
    ok1, ok2 = speed >= 1.0, delta <= 0.05
    print(f"- [{'x' if ok1 else ' '}] Xet download speed vs hf_xet: {speed:.2f}x (>= 1.0)")
    print(f"- [{'x' if ok2 else ' '}] delta update wall time / full download: {delta * 100:.1f} % (<= 5 %)")
    sys.exit(0 if ok1 and ok2 else 1)


if __name__ == "__main__":
    main()
