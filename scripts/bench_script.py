"""What a script sees of the service (issue #26), for scripts/bench_lib.py.

- `script_run`: the small-files case as aria2p or a `requests` loop drives it: one
  `POST /api/downloads` per URL, one after the other, on ONE keep-alive connection
  (Python's http.client, which sets TCP_NODELAY and sends headers and body in one
  write), then `GET /api/downloads` on that same connection, the whole list read and
  parsed, with a `sleep(0.05)` after each answer, until every download is completed.
- `list_run`: a service holding 1,000 downloads (one batch POST, all paused), then
  200 x `GET /api/downloads` (the full list, body read whole) on one keep-alive
  connection, p50/p99; and, for information, 50 more on a new connection each (what
  curl sees).
- `notes` and `acceptance`: the table's notes and the acceptance lines of these rows.

Plain Python 3 standard library. The service itself (spawn, port, data dir, stop) is
bench_lib's `Service`; these functions get it started and only talk HTTP to it.
"""

import http.client
import json
import math
import os
import time

SCRIPT_TOOL = "model-manager, one POST per URL + polling"
SCRIPT_NOTE = ("one `POST /api/downloads` per URL, in sequence, on one keep-alive "
               "http.client connection, then `GET /api/downloads` on it with "
               "sleep(0.05) after each answer until all are completed; wall = first "
               "POST to the end of that answer")
LIST_CASE = "1,000 downloads, keep-alive list"
LIST_TOOL = "model-manager, GET /api/downloads"
LIST_COUNT = 1000
LIST_REQUESTS = 200
LIST_FRESH_REQUESTS = 50
POLL_SLEEP = 0.05
BODY_CAP = 64 << 20   # no list answer here comes near it; a runaway one stops the run


class ScriptError(Exception):
    pass


def fsync_probe(workdir, n=40):
    """Medians in ms of (a 4 KiB write + fsync of a new file, a 200-byte append +
    fdatasync to one file) in `workdir`. The first is the disk's latency for durable
    small files at that moment: it sets aria2c's pace in the small-files case (about 3
    fsyncs per file, one at a time). The second is about the least a durable answer
    (a journal append) can wait for: a floor for #26.3's single POSTs."""
    path = os.path.join(workdir, "fsync-probe")
    new, app = [], []
    try:
        for i in range(n):
            t = time.monotonic()
            fd = os.open(f"{path}.{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
            new.append(time.monotonic() - t)
        fd = os.open(f"{path}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(n):
                t = time.monotonic()
                os.write(fd, b"x" * 200)
                os.fdatasync(fd)
                app.append(time.monotonic() - t)
        finally:
            os.close(fd)
    finally:
        for name in [f"{path}.{i}" for i in range(n)] + [f"{path}.log"]:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
    return sorted(new)[n // 2] * 1000, sorted(app)[n // 2] * 1000


class KeepAlive:
    """One HTTP/1.1 connection that is never silently reopened: http.client would
    reconnect on its own when the server closes, and the measurement would then be of
    new connections, not of a keep-alive one."""

    def __init__(self, port, timeout=60):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.connect()
        self.conn.auto_open = 0
        self.requests = 0

    def request(self, method, path, body=None):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            payload = r.read(BODY_CAP + 1)
        except (http.client.HTTPException, OSError) as e:
            raise ScriptError(f"{method} {path} on the keep-alive connection after "
                              f"{self.requests} requests: {type(e).__name__} {e}") from e
        if len(payload) > BODY_CAP:
            raise ScriptError(f"{method} {path}: answer over {BODY_CAP >> 20} MiB")
        if r.will_close:
            # The next request would fail with NotConnected: say why here.
            raise ScriptError(f"{method} {path}: the service closes the keep-alive "
                              f"connection after {self.requests + 1} requests")
        self.requests += 1
        return r.status, payload

    def close(self):
        self.conn.close()


def _downloads(payload, what):
    """The `downloads` of a list answer; anything else is the run's error, not a crash."""
    try:
        j = json.loads(payload)
    except ValueError as e:
        raise ScriptError(f"{what}: not JSON ({e}): {payload[:200]!r}") from e
    ds = j.get("downloads") if isinstance(j, dict) else None
    if not isinstance(ds, list) or not all(isinstance(d, dict) for d in ds):
        raise ScriptError(f"{what}: no list of downloads in {payload[:200]!r}")
    return ds


def script_run(svc, items, timeout=120):
    """Adds `items` one POST each, then polls the list; returns the measurement
    (wall, cpu, post_secs, polls, rss_mib, dl_dir). `svc` is a started Service."""
    c = KeepAlive(svc.port)
    try:
        cpu0 = svc.cpu_secs()
        t0 = time.monotonic()
        for it in items:
            s, payload = c.request("POST", "/api/downloads", it)
            if s != 201:
                raise ScriptError(f"POST /api/downloads: {s} {payload[:300]!r}")
        post_secs = time.monotonic() - t0
        polls = 0
        while True:
            s, payload = c.request("GET", "/api/downloads")
            polls += 1
            if s != 200:
                raise ScriptError(f"GET /api/downloads: {s} {payload[:300]!r}")
            downloads = _downloads(payload, "GET /api/downloads")
            states = [d.get("state") for d in downloads]
            done = states.count("completed")
            ended = [d for d in downloads if d.get("state") in ("failed", "cancelled")]
            if done == len(items) or ended:
                break
            if time.monotonic() - t0 > timeout:
                raise ScriptError(f"not all completed after {timeout} s: {done}/{len(items)}")
            time.sleep(POLL_SLEEP)
        wall = time.monotonic() - t0
        cpu = svc.cpu_secs() - cpu0
        err = None
        if len(downloads) != len(items):
            err = f"{len(downloads)} downloads listed, {len(items)} added"
        elif ended:
            err = (f"{len(ended)} ended {ended[0].get('state')}: "
                   + json.dumps([d.get("error") for d in ended[:2]]))
        return {"wall": wall, "cpu": cpu, "post_secs": post_secs, "polls": polls,
                "requests": c.requests, "rss_mib": svc.status_kib("VmHWM") / 1024,
                "error": err, "dl_dir": svc.dl_dir}
    finally:
        c.close()


def _percentiles(lat):
    lat = sorted(lat)
    return lat[len(lat) // 2] * 1000, lat[math.ceil(0.99 * len(lat)) - 1] * 1000


def list_run(svc, url_of):
    """Fills `svc` with LIST_COUNT paused downloads (one batch POST), then times the
    full list on one keep-alive connection and on new connections."""
    items = [{"url": url_of(i), "file_name": f"l{i:04d}.bin", "start_paused": True}
             for i in range(LIST_COUNT)]
    c = KeepAlive(svc.port)
    try:
        t = time.monotonic()
        s, payload = c.request("POST", "/api/downloads", {"downloads": items})
        add_secs = time.monotonic() - t
        if s != 201:
            raise ScriptError(f"POST /api/downloads (batch of {LIST_COUNT}): {s} {payload[:300]!r}")
        cpu0 = svc.cpu_secs()
        lat, size = [], None
        t0 = time.monotonic()
        for _ in range(LIST_REQUESTS):
            t = time.monotonic()
            s, payload = c.request("GET", "/api/downloads")
            lat.append(time.monotonic() - t)
            if s != 200:
                raise ScriptError(f"GET /api/downloads: {s} {payload[:300]!r}")
            if size != len(payload):
                # parsed when the size changes (the first time at least), outside the timing
                n = len(_downloads(payload, "GET /api/downloads"))
                if n != LIST_COUNT:
                    raise ScriptError(f"GET /api/downloads listed {n}, not {LIST_COUNT}")
                size = len(payload)
        wall = time.monotonic() - t0
        cpu = svc.cpu_secs() - cpu0
    finally:
        c.close()
    fresh = []
    for _ in range(LIST_FRESH_REQUESTS):
        t = time.monotonic()
        n = KeepAlive(svc.port)
        try:
            s, payload = n.request("GET", "/api/downloads")
        finally:
            n.close()
        fresh.append(time.monotonic() - t)
        if s != 200 or len(payload) != size:
            raise ScriptError(f"GET /api/downloads on a new connection: {s}, {len(payload)} bytes")
    p50, p99 = _percentiles(lat)
    f50, f99 = _percentiles(fresh)
    return {"wall": wall, "cpu": cpu, "rss_mib": svc.status_kib("VmHWM") / 1024,
            "p50_ms": p50, "p99_ms": p99, "max_ms": max(lat) * 1000,
            "fresh_p50_ms": f50, "fresh_p99_ms": f99, "body_kib": size / 1024,
            "add_secs": add_secs, "cpu_ms_per_request": cpu * 1000 / LIST_REQUESTS,
            "error": None}


# --------------------------------------------------------------------------
# report


def _med(runs, key):
    v = sorted(r[key] for r in runs if r.get("ok") and r.get(key) is not None)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def _fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def notes(row, count):
    """(notes to put first, numbers to keep on the row) for the rows of this module;
    `count` is the number of files of the small case."""
    runs = row["runs"]
    if row["tool"] == SCRIPT_TOOL:
        post, cpu = _med(runs, "post_secs"), _med(runs, "cpu")
        polls = _med(runs, "polls")
        keep = {"post_ms_each": None if post is None else post * 1000 / count,
                "cpu_ms_per_file": None if cpu is None else cpu * 1000 / count,
                "post_secs": post}
        return ([f"POST phase {_fmt(post, 3)} s = {_fmt(keep['post_ms_each'], 3)} ms per POST; "
                 f"service CPU {_fmt(keep['cpu_ms_per_file'], 2)} ms per file; "
                 f"{_fmt(polls, 0)} polls"], keep)
    if row["case"] == LIST_CASE:
        keep = {k: _med(runs, k) for k in ("p50_ms", "p99_ms", "max_ms", "fresh_p50_ms",
                                           "fresh_p99_ms", "body_kib", "cpu_ms_per_request")}
        return ([f"wall = {LIST_REQUESTS} GETs of the full list on one keep-alive connection: "
                 f"p50 {_fmt(keep['p50_ms'])} ms, p99 {_fmt(keep['p99_ms'])} ms, max "
                 f"{_fmt(keep['max_ms'])} ms ({_fmt(keep['body_kib'], 0)} KiB, service CPU "
                 f"{_fmt(keep['cpu_ms_per_request'])} ms per request); a new connection per "
                 f"request ({LIST_FRESH_REQUESTS}): p50 {_fmt(keep['fresh_p50_ms'])} ms, p99 "
                 f"{_fmt(keep['fresh_p99_ms'])} ms"], keep)
    return [], {}


def _unsteady(summary, what):
    """A word when a row's runs spread more than 1.5×: aria2c makes about 3 fsyncs per
    file, one at a time, so its wall follows the disk's fsync latency, which the
    machine's other writers move by several times from one second to the next."""
    walls = [m["wall"] for m in summary["row"]["runs"] if m.get("ok") and m.get("wall")]
    if len(walls) > 1 and max(walls) > 1.5 * min(walls):
        return (f"; {what} unsteady ({min(walls):.2f}–{max(walls):.2f} s over "
                f"{len(walls)} runs): compare on a quiet machine or with more --reps")
    return ""


def acceptance(get, line, small_case, count):
    """Issue #26's lines 2-4; `get(case, tool)` is the report's summary of a row,
    `line(ok, text)` prints one."""
    sc, ars = get(small_case, SCRIPT_TOOL), get(small_case, "aria2c -j8 && sync")
    if sc or ars:
        if sc and ars and sc["wall"] is not None and ars["wall"] is not None:
            ratio = sc["wall"] / ars["wall"]
            line(sc["ok"] and ars["ok"] and ratio <= 1.0,
                 f"#26.2 {count} x 256 KiB added one POST at a time and polled, wall vs "
                 f"`aria2c -j8 && sync`: {sc['wall']:.3f} s vs {ars['wall']:.3f} s = "
                 f"{ratio:.2f}× (target ≤ 1.0×)" + _unsteady(ars, "the anchor")
                 + _unsteady(sc, "the script variant"))
        else:
            line(None, f"#26.2 {count} x 256 KiB one POST at a time, wall: not measured")
        probe = (ars or {}).get("row", {}).get("fsync_ms")
        if probe:
            (n0, a0), (n1, a1) = probe
            line(None, f"the disk, before and after the case (medians of 40): a new 4 KiB file "
                       f"+ fsync {n0:.2f} / {n1:.2f} ms (aria2c's wall follows it); a 200-byte "
                       f"append + fdatasync {a0:.2f} / {a1:.2f} ms (a floor for a durable answer)")
        r = (sc or {}).get("row", {})
        cpu, post = r.get("cpu_ms_per_file"), r.get("post_ms_each")
        line(None if cpu is None else sc["ok"] and cpu <= 0.7,
             f"#26.2 {count} x 256 KiB one POST at a time, service CPU {_fmt(cpu, 3)} ms "
             f"per file (target ≤ 0.7 ms)")
        line(None if post is None else sc["ok"] and post <= 0.25,
             f"#26.3 {count} single POSTs: {_fmt(post, 3)} ms each on average "
             f"({_fmt(r.get('post_secs'), 3)} s in all; target ≤ 0.25 ms)")
    ls = get(LIST_CASE, LIST_TOOL)
    if ls:
        r = ls["row"]
        p99 = r.get("p99_ms")
        line(None if p99 is None else ls["ok"] and p99 <= 5.0,
             f"#26.4 keep-alive `GET /api/downloads` of {LIST_COUNT:,} entries: p99 "
             f"{_fmt(p99)} ms, p50 {_fmt(r.get('p50_ms'))} ms (target p99 ≤ 5 ms)")
