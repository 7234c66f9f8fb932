#!/usr/bin/env bash
# Builds mnemo and starts it on the embedded defaults: its own PostgreSQL
# (initialised on first use) and the local embedding model. Idempotent: the
# set-up step caches downloads and skips what is already installed.
#
#   scripts/run.sh                      # Streamable HTTP on 127.0.0.1:8080/mcp
#   scripts/run.sh serve --stdio        # any mnemo arguments
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --release --locked --bin mnemo >&2
if [ $# -eq 0 ]; then
  set -- serve --http 127.0.0.1:8080
fi
exec target/release/mnemo "$@"
