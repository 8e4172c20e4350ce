#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need
# (Debian's Chromium and playwright-core for the browser tests), then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The real aria2c: tests/aria2_vs_aria2c.rs asks it what it asks us.
command -v aria2c >/dev/null 2>&1 || need_apt+=(aria2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian packages) for the browser and aria2 tests"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing playwright-core (npm) for the browser tests"
  (cd tests/browser && npm install --no-audit --no-fund --silent)
fi
# The real clients our compatibility claims are tested with (PyPI): llama.cpp's gguf
# package (writes and reads test GGUF files), huggingface_hub (reads the HF cache),
# aria2p (an aria2 JSON-RPC library and CLI; its add/show/pause/resume/remove need no
# [tui] extra), xllamacpp (llama.cpp's server and its `-hf` download code, for
# tests/it/llamacpp.rs).
# xllamacpp is pinned: tests/it/llama/llama_hf.py reaches llama.cpp's `-hf` code by a
# symbol and an enum value of this build.
XLLAMACPP=2026.10.11549
python3 -c "import gguf, huggingface_hub, aria2p, importlib.metadata as m; assert m.version('xllamacpp') == '$XLLAMACPP'" >/dev/null 2>&1 && command -v aria2p >/dev/null 2>&1 || {
  echo "installing gguf, huggingface_hub, aria2p and xllamacpp (PyPI) for the library, aria2 and llama.cpp tests"
  python3 -m pip install --quiet --disable-pip-version-check gguf huggingface_hub aria2p "xllamacpp==$XLLAMACPP"
}
# The Xet tests' storage (tests/it/common/xet.rs): HuggingFace's own CAS, the simulation
# server of the xet-client crate (about 5 minutes to build, once), and PyPI's hf_xet, which
# uploads the tests' files into it. Both pinned to one release: the tests compare what we
# fetch with what this release's chunker and client do.
XET=1.8.0
local_cas_server --version 2>/dev/null | grep -qx "local_cas_server $XET" || {
  echo "installing local_cas_server $XET (cargo, xet-client --features simulation) for the Xet tests"
  cargo install --quiet xet-client --version "$XET" --features simulation --bin local_cas_server
}
python3 -c "import hf_xet, importlib.metadata as m; assert m.version('hf_xet') == '$XET'" >/dev/null 2>&1 || {
  echo "installing hf_xet $XET (PyPI) for the Xet tests"
  python3 -m pip install --quiet --disable-pip-version-check "hf_xet==$XET"
}

# No function of src/ over 80 lines (clippy.toml; test code may opt out). Only on a
# full run: a developer running one test does not wait for it.
lint=0
if [ $# -eq 0 ]; then
  echo "cargo clippy --all-targets -- -D clippy::too_many_lines"
  cargo clippy --quiet --all-targets -- -D clippy::too_many_lines || lint=1
fi

# One build of the tests; each test binary runs its tests in parallel.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The API fuzzed from its own OpenAPI description (schemathesis, from PyPI), against
# the binary the tests just built. Skipped when only some tests were asked for.
fuzz=0
if [ "$status" -eq 0 ] && [ $# -eq 0 ]; then
  bash scripts/fuzz_api.sh "${CARGO_TARGET_DIR:-target}/debug/model-manager" 25 || fuzz=1
fi

# One closing line over every test binary.
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s+=$2} END {print s+0}')
# A test binary that did not build or run failed too, though it counted no test.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo
echo "tests: $passed passed, $((failed + fuzz + lint)) failed"
[ "$status" -eq 0 ] && [ "$fuzz" -eq 0 ] && [ "$lint" -eq 0 ]
