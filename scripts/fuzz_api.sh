#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI description with schemathesis: no 5xx, and
# every response (errors included) matches the documented schema. The service runs on
# loopback with downloads limited to 127.0.0.1 and a stub Hub, so that nothing the
# fuzzer invents ever leaves the machine. Usage: scripts/fuzz_api.sh [BINARY] [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/model-manager}
cases=${2:-25}
command -v schemathesis >/dev/null 2>&1 || python3 -m pip install -q schemathesis
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); hub_port=$(free_port)
cat > "$work/config.toml" <<TOML
[server]
bind = "127.0.0.1:$port"
[storage]
data_dir = "$work/data"
download_dir = "$work/downloads"
[downloads]
allowed_hosts = ["127.0.0.1"]
retry_base_delay_ms = 100
[hub]
endpoint = "http://127.0.0.1:$hub_port"
TOML
python3 scripts/stub_hub.py "$hub_port" & hub_pid=$!
env -u HF_ENDPOINT -u HF_TOKEN "$bin" --config "$work/config.toml" > "$work/service.log" 2>&1 & svc_pid=$!
trap 'kill $svc_pid $hub_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { echo "the service did not start:"; cat "$work/service.log"; exit 1; }
set +e
schemathesis run "http://127.0.0.1:$port/api/openapi.json" -n "$cases" --seed 20261125 \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-failures 20 > "$work/schemathesis.out" 2>&1
status=$?
set -e
tail -n 25 "$work/schemathesis.out"
generated=$(grep -Eo '[0-9]+ generated' "$work/schemathesis.out" | head -1)
echo "schemathesis: ${generated:-? generated} test cases, exit status $status"
if ! kill -0 $svc_pid 2>/dev/null; then echo "the service died during the fuzz run"; tail -20 "$work/service.log"; exit 1; fi
exit $status
