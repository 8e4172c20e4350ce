#!/usr/bin/env python3
"""Runs a command in a pseudo-terminal (python's stdlib pty), records what it draws with
the time each piece arrived, and exits with the command's exit status.

usage: pty_capture.py OUT.jsonl CMD ARGS...
OUT.jsonl gets one {"t": seconds since start, "data": text} per read.
"""
import fcntl
import json
import os
import pty
import select
import struct
import sys
import termios
import time

out_path, cmd = sys.argv[1], sys.argv[2:]
start = time.monotonic()
pid, fd = pty.fork()
if pid == 0:
    # The child's stdin/stdout/stderr are the pty: give it a size before it asks.
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    os.environ["TERM"] = "xterm-256color"
    os.execvp(cmd[0], cmd)

chunks = []
status = None
while True:
    ready, _, _ = select.select([fd], [], [], 0.05)
    if not ready:
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
        continue
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        break
    if not data:
        break
    chunks.append({"t": time.monotonic() - start, "data": data.decode("utf-8", "replace")})

if status is None:
    _, status = os.waitpid(pid, 0)
with open(out_path, "w") as out:
    for c in chunks:
        out.write(json.dumps(c) + "\n")
sys.exit(os.waitstatus_to_exitcode(status))
