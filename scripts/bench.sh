#!/usr/bin/env bash
# The performance benchmark: nginx on loopback serving generated files; curl,
# aria2c and model-manager on the same cases in the same run (and hf_hub_download
# from nginx and from the service's LAN mirror); a markdown table of
# wall time, CPU s/GiB, peak RSS and ratio to the best anchor, then the pass/fail
# of every acceptance line. See BENCHMARKS.md.
#
#   scripts/bench.sh            # every case, 3 runs (1 GiB: 5, speed limit: 2), medians
#   scripts/bench.sh --quick    # one run per case
#   scripts/bench.sh --cases big,capped --reps 5   # a subset; the Xet cases only if it names xet
#   scripts/bench.sh --cases big,small,list        # issue #26's lines (dd anchor, script variant, list)
#   scripts/bench.sh --no-build # use target/release/model-manager as it is
#   scripts/bench.sh --xet-only # only the Xet cases (scripts/bench_xet.py)
#   scripts/bench.sh --no-xet   # without them
#
# Installs Debian's nginx-light, aria2 and time when missing (root or sudo).
# Served files live in /tmp/mm-bench-files (MM_BENCH_FILES), generated once and
# reused; downloads go to a temp dir on the same disk as the repository
# (MM_BENCH_WORKDIR to choose), removed at the end. The last table is also kept
# in target/bench/last-run.md.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
xet=1
main_cases=1
args=()
# `--cases LIST` picks from bench_lib.py's cases and `xet` (scripts/bench_xet.py): the
# Xet cases run with a list only when it names them, and bench_lib.py gets the rest.
cases_of() {
  local list=",$1,"
  case "$list" in *,xet,*) ;; *) xet=0 ;; esac
  list="${list//,xet,/,}"; list="${list#,}"; list="${list%,}"
  if [ -z "$list" ]; then main_cases=0; else args+=(--cases "$list"); fi
}
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --no-xet) xet=0 ;;
    --xet-only) main_cases=0 ;;
    --cases) [ $# -ge 2 ] || { echo "bench: --cases needs a list" >&2; exit 2; }; cases_of "$2"; shift ;;
    --cases=*) cases_of "${1#--cases=}" ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; python3 scripts/bench_lib.py --help; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v aria2c >/dev/null 2>&1 || need_apt+=(aria2)
[ -x /usr/bin/time ] || need_apt+=(time)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian packages) for the benchmark" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  # policy-rc.d 101: the package must not start a system nginx on port 80 for us
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    cleanup_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  if [ "${cleanup_policy:-0}" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
export PATH="$PATH:/usr/sbin:/sbin"
# The mirror case's client: huggingface_hub from PyPI, as users run it.
python3 -c 'import huggingface_hub' >/dev/null 2>&1 || {
  echo "installing huggingface_hub (PyPI) for the mirror case" >&2
  python3 -m pip install --quiet --disable-pip-version-check huggingface_hub
}

if [ "$build" = 1 ]; then
  echo "cargo build --release" >&2
  if ! cargo build --release --quiet; then
    echo "bench: cargo build --release failed (src/ in the middle of an edit?); retry, or --no-build to bench the last binary" >&2
    exit 1
  fi
fi

# Every long-lived child (nginx, the service) is listed here; whatever way this
# script ends, they are stopped (they also get SIGTERM if the bench process dies).
MM_BENCH_PIDFILE="$(mktemp /tmp/mm-bench-pids.XXXXXX)"
export MM_BENCH_PIDFILE
bench_pid=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [ -s "$MM_BENCH_PIDFILE" ]; then
    while read -r pid; do
      # only if that pid is still one of ours (not reused by something else)
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qE '^(nginx|[^ ]*model-manager)[: ]'; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done <"$MM_BENCH_PIDFILE"
  fi
  rm -f "$MM_BENCH_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$main_cases" = 1 ]; then
  python3 scripts/bench_lib.py "${args[@]+"${args[@]}"}" &
  bench_pid=$!
  wait "$bench_pid"
fi

# The Xet cases (#25): HuggingFace's CAS and hf_xet, against the same release binary.
if [ "$xet" = 1 ]; then
  XET=1.8.0
  local_cas_server --version 2>/dev/null | grep -qx "local_cas_server $XET" || {
    echo "installing local_cas_server $XET (cargo, xet-client --features simulation) for the Xet cases" >&2
    cargo install --quiet xet-client --version "$XET" --features simulation --bin local_cas_server
  }
  python3 -c "import hf_xet, importlib.metadata as m; assert m.version('hf_xet') == '$XET'" >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check "hf_xet==$XET"
  reps=3
  for a in "${args[@]+"${args[@]}"}"; do [ "$a" = --quick ] && reps=1; done
  python3 scripts/bench_xet.py --binary target/release/model-manager --reps "$reps" \
    ${MM_BENCH_WORKDIR:+--workdir "$MM_BENCH_WORKDIR"} &
  bench_pid=$!
  wait "$bench_pid"
fi
