#!/usr/bin/env python3
"""A tiny stand-in for the HuggingFace Hub on loopback, for the API fuzz run: the
service under test must never reach out of the machine, and a Hub that answers keeps
the fuzzer testing our handlers rather than a network error. Usage: stub_hub.py PORT"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hub(BaseHTTPRequestHandler):
    def _send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/api/models":
            self._send(200, [{"id": "stub/model-GGUF", "downloads": 1, "likes": 0, "tags": ["gguf"], "gated": False}])
        elif path == "/api/models/stub/model-GGUF/tree/main":
            self._send(200, [{"type": "file", "path": "m-Q4_K_M.gguf", "size": 4, "oid": "0" * 40,
                              "lfs": {"oid": "0" * 64, "size": 4, "pointerSize": 130}}])
        else:
            self._send(404, {"error": "Repository not found"}, [("X-Error-Code", "RepoNotFound")])

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hub).serve_forever()
