#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (idempotent),
# then runs formatting and lint checks and every test of the workspace.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -- NAME    # extra arguments go to `cargo test` (e.g. a test name)
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""
if [ "$(id -u)" != 0 ] && have sudo; then SUDO="sudo"; fi
apt_updated=""
apt_install() {
  have apt-get || { echo "scripts/test.sh: please install: $*" >&2; exit 1; }
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Peers the tests drive: Node's `ws` package (the example backend and a client),
# openssl (certificates), Python's `h2` (an HTTP/2 rapid-reset flood) and `grpcio`, kosoku
# (Autobahn's cases), Chromium with playwright-core and axe-core (the console).
have node || apt_install nodejs
have npm || apt_install npm
have openssl || apt_install openssl
# The README test runs the documents' commands in a network namespace of its own
# (unshare and nsenter from util-linux, ip from iproute2) and calls curl, as they do.
have unshare || apt_install util-linux
have ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || apt_install iproute2
have curl || apt_install curl
# HAProxy sends the PROXY protocol to the gateway in the listener tests (and is a
# contestant of bench/run).
have haproxy || [ -x /usr/sbin/haproxy ] || apt_install haproxy
have python3 || apt_install python3 python3-pip
have st || python3 -m pip install --quiet --disable-pip-version-check schemathesis 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages schemathesis
have kosoku || python3 -m pip install --quiet --disable-pip-version-check kosoku 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kosoku
if ! python3 -c 'import h2' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check h2 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages h2
fi
# grpcio (C-core) serves and calls gRPC through the gateway in the gRPC tests.
if ! python3 -c 'import grpc' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check grpcio 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages grpcio
fi
# dnslib serves the DNS records the endpoint re-resolution test changes.
if ! python3 -c 'import dnslib' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check dnslib 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages dnslib
fi
npm ci --prefix examples/websocket-echo --no-audit --no-fund --loglevel=error
# Debian's Chromium, driven headless by playwright-core (never a downloaded browser):
# a real browser's WebSocket, which it opens over HTTP/2 (RFC 8441) when it can.
have chromium || apt_install chromium
npm ci --prefix crates/tollgate/tests/browser --no-audit --no-fund --loglevel=error

# PostgreSQL on 127.0.0.1:5432 with a database `test` (the store's tests run against it
# and against SQLite). Started if installed but down; installed with trust auth on
# loopback if missing. TOLLGATE_TEST_POSTGRES overrides the URL.
if [ -z "${TOLLGATE_TEST_POSTGRES:-}" ]; then
  if ! have pg_ctlcluster; then
    apt_install postgresql
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
  fi
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  fi
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 0.2; done
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
fi

# Redis on 127.0.0.1:6379 (the counters' and the scale-out tests; REDIS_URL overrides
# it). Started if installed but down; installed if missing. The failure-mode tests run
# their own redis-server (and their own PostgreSQL cluster) on free ports, and the
# high-availability tests a Sentinel set and a Cluster (made with redis-cli).
have redis-server || apt_install redis-server
have redis-cli || apt_install redis-tools
if [ -z "${REDIS_URL:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.2; done
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
args=()
if [ "${1:-}" = "--" ]; then shift; args=("$@"); fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked -- "${args[@]}" 2>&1 | tee "$log" || status=$?
# The admin API against its own OpenAPI document (skipped when a test name is given).
if [ "$status" = 0 ] && [ ${#args[@]} -eq 0 ]; then
  if bash scripts/schemathesis.sh > "$log.st" 2>&1; then
    echo "schemathesis: the admin API conforms to its OpenAPI document"
  else
    cat "$log.st"; status=1
  fi
  rm -f "$log.st"
  # The benchmark harness end to end with tiny counts, so it keeps working (it installs
  # nginx, HAProxy and wrk; it measures nothing worth reading and asserts no speed).
  if bench/run --smoke > "$log.bench" 2>&1; then
    echo "bench: the harness ran every measure against every contestant (smoke counts)"
  else
    cat "$log.bench"; status=1
  fi
  rm -f "$log.bench"
  # Every fuzz target for FUZZ_SECONDS (20) seconds, on nightly (installed if missing;
  # a crash fails the run). FUZZ_SECONDS=0 leaves the step out, and says so.
  if [ "$status" = 0 ] && [ "${FUZZ_SECONDS:-20}" = 0 ]; then
    echo "fuzz: left out (FUZZ_SECONDS=0)"
  elif [ "$status" = 0 ]; then
    if bash scripts/fuzz.sh > "$log.fuzz" 2>&1; then
      sed -n '/^fuzz.sh: summary/,$p' "$log.fuzz"
    else
      cat "$log.fuzz"; status=1
    fi
    rm -f "$log.fuzz"
  fi
fi
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
