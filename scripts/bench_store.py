#!/usr/bin/env python3
"""The database's cost: N single adds (each answered after its flush), one batch add
of M, then a clean stop and the time until a restart answers /healthz.

    python3 scripts/bench_store.py BINARY [N] [M] [RUNS]

Prints one line per run: adds/s of the single adds, the batch's time, the restart's
time, and the size of data_dir's files."""
import http.client, json, os, signal, socket, subprocess, sys, tempfile, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_healthy(port, proc):
    t = time.monotonic()
    while True:
        if proc.poll() is not None:
            sys.exit(f"exited: {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return time.monotonic() - t
        except OSError:
            pass
        time.sleep(0.005)

def start(binary, port, d):
    return subprocess.Popen([binary, "--bind", f"127.0.0.1:{port}", "--data-dir", f"{d}/data",
                             "--download-dir", f"{d}/dl"], stdout=subprocess.DEVNULL,
                            env=dict(os.environ, RUST_LOG="warn"))

def du(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)

def run(binary, n, m):
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        p = start(binary, port, d)
        wait_healthy(port, p)
        c = http.client.HTTPConnection("127.0.0.1", port)
        h = {"content-type": "application/json"}
        t = time.monotonic()
        for i in range(n):
            c.request("POST", "/api/downloads", json.dumps(
                {"url": f"http://127.0.0.1:9/s{i}.bin", "start_paused": True}), h)
            r = c.getresponse(); r.read(); assert r.status == 201
        single = time.monotonic() - t
        t = time.monotonic()
        c.request("POST", "/api/downloads", json.dumps({"downloads": [
            {"url": f"http://127.0.0.1:9/b{i}.bin", "start_paused": True} for i in range(m)]}), h)
        r = c.getresponse(); r.read(); assert r.status == 201
        batch = time.monotonic() - t
        p.send_signal(signal.SIGTERM); p.wait()
        p = start(binary, port, d)
        restart = wait_healthy(port, p)
        p.send_signal(signal.SIGTERM); p.wait()
        print(f"{n} single adds: {n / single:.0f}/s; batch of {m}: {batch:.2f} s; "
              f"restart with {n + m}: {restart:.2f} s; data_dir {du(d + '/data') / 2**20:.1f} MiB",
              flush=True)

if __name__ == "__main__":
    binary = sys.argv[1]
    n, m, runs = (int(a) for a in (sys.argv[2:] + ["2000", "10000", "3"])[:3])
    for _ in range(runs):
        run(binary, n, m)
