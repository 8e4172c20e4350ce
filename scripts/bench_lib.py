#!/usr/bin/env python3
"""The benchmark behind scripts/bench.sh (plain Python 3 standard library).

Starts nginx on loopback over generated files, then runs curl, aria2c and
model-manager on the same cases in the same run and prints a markdown table:
wall time, CPU seconds per GiB, peak RSS and the ratio to the best anchor,
followed by the pass/fail of every acceptance line.

How things are measured
- curl / aria2c: `/usr/bin/time -f '%e %U %S %M'` around the command (CPU and max
  RSS, children included); wall from a monotonic clock around the same command.
- model-manager: a fresh service (fresh data and download dirs, free loopback
  port) per run, so VmHWM is per run. Wall from the first POST to the moment
  `GET /api/stats` shows every download completed; to keep the bench's own
  polling off the service's CPU it watches the download dir for the final names
  (they appear only after fsync and verification) and polls the API tightly only
  at the end, plus every 200 ms to catch a failure. CPU = utime+stime of the
  service from /proc/<pid>/stat before the first POST and after the last
  completion; peak RSS = VmHWM from /proc/<pid>/status.
- Every output file is checked against the sha256 of its source after the run,
  outside the timing; downloaded files are deleted and `sync` is run between runs
  so that one run's writeback does not land on the next.
"""

import argparse
import ctypes
import hashlib
import http.client
import json
import math
import os
import platform
import shutil
import struct
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import bench_script

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")

SMALL_COUNT = 200
SMALL_SIZE = 256 * KiB
SMALL_SETTINGS = {"max_concurrent": 8, "connections_per_download": 4}
BIG_SIZE = 1 * GiB
DD_TOOL = "dd bs=4M oflag=direct"
MID_SIZE = 256 * MiB
CAP_PER_CONN = "20m"          # nginx limit_rate: 20 MiB/s per connection
CAP_BPS = 20 * MiB            # the same cap for scripts/capproxy.py
STRICT_CASE = "256 MiB, strict 20 MiB/s per TCP conn, 4 conns"
SPEED_LIMIT = 10 * MiB        # the global cap of the speed-limit case
QUEUE_SIZE = 10_000
LIBRARY_SIZE = 10_000
LIBRARY_REQUESTS = 100
LIST_REQUESTS = 200
MIRROR_CASE = "1 GiB library file to hf_hub_download"
MIRROR_REPO = "bench/Big-GGUF"
MIRROR_COMMIT = "0123456789abcdef0123456789abcdef01234567"
MIRROR_RAW_CASE = "1 GiB library file to curl -o /dev/null"
MIRROR_RUNS_MIN = 3   # even --quick: one run of a page-cache-bound transfer is noise
# hf_hub_download (huggingface_hub from PyPI) timed around the call only: the
# import and the interpreter's start are not the server's.
HF_CLIENT = r"""
import os, sys, time
from huggingface_hub import hf_hub_download
t = time.monotonic()
path = hf_hub_download(sys.argv[1], "big.bin", cache_dir=sys.argv[2])
print(time.monotonic() - t, os.path.realpath(path))
"""

CASES = ("big", "capped", "strict", "small", "list", "queue", "library", "mirror", "speed")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# processes


_PIDFILE = os.environ.get("MM_BENCH_PIDFILE")
_CHILDREN = []


def _pdeathsig():
    """Children die with the bench even if it is killed with SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, preexec_fn=_pdeathsig, **kw)
    _CHILDREN.append(p)
    if _PIDFILE:
        with open(_PIDFILE, "a") as f:
            f.write(f"{p.pid}\n")
    return p


def stop(p, sig=signal.SIGTERM, timeout=30):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in _CHILDREN:
        _CHILDREN.remove(p)
    return p.returncode


def stop_all():
    for p in list(_CHILDREN):
        stop(p, timeout=10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BenchError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise BenchError(f"port {port} did not open in {timeout} s")


def clean_env():
    """The service reads MM_* and HF_* from the environment: keep ours out of it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MM_", "HF_"))}


def sync_and_settle():
    os.sync()
    time.sleep(0.3)


# --------------------------------------------------------------------------
# source files


def _write_random(path, size):
    h = hashlib.sha256()
    chunk = 16 * MiB
    with open(path + ".tmp", "wb") as f:
        left = size
        while left:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    return h.hexdigest()


def ensure_files(root):
    """Generates the served files once; later runs reuse them (manifest written last)."""
    manifest = os.path.join(root, "manifest.json")
    want = {"big.bin": BIG_SIZE, "mid.bin": MID_SIZE}
    want.update({f"small/s{i:03d}.bin": SMALL_SIZE for i in range(SMALL_COUNT)})
    try:
        with open(manifest) as f:
            sums = json.load(f)
        if set(sums) == set(want) and all(
            os.path.getsize(os.path.join(root, n)) == s for n, s in want.items()
        ):
            log(f"reusing the served files in {root}")
            return sums
    except (OSError, ValueError):
        pass
    log(f"generating the served files in {root} (1 GiB + 256 MiB + {SMALL_COUNT} x 256 KiB from /dev/urandom)")
    os.makedirs(os.path.join(root, "small"), exist_ok=True)
    for d in (root, os.path.join(root, "small")):
        os.chmod(d, 0o755)
    sums = {n: _write_random(os.path.join(root, n), s) for n, s in want.items()}
    with open(manifest + ".tmp", "w") as f:
        json.dump(sums, f, indent=0, sort_keys=True)
    os.replace(manifest + ".tmp", manifest)
    return sums


def warm_cache(root, names):
    """Every tool reads the source from the page cache, the first as much as the last."""
    for n in names:
        with open(os.path.join(root, n), "rb") as f:
            while f.read(8 * MiB):
                pass


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def verify(paths_and_sums):
    """None when every file is there with the right digest, else what is wrong."""
    for path, want in paths_and_sums:
        if not os.path.exists(path):
            return f"missing {os.path.basename(path)}"
        got = sha256_of(path)
        if got != want:
            return f"sha256 mismatch on {os.path.basename(path)}"
    return None


# --------------------------------------------------------------------------
# nginx


class Nginx:
    def __init__(self, root, workdir, big_sha256=None):
        self.root = root
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.capped_port = free_port()
        self.hub_port = free_port()
        self.big_sha256 = big_sha256 or "0" * 64
        self.token = os.urandom(8).hex()
        self.proc = None

    def hub_server(self):
        """A stand-in for huggingface.co in front of the plain server: `resolve` of
        MIRROR_REPO/big.bin answers as the Hub does for an LFS file (302 to the CDN,
        here the plain server, with X-Repo-Commit, X-Linked-Etag, X-Linked-Size)."""
        etag = f'"\\"{self.big_sha256}\\""'
        return f"""  server {{ listen 127.0.0.1:{self.hub_port}; {self.alive()}
    location ~ ^/{MIRROR_REPO}/resolve/[^/]+/big\\.bin$ {{
      add_header X-Repo-Commit {MIRROR_COMMIT} always;
      add_header X-Linked-Etag {etag} always;
      add_header X-Linked-Size {BIG_SIZE} always;
      add_header ETag {etag} always;
      return 302 http://127.0.0.1:{self.port}/big.bin;
    }}
  }}"""

    def alive(self):
        """A location that names this nginx: an open port is not proof that it is ours
        (one taken by something else between free_port() and nginx's bind answers too)."""
        return f"location = /.mm-bench {{ add_header X-MM-Bench {self.token} always; return 204; }}"

    def check_alive(self, port):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/.mm-bench")
            r = c.getresponse()
            r.read()
            c.close()
        except (http.client.HTTPException, OSError) as e:
            raise BenchError(f"port {port}: not our nginx ({e})") from e
        if r.getheader("X-MM-Bench") != self.token:
            raise BenchError(f"port {port}: not our nginx (HTTP {r.status}, no token)")

    def hub_url(self):
        return f"http://127.0.0.1:{self.hub_port}"

    def start(self):
        for attempt in range(3):
            try:
                return self._start()
            except BenchError as e:
                # as Service.start: a port taken between free_port() and nginx's bind
                with open(os.path.join(self.dir, "error.log"), errors="replace") as f:
                    taken = "Address already in use" in f.read()[-2000:]
                if attempt == 2 or not (taken or "not our nginx" in str(e)):
                    raise
                if self.proc:
                    stop(self.proc)
                log("a port of nginx was taken before it bound it; other ports")
                self.port, self.capped_port, self.hub_port = free_port(), free_port(), free_port()

    def _start(self):
        d = self.dir
        conf = os.path.join(d, "nginx.conf")
        temp = "\n".join(
            f"  {k}_temp_path {d}/{k}_temp;"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
{temp}
  server {{ listen 127.0.0.1:{self.port}; root {self.root}; {self.alive()} }}
  server {{ listen 127.0.0.1:{self.capped_port}; root {self.root}; limit_rate {CAP_PER_CONN};
    {self.alive()} }}
{self.hub_server()}
}}
""")
        err = os.path.join(d, "error.log")
        test = subprocess.run(["nginx", "-t", "-q", "-p", d, "-e", err, "-c", conf],
                              capture_output=True, text=True)
        if test.returncode != 0:
            raise BenchError(f"nginx -t: {test.stderr.strip()}")
        self.proc = spawn(["nginx", "-p", d, "-e", err, "-c", conf],
                          stdout=subprocess.DEVNULL, stderr=open(err, "a"))
        for port in (self.port, self.capped_port, self.hub_port):
            wait_port(port, self.proc)
            self.check_alive(port)
        log(f"nginx on 127.0.0.1:{self.port} (plain) and :{self.capped_port} (limit_rate {CAP_PER_CONN})")

    def url(self, name, capped=False):
        return f"http://127.0.0.1:{self.capped_port if capped else self.port}/{name}"

    def stop(self):
        if self.proc:
            stop(self.proc, signal.SIGQUIT)  # graceful; the pdeathsig/TERM covers the rest


# --------------------------------------------------------------------------
# curl / aria2c under /usr/bin/time


def timed(cmd, workdir, label):
    tfile = os.path.join(workdir, "time.out")
    logf = os.path.join(workdir, f"{label}.log")
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile, "--"] + cmd
    with open(logf, "w") as lf:
        t0 = time.monotonic()
        p = spawn(full, stdout=lf, stderr=subprocess.STDOUT)
        p.wait()
        wall = time.monotonic() - t0
    _CHILDREN.remove(p)
    with open(tfile) as f:
        last = f.read().strip().splitlines()[-1]
    e, u, s, m = last.split()
    err = None
    if p.returncode != 0:
        with open(logf) as lf:
            err = f"exit {p.returncode}: " + lf.read()[-300:].strip().replace("\n", " ")
    return {"wall": wall, "wall_time_e": float(e), "cpu": float(u) + float(s),
            "rss_mib": int(m) / 1024, "error": err}


# --------------------------------------------------------------------------
# model-manager


class Service:
    """One model-manager process with its own config, data dir and download dir."""

    def __init__(self, binary, base, settings, data_dir=None, hub_endpoint=None):
        self.hub_endpoint = hub_endpoint
        self.binary = binary
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.data_dir = data_dir or os.path.join(base, "data")
        self.dl_dir = os.path.join(base, "dl")
        os.makedirs(self.dl_dir, exist_ok=True)
        self.settings = settings
        self.proc = None
        self.conn = None

    def start(self, timeout=30):
        """Returns the seconds from spawn until /healthz answers 200."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except BenchError as e:
                # free_port() closes the port before the service binds it: on a machine
                # shared with test suites something else can take it in between.
                if attempt == 2 or "Address already in use" not in str(e):
                    raise
                stop(self.proc)
                log(f"port {self.port} was taken before the service bound it; another port")

    def _start(self, timeout):
        self.port = free_port()
        cfg = os.path.join(self.base, f"config-{self.port}.toml")
        lines = ["[server]", f'bind = "127.0.0.1:{self.port}"', "", "[storage]",
                 f'data_dir = "{self.data_dir}"', f'download_dir = "{self.dl_dir}"', "",
                 "[downloads]"]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        if self.hub_endpoint:
            lines += ["", "[hub]", f'endpoint = "{self.hub_endpoint}"']
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(self.base, "service.log")
        t0 = time.monotonic()
        self.proc = spawn([self.binary, "--config", cfg], env=clean_env(),
                          stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        end = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"model-manager exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            if time.monotonic() > end:
                raise BenchError(f"model-manager did not answer /healthz in {timeout} s")
            time.sleep(0.002)

    def log_tail(self, n=600):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:].strip().replace("\n", " | ")
        except OSError:
            return ""

    def raw(self, method, path, body=None):
        """(status, body bytes) over one keep-alive connection."""
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def latency_ms(self, path, n):
        """p50 and p99 in ms of `n` GETs of `path` over one keep-alive connection."""
        lat = []
        for _ in range(n):
            t = time.monotonic()
            s, _ = self.raw("GET", path)
            lat.append(time.monotonic() - t)
            if s != 200:
                raise BenchError(f"GET {path}: {s}")
        lat.sort()
        return lat[len(lat) // 2] * 1000, lat[math.ceil(0.99 * len(lat)) - 1] * 1000

    def api(self, method, path, body=None):
        status, data = self.raw(method, path, body)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    def stats(self):
        s, j = self.api("GET", "/api/stats")
        if s != 200:
            raise BenchError(f"GET /api/stats: {s} {j}")
        return j

    def add(self, items):
        """Adds many downloads: the batch form when it exists, else one POST each.
        Returns (ids, how)."""
        s, j = self.api("POST", "/api/downloads", {"downloads": items})
        if s == 201 and isinstance(j, dict) and "downloads" in j:
            return [d["id"] for d in j["downloads"]], "batch"
        if s != 400:
            raise BenchError(f"POST /api/downloads (batch): {s} {j}")
        ids = []
        for it in items:
            s, j = self.api("POST", "/api/downloads", it)
            if s != 201:
                raise BenchError(f"POST /api/downloads: {s} {j}")
            ids.append(j["id"])
        return ids, "one POST each"

    def cpu_secs(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status_kib(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.conn:
            self.conn.close()
            self.conn = None
        if self.proc:
            rc = stop(self.proc)
            self.proc = None
            return rc


def mm_run(binary, base, settings, items, final_names, timeout=600):
    """Adds `items`, waits until all are completed; returns the measurement."""
    svc = Service(binary, base, settings)
    svc.start()
    try:
        cpu0 = svc.cpu_secs()
        t0 = time.monotonic()
        ids, how = svc.add(items)
        n = len(ids)
        pending = set(final_names)
        next_check = t0 + 0.2
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                raise BenchError(f"timed out after {timeout} s: {svc.stats()}")
            if pending:
                with os.scandir(svc.dl_dir) as it:
                    pending -= {e.name for e in it}
            if not pending:
                st = svc.stats()
                if st["completed"] + st["failed"] >= n:
                    break
                time.sleep(0.002)
                continue
            if now >= next_check:
                st = svc.stats()
                if st["failed"]:
                    break
                next_check = now + 0.2
            time.sleep(0.005)
        wall = time.monotonic() - t0
        cpu = svc.cpu_secs() - cpu0
        hwm = svc.status_kib("VmHWM") / 1024
        err = None
        if st["failed"] or st["completed"] != n:
            s, j = svc.api("GET", "/api/downloads")
            bad = [d for d in (j or {}).get("downloads", []) if d.get("state") != "completed"]
            err = f"{st['failed']} failed: " + json.dumps([d.get("error") for d in bad[:2]])
        return {"wall": wall, "cpu": cpu, "rss_mib": hwm, "error": err, "add": how,
                "dl_dir": svc.dl_dir}
    finally:
        rc = svc.stop()
        if rc not in (0, None):
            log(f"model-manager exited with {rc} on SIGTERM: {svc.log_tail()}")


# --------------------------------------------------------------------------
# the cases


class Bench:
    def __init__(self, args, files_root, sums, nginx, workdir):
        self.args = args
        self.root = files_root
        self.sums = sums
        self.ng = nginx
        self.work = workdir
        self.binary = args.binary
        self.rows = []      # {"case", "tool", "runs": [...], "gib", "anchor": bool}
        self.extra = {}     # per-case numbers for the acceptance lines
        self.acceptance = []  # the acceptance block's lines, once reported
        self.seq = 0

    def rundir(self):
        self.seq += 1
        d = os.path.join(self.work, f"run{self.seq:03d}")
        os.makedirs(d)
        return d

    def row(self, case, tool, gib, anchor=False, note=""):
        r = {"case": case, "tool": tool, "runs": [], "gib": gib, "anchor": anchor, "note": note}
        self.rows.append(r)
        return r

    def run_tools(self, case, tools, reps):
        """tools: [(row, fn(rundir) -> measurement, verify_list(rundir, m))]; order rotates per rep."""
        for rep in range(reps):
            k = rep % len(tools)
            for row, fn, files in tools[k:] + tools[:k]:
                d = self.rundir()
                try:
                    m = fn(d)
                except BenchError as e:
                    m = {"wall": None, "cpu": None, "rss_mib": None, "error": str(e)}
                if m.get("wall") is not None and not m.get("error"):
                    m["error"] = verify(files(d, m))
                m["ok"] = not m["error"]
                row["runs"].append(m)
                log(f"{case} | {row['tool']} | run {rep + 1}/{reps}: "
                    + (f"{m['wall']:.3f} s, cpu {m['cpu']:.2f} s, rss {m['rss_mib']:.1f} MiB"
                       if m["wall"] is not None else "-")
                    + ("" if m["ok"] else f"  FAILED: {m['error']}"))
                shutil.rmtree(d, ignore_errors=True)
                sync_and_settle()

    # -- 1 GiB, one connection ---------------------------------------------
    def case_big(self, reps):
        case = "1 GiB, 1 connection"
        url = self.ng.url("big.bin")
        want = self.sums["big.bin"]
        curl = ["curl", "-sS", "--fail", "-o"]

        def out(d):
            return os.path.join(d, "big.bin")

        def files(d, m):
            return [((m or {}).get("dl_dir", d) + "/big.bin", want)]

        mm_settings = {"max_concurrent": 3, "connections_per_download": 1}
        tools = [
            # The disk's own durable-write rate (#26): the served file, from the page
            # cache, written with O_DIRECT in 4 MiB blocks.
            (self.row(case, DD_TOOL, 1.0, anchor=True,
                      note="reads the served file from the page cache, O_DIRECT writes"),
             lambda d: timed(["dd", f"if={os.path.join(self.root, 'big.bin')}", f"of={out(d)}",
                              "bs=4M", "oflag=direct"], d, "dd"), files),
            (self.row(case, "curl -o F", 1.0, anchor=True),
             lambda d: timed(curl + [out(d), url], d, "curl"), files),
            (self.row(case, "curl -o F && sync F", 1.0, anchor=True),
             lambda d: timed(["sh", "-c", f'curl -sS --fail -o "$1" "$2" && sync "$1"', "sh",
                              out(d), url], d, "curl-sync"), files),
            (self.row(case, "aria2c -x1 -s1", 1.0),
             lambda d: timed(["aria2c", "-q", "-x1", "-s1", "--allow-overwrite=true",
                              "--auto-file-renaming=false", "-d", d, "-o", "big.bin", url],
                             d, "aria2c"), files),
            (self.row(case, "model-manager", 1.0, note="connections_per_download = 1"),
             lambda d: mm_run(self.binary, d, mm_settings,
                              [{"url": url, "file_name": "big.bin"}], ["big.bin"]), files),
            (self.row(case, "model-manager + sha256", 1.0,
                      note="connections_per_download = 1, digest verified by the service"),
             lambda d: mm_run(self.binary, d, mm_settings,
                              [{"url": url, "file_name": "big.bin", "sha256": want}],
                              ["big.bin"]), files),
            # For comparison, not a target: the same without O_DIRECT (through the page cache).
            (self.row(case, "model-manager, page cache", 1.0,
                      note="connections_per_download = 1, direct_io_min_bytes = 0"),
             lambda d: mm_run(self.binary, d, dict(mm_settings, direct_io_min_bytes=0),
                              [{"url": url, "file_name": "big.bin"}], ["big.bin"]), files),
        ]
        self.run_tools(case, tools, reps)

    # -- 256 MiB, 20 MiB/s per connection, 4 connections --------------------
    def case_capped(self, reps, with_curl, strict=False):
        """nginx's `limit_rate` caps each *request* and gives each a first second's
        allowance; `strict` puts scripts/capproxy.py (a token bucket per TCP connection,
        whatever the requests on it) in front of the uncapped nginx instead."""
        case = STRICT_CASE if strict else "256 MiB, 20 MiB/s/conn, 4 conns"
        proxy = None
        if strict:
            port = free_port()
            proxy = spawn([sys.executable, os.path.join(REPO, "scripts/capproxy.py"),
                           str(port), str(self.ng.port), str(CAP_BPS)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port, proxy)
            url = f"http://127.0.0.1:{port}/mid.bin"
        else:
            url = self.ng.url("mid.bin", capped=True)
        want = self.sums["mid.bin"]

        def files(d, m):
            return [((m or {}).get("dl_dir", d) + "/mid.bin", want)]

        tools = [
            (self.row(case, "aria2c -x4 -s4", 0.25, anchor=True),
             lambda d: timed(["aria2c", "-q", "-x4", "-s4", "--allow-overwrite=true",
                              "--auto-file-renaming=false", "-d", d, "-o", "mid.bin", url],
                             d, "aria2c"), files),
            (self.row(case, "model-manager", 0.25,
                      note="connections_per_download = 4, with sha256"),
             lambda d: mm_run(self.binary, d,
                              {"max_concurrent": 3, "connections_per_download": 4},
                              [{"url": url, "file_name": "mid.bin", "sha256": want}],
                              ["mid.bin"]), files),
        ]
        if with_curl:
            tools.insert(1, (self.row(case, "curl -o F (1 conn)", 0.25,
                                      note="one connection: bound by the cap, for reference"),
                             lambda d: timed(["curl", "-sS", "--fail", "-o", d + "/mid.bin", url],
                                             d, "curl"), files))
        try:
            self.run_tools(case, tools, reps)
        finally:
            if proxy:
                stop(proxy)

    # -- 200 x 256 KiB, 8 at a time -----------------------------------------
    def case_small(self, reps):
        case = f"{SMALL_COUNT} x 256 KiB, 8 at a time"
        names = [f"s{i:03d}.bin" for i in range(SMALL_COUNT)]
        gib = SMALL_COUNT * SMALL_SIZE / GiB

        def files(d, m):
            base = (m or {}).get("dl_dir", d)
            return [(f"{base}/{n}", self.sums["small/" + n]) for n in names]

        def curl_z(d):
            cfg = os.path.join(d, "curl.cfg")
            with open(cfg, "w") as f:
                for n in names:
                    f.write(f'url = "{self.ng.url("small/" + n)}"\noutput = "{d}/{n}"\n')
            return timed(["curl", "-sS", "--fail", "-Z", "--parallel-max", "8", "-K", cfg],
                         d, "curl")

        def aria(d):
            lst = os.path.join(d, "list.txt")
            with open(lst, "w") as f:
                for n in names:
                    f.write(f"{self.ng.url('small/' + n)}\n  out={n}\n")
            return timed(["aria2c", "-q", "-j8", "--allow-overwrite=true",
                          "--auto-file-renaming=false", "-d", d, "-i", lst], d, "aria2c")

        def aria_sync(d):
            # The same durability as model-manager's: every file on disk before done.
            m = aria(d)
            t0 = time.monotonic()
            subprocess.run(["sync"] + [os.path.join(d, n) for n in names], check=False)
            m["wall"] += time.monotonic() - t0
            return m

        items = [{"url": self.ng.url("small/" + n), "file_name": n} for n in names]
        tools = [
            (self.row(case, "aria2c -j8", gib, anchor=True), aria, files),
            (self.row(case, "aria2c -j8 && sync", gib, anchor=True), aria_sync, files),
            (self.row(case, "curl -Z --parallel-max 8", gib), curl_z, files),
            (self.row(case, "model-manager", gib,
                      note="all in one batch POST; the harness watches the download dir, then "
                           "`GET /api/stats`; max_concurrent = 8, connections_per_download = 4 "
                           "(default)"),
             lambda d: mm_run(self.binary, d, SMALL_SETTINGS, items, names), files),
            # As a script adds them (#26): one POST per URL, then polling the list.
            (self.row(case, bench_script.SCRIPT_TOOL, gib,
                      note=bench_script.SCRIPT_NOTE + "; the same settings"),
             lambda d: self._script_run(d, items), files),
        ]
        batch = tools[-2][0]
        before = bench_script.fsync_probe(self.work)
        self.run_tools(case, tools, reps)
        tools[1][0]["fsync_ms"] = [before, bench_script.fsync_probe(self.work)]
        after = tools[1][0]["fsync_ms"][1]
        log(f"{case}: new 4 KiB file + fsync {before[0]:.2f} ms before the case, {after[0]:.2f} "
            f"after; 200-byte append + fdatasync {before[1]:.2f} / {after[1]:.2f} ms")
        hows = {m.get("add") for m in batch["runs"] if m.get("add")}
        if hows:
            batch["note"] += f"; added with {'/'.join(sorted(hows))}"

    def _script_run(self, d, items):
        svc = Service(self.binary, d, SMALL_SETTINGS)
        try:
            svc.start()
            return bench_script.script_run(svc, items)
        except bench_script.ScriptError as e:
            raise BenchError(str(e)) from e
        finally:
            rc = svc.stop()
            if rc not in (0, None):
                log(f"model-manager exited with {rc} on SIGTERM: {svc.log_tail()}")

    # -- 1,000 downloads: the full list to a keep-alive client (#26) ----------
    def case_list(self, reps):
        case = bench_script.LIST_CASE
        row = self.row(case, bench_script.LIST_TOOL, None,
                       note=f"{bench_script.LIST_COUNT:,} paused downloads added in one batch "
                            "POST; a fresh service per run")
        for rep in range(reps):
            d = self.rundir()
            svc = Service(self.binary, d, {"max_concurrent": 3})
            try:
                svc.start()
                m = bench_script.list_run(
                    svc, lambda i: self.ng.url(f"small/s{i % SMALL_COUNT:03d}.bin"))
            except (BenchError, bench_script.ScriptError) as e:
                m = {"wall": None, "cpu": None, "rss_mib": None, "error": str(e)}
            finally:
                svc.stop()
            m["ok"] = not m["error"]
            row["runs"].append(m)
            log(f"{case} | run {rep + 1}/{reps}: "
                + (f"p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, max {m['max_ms']:.2f} ms "
                   f"({m['body_kib']:.0f} KiB); new connection each: p50 {m['fresh_p50_ms']:.2f} ms, "
                   f"p99 {m['fresh_p99_ms']:.2f} ms" if m["ok"] else f"FAILED: {m['error']}"))
            shutil.rmtree(d, ignore_errors=True)
            sync_and_settle()

    # -- 10,000 queued: start-up and list ------------------------------------
    def case_queue(self, reps):
        case = f"{QUEUE_SIZE:,} queued"
        base = self.rundir()
        settings = {"max_concurrent": 3}
        svc = Service(self.binary, base, settings)
        how = set()
        try:
            svc.start()
            t0 = time.monotonic()
            # batches of 1000 keep each body well under the 1 MiB limit
            for i in range(0, QUEUE_SIZE, 1000):
                items = [{"url": self.ng.url(f"small/s{j % SMALL_COUNT:03d}.bin"),
                          "file_name": f"q{j:05d}.bin", "start_paused": True}
                         for j in range(i, min(i + 1000, QUEUE_SIZE))]
                _, h = svc.add(items)
                how.add(h)
            add_secs = time.monotonic() - t0
            st = svc.stats()
        except BenchError as e:
            svc.stop()
            row = self.row(case, "model-manager", None)
            row["runs"].append({"ok": False, "error": f"filling the queue: {e}", "wall": None})
            log(f"{case}: FAILED filling the queue: {e}")
            return
        rc = svc.stop()
        log(f"{case}: added {QUEUE_SIZE} paused downloads in {add_secs:.1f} s "
            f"({'/'.join(how)}); stats {st}; SIGTERM exit {rc}")
        row = self.row(case, "model-manager", None,
                       note=f"added with {'/'.join(sorted(how))} in {add_secs:.1f} s")
        for rep in range(reps):
            # The same service with an empty queue, for the memory each queued one adds.
            empty = Service(self.binary, self.rundir(), settings)
            empty_rss = None
            try:
                empty.start()
                for _ in range(LIST_REQUESTS):
                    empty.raw("GET", "/api/downloads?limit=100")
                empty_rss = empty.status_kib("VmHWM") / 1024
            except BenchError as e:
                log(f"{case}: the empty service failed: {e}")
            finally:
                empty.stop()
                shutil.rmtree(empty.base, ignore_errors=True)
            svc = Service(self.binary, base, settings, data_dir=svc.data_dir)
            m = {"error": None}
            try:
                m["wall"] = svc.start()
                cpu0 = svc.cpu_secs()
                st = svc.stats()
                m["count"] = st["paused"] + st["queued"] + st["active"]
                s, body = svc.raw("GET", "/api/downloads?limit=100")
                if s != 200:
                    raise BenchError(f"GET /api/downloads?limit=100: {s} {body[:200]!r}")
                m["returned"] = len(json.loads(body)["downloads"])
                m["body_kib"] = len(body) / 1024
                m["p50_ms"], m["p99_ms"] = svc.latency_ms("/api/downloads?limit=100", LIST_REQUESTS)
                m["list_cpu"] = svc.cpu_secs() - cpu0
                m["cpu"] = svc.cpu_secs()
                m["rss_mib"] = svc.status_kib("VmHWM") / 1024
                m["rss_now_mib"] = svc.status_kib("VmRSS") / 1024
                if empty_rss is not None:
                    m["empty_rss_mib"] = empty_rss
                    m["kib_per"] = (m["rss_mib"] - empty_rss) * 1024 / QUEUE_SIZE
                if m["count"] != QUEUE_SIZE:
                    m["error"] = f"{m['count']} downloads after restart, not {QUEUE_SIZE}"
            except BenchError as e:
                m.update(error=str(e), wall=m.get("wall"))
            finally:
                svc.stop()
            m["ok"] = not m["error"]
            row["runs"].append(m)
            log(f"{case} | run {rep + 1}/{reps}: start-up {m.get('wall') or 0:.3f} s, "
                f"list p50 {m.get('p50_ms', 0):.2f} ms p99 {m.get('p99_ms', 0):.2f} ms "
                f"({m.get('returned')} items, {m.get('body_kib', 0):.0f} KiB), "
                f"VmHWM {m.get('rss_mib') or 0:.1f} MiB, empty queue {m.get('empty_rss_mib') or 0:.1f} MiB, "
                f"{m.get('kib_per') or 0:.2f} KiB per queued download"
                + ("" if m["ok"] else f"  FAILED: {m['error']}"))
        shutil.rmtree(base, ignore_errors=True)
        sync_and_settle()

    # -- the library: 10,000 files on disk ---------------------------------
    def case_library(self, reps):
        """Start-up with 10,000 files in download_dir (each a small GGUF of its own
        bytes): /healthz must answer while the first scan runs, and GET /api/library
        must stay fast once it is done."""
        case = f"{LIBRARY_SIZE:,} library files"
        base = self.rundir()
        dl = os.path.join(base, "dl")
        t0 = time.monotonic()
        make_library_files(dl, LIBRARY_SIZE)
        log(f"{case}: wrote {LIBRARY_SIZE} files in {time.monotonic() - t0:.1f} s")
        row = self.row(case, "model-manager", None)
        for rep in range(reps):
            # A fresh database each run: the first scan reads every header again.
            svc = Service(self.binary, base, {}, data_dir=os.path.join(base, f"data{rep}"))
            m = {"error": None}
            try:
                m["wall"] = svc.start()
                scan0 = time.monotonic()
                s, body = svc.raw("POST", "/api/library/rescan", {})
                if s != 200:
                    raise BenchError(f"POST /api/library/rescan: {s} {body[:200]!r}")
                m["scan_secs"] = time.monotonic() - scan0
                s, body = svc.raw("GET", "/api/library")
                listed = len(json.loads(body)["files"])
                if listed != LIBRARY_SIZE:
                    raise BenchError(f"{listed} files listed, not {LIBRARY_SIZE}")
                m["body_kib"] = len(body) / 1024
                m["p50_ms"], m["p99_ms"] = svc.latency_ms("/api/library", LIBRARY_REQUESTS)
                m["rss_mib"] = svc.status_kib("VmHWM") / 1024
            except BenchError as e:
                m.update(error=str(e), wall=m.get("wall"))
            finally:
                svc.stop()
            m["ok"] = not m["error"]
            row["runs"].append(m)
            log(f"{case} | run {rep + 1}/{reps}: /healthz after {m.get('wall') or 0:.3f} s, "
                f"first scan done {m.get('scan_secs') or 0:.2f} s later, GET /api/library "
                f"p50 {m.get('p50_ms', 0):.1f} ms p99 {m.get('p99_ms', 0):.1f} ms "
                f"({m.get('body_kib', 0):.0f} KiB), VmHWM {m.get('rss_mib') or 0:.1f} MiB"
                + ("" if m["ok"] else f"  FAILED: {m['error']}"))
        shutil.rmtree(base, ignore_errors=True)
        sync_and_settle()

    # -- the LAN mirror -----------------------------------------------------
    def case_mirror(self, reps):
        """A 1 GiB file of the library, fetched by hf_hub_download (PyPI) from the
        service's /hf, against the same client fetching the same file from nginx
        (through a Hub stand-in that redirects to it, as huggingface.co does to its
        CDN). Both read it from the page cache and write it to the same disk."""
        base = self.rundir()
        svc = Service(self.binary, os.path.join(base, "svc"), {},
                      hub_endpoint=self.ng.hub_url())
        ng_row = self.row(MIRROR_CASE, "nginx (sendfile) → hf_hub_download", 1.0, anchor=True)
        mm_row = self.row(MIRROR_CASE, "model-manager /hf → hf_hub_download", 1.0)
        # The same file to a client that writes nothing: what each server can send.
        ng_raw = self.row(MIRROR_RAW_CASE, "nginx (sendfile) → curl", 1.0, anchor=True,
                          note="server-bound, for information")
        mm_raw = self.row(MIRROR_RAW_CASE, "model-manager /hf → curl", 1.0)
        try:
            svc.start()
            self._mirror_fill(svc)
            for rep in range(max(reps, MIRROR_RUNS_MIN)):
                pair = [(ng_row, self.ng.hub_url(), None),
                        (mm_row, f"http://127.0.0.1:{svc.port}/hf", svc)]
                for row, endpoint, served_by in pair[rep % 2:] + pair[:rep % 2]:
                    m = self._hf_fetch(endpoint, served_by)
                    m["ok"] = not m["error"]
                    row["runs"].append(m)
                    log(f"{MIRROR_CASE} | {row['tool']} | run {rep + 1}: "
                        + (f"{m['wall']:.3f} s ({BIG_SIZE / MiB / m['wall']:.0f} MiB/s)"
                           if m.get("wall") else "-")
                        + ("" if m["ok"] else f"  FAILED: {m['error']}"))
                    sync_and_settle()
                raw = [(ng_raw, self.ng.url("big.bin"), None),
                       (mm_raw, f"http://127.0.0.1:{svc.port}/hf/{MIRROR_REPO}/resolve/main/big.bin", svc)]
                for row, url, served_by in raw[rep % 2:] + raw[:rep % 2]:
                    cpu0 = served_by.cpu_secs() if served_by else None
                    m = timed(["curl", "-sSf", "-o", "/dev/null", url], self.work, "mirror-curl")
                    if served_by:
                        m["cpu"] = served_by.cpu_secs() - cpu0
                        m["rss_mib"] = served_by.status_kib("VmHWM") / 1024
                    else:
                        m["cpu"], m["rss_mib"] = None, None
                    m["ok"] = not m["error"]
                    row["runs"].append(m)
                    log(f"{MIRROR_RAW_CASE} | {row['tool']} | run {rep + 1}: {m['wall']:.3f} s "
                        f"({BIG_SIZE / MiB / m['wall']:.0f} MiB/s)" + ("" if m["ok"] else f"  FAILED: {m['error']}"))
        except BenchError as e:
            for row in (ng_row, mm_row, ng_raw, mm_raw):
                row["runs"].append({"wall": None, "cpu": None, "rss_mib": None,
                                    "error": str(e), "ok": False})
        finally:
            svc.stop()
            shutil.rmtree(base, ignore_errors=True)
            sync_and_settle()

    def _mirror_fill(self, svc):
        """The big file into the service's library, as a Hub download."""
        s, j = svc.api("POST", "/api/downloads", {"hub": {"repo": MIRROR_REPO, "file": "big.bin"}})
        if s != 201:
            raise BenchError(f"POST /api/downloads (hub): {s} {j}")
        path = f"{MIRROR_REPO}/big.bin"
        end = time.monotonic() + 300
        while time.monotonic() < end:
            s, lib = svc.api("GET", "/api/library")
            if s == 200 and any(f["path"] == path and f.get("sha256") for f in lib["files"]):
                warm_cache(svc.dl_dir, [path])
                return
            s, d = svc.api("GET", f"/api/downloads/{j['id']}")
            if d.get("state") in ("failed", "cancelled"):
                raise BenchError(f"the library file's download ended {d['state']}: {d.get('error')}")
            time.sleep(0.2)
        raise BenchError("the library file did not arrive in 300 s")

    def _hf_fetch(self, endpoint, svc):
        """One hf_hub_download into a fresh cache; wall timed inside the client."""
        d = self.rundir()
        env = clean_env()
        env.update(HF_ENDPOINT=endpoint, HF_HOME=os.path.join(d, "home"),
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_XET="1")
        cpu0 = svc.cpu_secs() if svc else None
        try:
            p = subprocess.run([sys.executable, "-c", HF_CLIENT, MIRROR_REPO, os.path.join(d, "cache")],
                               env=env, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                return {"wall": None, "cpu": None, "rss_mib": None,
                        "error": f"hf_hub_download: {p.stderr.strip()[-300:]}"}
            wall, path = p.stdout.split()
            m = {"wall": float(wall), "rss_mib": svc.status_kib("VmHWM") / 1024 if svc else None,
                 "cpu": svc.cpu_secs() - cpu0 if svc else None}
            m["error"] = verify([(path, self.sums["big.bin"])])
            return m
        finally:
            shutil.rmtree(d, ignore_errors=True)

    # -- global speed limit ------------------------------------------------
    def case_speed(self, reps):
        case = "10 MiB/s global limit, 3 downloads"
        row = self.row(case, "model-manager", None,
                       note="PATCH speed_limit_bps = 10485760; 3 x 1 GiB, 4 conns each")
        url = self.ng.url("big.bin")
        for rep in range(reps):
            d = self.rundir()
            svc = Service(self.binary, d, {"max_concurrent": 3, "connections_per_download": 4})
            m = {"error": None}
            try:
                svc.start()
                s, j = svc.api("PATCH", "/api/settings", {"speed_limit_bps": SPEED_LIMIT})
                if s != 200:
                    raise BenchError(f"PATCH /api/settings: {s} {j}")
                cpu0 = svc.cpu_secs()
                t0 = time.monotonic()
                svc.add([{"url": url, "file_name": f"sl{i}.bin"} for i in range(3)])
                samples = []
                active_max = 0
                while True:
                    st = svc.stats()
                    t = time.monotonic() - t0
                    samples.append((t, st["bytes_done_total"]))
                    active_max = max(active_max, st["active"])
                    if t >= 11.0:
                        break
                    time.sleep(0.1)
                m["cpu"] = svc.cpu_secs() - cpu0
                m["rss_mib"] = svc.status_kib("VmHWM") / 1024

                def at(x):  # bytes at time x, linear between samples
                    for (ta, ba), (tb, bb) in zip(samples, samples[1:]):
                        if ta <= x <= tb:
                            return ba + (bb - ba) * (x - ta) / (tb - ta) if tb > ta else bb
                    return samples[-1][1]

                m["rate_0_10"] = at(10.0) / 10.0
                m["rate_1_11"] = (at(11.0) - at(1.0)) / 10.0
                m["bytes"] = samples[-1][1]
                m["wall"] = samples[-1][0]
                m["active_max"] = active_max
            except BenchError as e:
                m["error"] = str(e)
            finally:
                svc.stop()
            m["ok"] = not m["error"]
            row["runs"].append(m)
            log(f"{case} | run {rep + 1}/{reps}: "
                + (f"{m['rate_1_11'] / MiB:.2f} MiB/s over 1-11 s, {m['rate_0_10'] / MiB:.2f} MiB/s over 0-10 s"
                   if m["ok"] else f"FAILED: {m['error']}"))
            shutil.rmtree(d, ignore_errors=True)
            sync_and_settle()


# --------------------------------------------------------------------------
# report


def gguf_header(name, salt):
    """A small GGUF v3 file (no tensors) with a llama header, and `salt` after it so
    that every file has bytes of its own (identical ones would be linked)."""
    def string(v):
        b = v.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", 8, string("llama")), ("general.name", 8, string(name)),
          ("llama.context_length", 4, struct.pack("<I", 4096)),
          ("llama.block_count", 4, struct.pack("<I", 16)),
          ("general.file_type", 4, struct.pack("<I", 15))]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, kind, value in kv:
        out += string(key) + struct.pack("<I", kind) + value
    return out + salt


def make_library_files(root, n):
    for i in range(n):
        d = os.path.join(root, f"owner{i % 50}", f"repo{i % 500}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"model{i:05d}-Q4_K_M.gguf"), "wb") as f:
            f.write(gguf_header(f"Model {i}", os.urandom(32)))


def med(runs, key):
    v = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return statistics.median(v) if v else None


def fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def report(bench, machine):
    rows = bench.rows
    out = []
    out.append("| case | tool | wall s | CPU s/GiB | peak RSS MiB | ratio to best anchor | runs (wall min–max) | notes |")
    out.append("|---|---|---:|---:|---:|---:|---|---|")
    best = {}
    for r in rows:
        if r["anchor"]:
            w = med(r["runs"], "wall")
            if w is not None and (r["case"] not in best or w < best[r["case"]][0]):
                best[r["case"]] = (w, r["tool"])
    summary = {}
    for r in rows:
        runs = r["runs"]
        okruns = [m for m in runs if m.get("ok")]
        wall = med(runs, "wall")
        cpu = med(runs, "cpu")
        rss = med(runs, "rss_mib")
        cpu_gib = cpu / r["gib"] if (cpu is not None and r["gib"]) else None
        ratio = "—"
        notes = [r["note"]] if r["note"] else []
        if r["case"] in best and wall is not None:
            ratio = f"{wall / best[r['case']][0]:.2f}× {best[r['case']][1]}"
        if r["case"].endswith("queued"):
            p50, p99 = med(runs, "p50_ms"), med(runs, "p99_ms")
            ret = [m.get("returned") for m in okruns]
            notes.insert(0, f"wall = start-up to /healthz; list ?limit=100 p50 {fmt(p50)} ms, "
                            f"p99 {fmt(p99)} ms ({ret[0] if ret else '?'} items returned"
                            f"{', limit not honoured' if ret and ret[0] > 100 else ''}, "
                            f"{okruns[0]['body_kib']:.0f} KiB)" if okruns else "failed")
            kib_per, empty_rss = med(runs, "kib_per"), med(runs, "empty_rss_mib")
            if kib_per is not None:
                notes.append(f"{fmt(kib_per)} KiB per queued download over the same service "
                             f"with an empty queue ({fmt(empty_rss, 1)} MiB)")
            r.update(p50=p50, p99=p99, returned=ret[0] if ret else None, kib_per=kib_per)
        if r["case"].endswith("library files"):
            p50, p99 = med(runs, "p50_ms"), med(runs, "p99_ms")
            notes.insert(0, f"wall = start-up to /healthz (the scan runs); first scan "
                            f"{fmt(med(runs, 'scan_secs'))} s; GET /api/library p50 {fmt(p50)} ms, "
                            f"p99 {fmt(p99)} ms ({okruns[0]['body_kib']:.0f} KiB)" if okruns else "failed")
            r.update(p50=p50, p99=p99)
        if r["case"].startswith("10 MiB/s"):
            a, b = med(runs, "rate_1_11"), med(runs, "rate_0_10")
            gib = (med(runs, "bytes") or 0) / GiB
            cpu_gib = cpu / gib if (cpu is not None and gib) else None
            if a is not None:
                ratio = f"{a / SPEED_LIMIT:.3f}× target rate"
                notes.insert(0, f"wall = sampling window; {a / MiB:.2f} MiB/s over 1–11 s, "
                                f"{b / MiB:.2f} MiB/s over 0–10 s, "
                                f"{med(runs, 'active_max'):.0f} active")
            r.update(rate=a, rate0=b)
        first, keep = bench_script.notes(r, SMALL_COUNT)
        notes[:0] = first
        r.update(keep)
        failed = [m for m in runs if not m.get("ok")]
        if failed:
            notes.append(f"{len(failed)}/{len(runs)} runs FAILED: {failed[0]['error']}")
        walls = [m["wall"] for m in okruns if m.get("wall") is not None]
        spread = f"{len(okruns)}/{len(runs)} ({min(walls):.2f}–{max(walls):.2f})" if walls else f"0/{len(runs)}"
        out.append(f"| {r['case']} | {r['tool']} | {fmt(wall, 3 if (wall or 0) < 10 else 2)} | "
                   f"{fmt(cpu_gib)} | {fmt(rss, 1)} | {ratio} | {spread} | {'; '.join(notes)} |")
        summary[(r["case"], r["tool"])] = dict(wall=wall, cpu_gib=cpu_gib, rss=rss,
                                               ok=bool(okruns) and not failed, row=r)
    out.append("")
    bench.acceptance = acceptance(summary)
    out += bench.acceptance
    return "\n".join(out)


def acceptance(S):
    lines = ["Acceptance (medians):", ""]

    def get(case, tool):
        return S.get((case, tool))

    def line(ok, text):
        mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"- **{mark}** {text}")

    def cmp(label, a, b, k, unit="s", key="wall"):
        if not a or not b or a[key] is None or b[key] is None:
            line(None, f"{label}: not measured")
            return
        ratio = a[key] / b[key]
        line(a["ok"] and ratio <= k,
             f"{label}: {a[key]:.3f} {unit} vs {b[key]:.3f} {unit} = {ratio:.2f}× (target ≤ {k}×)")

    c1 = "1 GiB, 1 connection"
    mm, mms = get(c1, "model-manager"), get(c1, "model-manager + sha256")
    curl, curls = get(c1, "curl -o F"), get(c1, "curl -o F && sync F")
    if curl or mm:
        cmp("1 GiB no digest, wall vs `curl -o F && sync F`", mm, curls, 1.0)
        cmp("1 GiB no digest, wall vs plain curl", mm, curl, 1.25)
        cmp("1 GiB no digest, CPU s/GiB vs curl", mm, curl, 1.1, "s/GiB", "cpu_gib")
        if mm and mm["rss"] is not None:
            line(mm["ok"] and mm["rss"] <= 32, f"1 GiB no digest, service peak RSS {mm['rss']:.1f} MiB (target ≤ 32 MiB)")
        cmp("1 GiB with sha256, wall vs plain curl", mms, curl, 1.3)
    dd = get(c1, DD_TOOL)
    if dd or mm:
        cmp("#26.1 1 GiB no digest, wall vs `dd bs=4M oflag=direct` of the same file", mm, dd, 1.15)
        if mm and mm["cpu_gib"] is not None:
            line(mm["ok"] and mm["cpu_gib"] <= 0.5,
                 f"#26.1 1 GiB no digest, service CPU {mm['cpu_gib']:.2f} s per GiB (target ≤ 0.5)")
        else:
            line(None, "#26.1 1 GiB no digest, service CPU: not measured")
    c2 = "256 MiB, 20 MiB/s/conn, 4 conns"
    mm, ar = get(c2, "model-manager"), get(c2, "aria2c -x4 -s4")
    if mm or ar:
        cmp("256 MiB capped, wall vs aria2c -x4 -s4", mm, ar, 1.0)
        if mm and mm["wall"] is not None:
            line(mm["ok"] and mm["wall"] <= 3.5,
                 f"256 MiB capped, wall {mm['wall']:.3f} s (target ≤ 3.5 s), file verified: "
                 f"{'yes' if mm['ok'] else 'NO'}")
    mm, ar = get(STRICT_CASE, "model-manager"), get(STRICT_CASE, "aria2c -x4 -s4")
    if mm or ar:
        cmp("256 MiB under a strict per-connection cap (capproxy.py), wall vs aria2c -x4 -s4",
            mm, ar, 1.0)
    c3 = f"{SMALL_COUNT} x 256 KiB, 8 at a time"
    mm, ar = get(c3, "model-manager"), get(c3, "aria2c -j8")
    if mm or ar:
        cmp(f"{SMALL_COUNT} x 256 KiB via the API, wall vs aria2c -j8", mm, ar, 1.0)
        ars = get(c3, "aria2c -j8 && sync")
        cmp(f"{SMALL_COUNT} x 256 KiB via the API (every file durable when completed), "
            f"wall vs `aria2c -j8 && sync` of its files", mm, ars, 1.0)
        bench_script.acceptance(get, line, c3, SMALL_COUNT)
    q = get(f"{QUEUE_SIZE:,} queued", "model-manager")
    if q:
        r = q["row"]
        line(q["ok"] and q["wall"] is not None and q["wall"] < 1.0,
             f"10,000 queued: start-up {fmt(q['wall'], 3)} s (target < 1 s)")
        ret = r.get("returned")
        line(q["ok"] and r.get("p99") is not None and r["p99"] < 20,
             f"10,000 queued: `GET /api/downloads?limit=100` p99 {fmt(r.get('p99'))} ms, "
             f"p50 {fmt(r.get('p50'))} ms (target p99 < 20 ms)")
        line(None if ret is None else ret <= 100,
             f"10,000 queued: `?limit=100` honoured: {ret} items per response"
             + ("" if ret is None or ret <= 100 else " (the whole list: the p99 above is for that)"))
        line(q["ok"] and q["rss"] is not None and q["rss"] < 64,
             f"10,000 queued: peak RSS {fmt(q['rss'], 1)} MiB (target < 64 MiB)")
        kib = r.get("kib_per")
        line(None if kib is None else kib <= 1.25,
             f"10,000 queued: {fmt(kib)} KiB of peak RSS per queued download "
             f"(target ~1 KiB, counted as met up to 1.25)")
    lib = get(f"{LIBRARY_SIZE:,} library files", "model-manager")
    if lib:
        r = lib["row"]
        line(lib["ok"] and lib["wall"] is not None and lib["wall"] < 1.0,
             f"10,000 library files: /healthz answered {fmt(lib['wall'], 3)} s after start, "
             f"while the first scan ran (target < 1 s)")
        line(lib["ok"] and r.get("p99") is not None and r["p99"] < 50,
             f"10,000 library files: `GET /api/library` p99 {fmt(r.get('p99'))} ms, "
             f"p50 {fmt(r.get('p50'))} ms after the first scan (target p99 < 50 ms)")
    ng, mm = (get(MIRROR_CASE, "nginx (sendfile) → hf_hub_download"),
              get(MIRROR_CASE, "model-manager /hf → hf_hub_download"))
    if ng or mm:
        if ng and mm and ng["wall"] and mm["wall"]:
            rate = ng["wall"] / mm["wall"]
            line(mm["ok"] and ng["ok"] and rate >= 0.9,
                 f"{MIRROR_CASE}: {BIG_SIZE / MiB / mm['wall']:.0f} MiB/s vs nginx "
                 f"{BIG_SIZE / MiB / ng['wall']:.0f} MiB/s = {rate:.2f}× (target ≥ 0.9×)")
        else:
            line(None, f"{MIRROR_CASE}: not measured")
    ng, mm = (get(MIRROR_RAW_CASE, "nginx (sendfile) → curl"),
              get(MIRROR_RAW_CASE, "model-manager /hf → curl"))
    if ng and mm and ng["wall"] and mm["wall"]:
        line(None, f"{MIRROR_RAW_CASE} (what the servers can send, for information): "
                   f"{BIG_SIZE / MiB / mm['wall']:.0f} MiB/s vs nginx {BIG_SIZE / MiB / ng['wall']:.0f} MiB/s "
                   f"= {ng['wall'] / mm['wall']:.2f}×")
    s = get("10 MiB/s global limit, 3 downloads", "model-manager")
    if s:
        r = s["row"]
        if r.get("rate") is None:
            line(None, "speed limit: not measured")
        else:
            dev = r["rate"] / SPEED_LIMIT - 1
            line(s["ok"] and abs(dev) <= 0.05,
                 f"10 MiB/s global over 3 downloads: {r['rate'] / MiB:.2f} MiB/s over 10 s "
                 f"({dev * 100:+.1f} %, target ±5 %; {r['rate0'] / MiB:.2f} MiB/s over the first 10 s)")
    return lines


def loadavg():
    """The run's neighbours: on a shared machine the disk's fsync latency, which sets
    aria2c's pace (a few fsyncs per file, one at a time), follows their load."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_info(workdir, binary):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = sh("free -h | awk '/^Mem:/ {print $2}'")
    fs = sh(f"df -hT {workdir} | awk 'NR==2 {{print $1\" \"$2\", \"$3\" total\"}}'")
    rev = sh(f"git -C {REPO} rev-parse --short HEAD")
    # HEAD moves with commits that touch only scripts/ or docs: name the build by src too
    src_rev = sh(f"git -C {REPO} log -1 --format=%h -- src Cargo.toml Cargo.lock")
    dirty = sh(f"git -C {REPO} status --porcelain -- src Cargo.toml Cargo.lock | wc -l")
    built = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.path.getmtime(binary)))
    src_time = sh(f"git -C {REPO} log -1 --format=%ct -- src Cargo.toml Cargo.lock")
    if src_time.isdigit() and int(src_time) > os.path.getmtime(binary):
        # --no-build on a binary copied or linked from elsewhere: say it may be older
        built += (f", BEFORE {src_rev} was committed "
                  f"({time.strftime('%H:%M:%S UTC', time.gmtime(int(src_time)))}): "
                  f"it may be of an older tree")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs (nproc {sh('nproc')})",
        "mem": f"{mem} RAM",
        "kernel": f"Linux {platform.release()}",
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "disk": f"downloads written to {workdir} on {fs}",
        "tools": "; ".join([sh("nginx -v 2>&1"), sh("curl --version | head -1 | cut -d' ' -f1,2"),
                            sh("aria2c --version | head -1"), "Python " + platform.python_version()]),
        "load": f"{loadavg()} at the start",
        "build": f"model-manager at {rev} (src/ and Cargo.* last changed in {src_rev})" + (f" + {dirty} uncommitted file(s) in src/ and Cargo.*" if dirty not in ("", "0") else "")
                 + f" when the run started; release binary built {built}",
    }


def pick_workdir():
    """Downloads go to the disk /work is on (not a tmpfs /tmp)."""
    explicit = os.environ.get("MM_BENCH_WORKDIR")
    if explicit:
        os.makedirs(explicit, exist_ok=True)
        return tempfile.mkdtemp(prefix="mm-bench-run.", dir=explicit)
    fstype = {}
    with open("/proc/mounts") as f:
        for line in f:
            p = line.split()
            fstype[p[1]] = p[2]

    def fs_of(path):
        path = os.path.realpath(path)
        while path not in fstype:
            path = os.path.dirname(path)
        return fstype[path]

    tmp = tempfile.gettempdir()
    if fs_of(tmp) not in ("tmpfs", "ramfs") and os.stat(tmp).st_dev == os.stat(REPO).st_dev:
        base = tmp
    else:
        base = os.path.join(REPO, "target")
    return tempfile.mkdtemp(prefix="mm-bench-run.", dir=base)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run per case, no curl in the capped case")
    ap.add_argument("--reps", type=int, help="runs per case (default 3; 5 for the 1 GiB case, 2 for the speed-limit case)")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--binary", default=os.path.join(REPO, "target/release/model-manager"))
    ap.add_argument("--files", default=os.environ.get("MM_BENCH_FILES", "/tmp/mm-bench-files"))
    ap.add_argument("--results", default=os.path.join(REPO, "target/bench"),
                    help="where the markdown and JSON of the run are kept")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    unknown = cases - set(CASES)
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"no binary at {args.binary}: run cargo build --release")
    reps = args.reps or (1 if args.quick else 3)
    reps_slow = args.reps or (1 if args.quick else 2)
    # the 1 GiB case rides on disk writeback and is the noisiest: more runs
    reps_big = args.reps or (1 if args.quick else 5)

    def on_signal(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    # bench.sh starts this in the background, where a non-interactive shell leaves
    # SIGINT ignored: a Ctrl-C then stopped only the service under test (it handles
    # SIGINT), and the run went on to write a table of failed runs.
    signal.signal(signal.SIGINT, on_signal)

    workdir = pick_workdir()
    log(f"work dir {workdir}")
    # read the revision now, next to the build: src/ may change while the bench runs
    machine = machine_info(workdir, args.binary)
    log(f"bench of {machine['build']}")
    ng = None
    try:
        sums = ensure_files(args.files)
        warm_cache(args.files, sorted(sums))
        sync_and_settle()  # no writeback of freshly generated files during the first run
        ng = Nginx(args.files, workdir, sums.get("big.bin"))
        ng.start()
        b = Bench(args, args.files, sums, ng, workdir)
        t0 = time.monotonic()
        if "big" in cases:
            b.case_big(reps_big)
        if "capped" in cases:
            b.case_capped(reps, with_curl=not args.quick)
        if "strict" in cases:
            b.case_capped(reps, with_curl=False, strict=True)
        if "small" in cases:
            b.case_small(reps)
        if "list" in cases:
            b.case_list(reps)
        if "queue" in cases:
            b.case_queue(reps)
        if "library" in cases:
            b.case_library(reps)
        if "mirror" in cases:
            b.case_mirror(reps)
        if "speed" in cases:
            b.case_speed(reps_slow)
        log(f"all cases in {time.monotonic() - t0:.0f} s")
        machine["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        machine["load"] += f", {loadavg()} at the end"
        table = report(b, machine)
        given = " ".join(sys.argv[1:])
        head = [f"Run of {machine['date']} (`scripts/bench.sh{' ' + given if given else ''}`), "
                f"medians of {reps} run(s) per case ({reps_big} for the 1 GiB case, {reps_slow} for the speed-limit case).",
                "", f"- Machine: {machine['cpu']}, {machine['mem']}, {machine['kernel']}, {machine['os']}",
                f"- Disk: {machine['disk']}", f"- Tools: {machine['tools']}",
                f"- Load average (1, 5, 15 min): {machine['load']}",
                f"- Build: {machine['build']}", "", ""]
        text = "\n".join(head) + table + "\n"
        print(text)
        os.makedirs(args.results, exist_ok=True)
        with open(os.path.join(args.results, "last-run.md"), "w") as f:
            f.write(text)
        with open(os.path.join(args.results, "last-run.json"), "w") as f:
            json.dump({"machine": machine, "rows": b.rows, "acceptance": b.acceptance},
                      f, indent=1, default=str)
        log(f"kept in {args.results}/last-run.md and last-run.json")
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        stop_all()
        sys.exit(f"interrupted ({e})")
    except BenchError as e:
        stop_all()
        sys.exit(f"bench: {e}")
