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
log=$(mktemp)
set +e
cargo test --locked --no-fail-fast --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The shared test cluster outlives the test processes by design; stop it.
target/debug/mnemo db stop --data-dir "/tmp/mnemo-test-$(id -u)" >/dev/null 2>&1 || true
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
