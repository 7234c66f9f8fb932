#!/usr/bin/env bash
# Runs every test against real parts: installs the runtime (PostgreSQL with
# pgvector, the embedding model) if missing, then builds and runs the whole
# suite. Tests start their own PostgreSQL cluster under /tmp (through mnemo's
# embedded-cluster code) and stop it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
bash scripts/setup-test-packages.sh
# Examples are built (so they cannot rot) but hold no tests to run.
cargo build --locked --all-targets
# Each test makes a database of its own in the shared test cluster; start
# from an empty cluster so runs do not pile up gigabytes of them.
cluster="/tmp/mnemo-test-$(id -u)"
target/debug/mnemo db stop --data-dir "$cluster" >/dev/null 2>&1 || true
rm -rf "$cluster"
log=$(mktemp)
set +e
cargo test --locked --no-fail-fast --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$#" = 0 ]; then
  # Second pass: the MCP tool suites again, every server behind PgBouncer in
  # transaction mode (tests/common/pgbouncer.rs) and migrating over the
  # direct URL.
  MNEMO_TEST_PGBOUNCER=1 cargo test --locked --no-fail-fast \
    --test tools --test contexts --test surface --test http --test auth --test backup 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
set -e
# The shared test cluster and PgBouncer outlive the test processes by
# design; stop them.
bouncer="/tmp/mnemo-pgbouncer-$(id -u)"
if [ -f "$bouncer/pgbouncer.pid" ]; then
  kill "$(cat "$bouncer/pgbouncer.pid")" 2>/dev/null || true
  rm -f "$bouncer/port"
fi
target/debug/mnemo db stop --data-dir "$cluster" >/dev/null 2>&1 || true
# Keep a failed run's cluster for inspection; a passing one frees its disk.
[ "$status" != 0 ] || rm -rf "$cluster"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
