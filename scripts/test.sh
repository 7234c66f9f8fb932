#!/usr/bin/env bash
# Runs every test against real parts: installs the runtime (PostgreSQL with
# pgvector, the embedding model) if missing, then builds and runs the whole
# suite. Tests start their own PostgreSQL cluster under /tmp (through mnemo's
# embedded-cluster code) and stop it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --locked --all-targets
status=0
cargo test --locked --all-targets "$@" || status=$?
# The shared test cluster outlives the test processes by design; stop it.
target/debug/mnemo db stop --data-dir "/tmp/mnemo-test-$(id -u)" >/dev/null 2>&1 || true
exit $status
