#!/usr/bin/env bash
# Installs the Debian packages the tests drive as real parts: chromium and
# chromium-driver (and fonts for screenshots) for tests/console.rs, and
# pgbouncer for the transaction-pooler tests (tests/pooler.rs and the second
# pass of scripts/test.sh). Idempotent: does nothing when every program is
# present, and one `apt-get update` otherwise (a fresh machine has no package
# lists). Needs root (or sudo) only when it has something to install.
set -euo pipefail
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
if have chromium && have chromedriver && have pgbouncer; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup-test-packages: install chromium, chromium-driver and pgbouncer (needs root)" >&2; exit 1; }
  sudo=sudo
fi
echo "setup-test-packages: installing chromium, chromium-driver and pgbouncer" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-liberation fonts-dejavu-core pgbouncer >&2
# Debian starts the packaged service on its default port; the tests run
# their own instance, so the packaged one is stopped and left disabled.
if command -v systemctl >/dev/null && systemctl is-active --quiet pgbouncer 2>/dev/null; then
  $sudo systemctl stop pgbouncer || true
  $sudo systemctl disable pgbouncer >/dev/null 2>&1 || true
fi
