#!/usr/bin/env bash
# Installs the browser the console test drives (tests/console.rs): Debian's
# chromium and chromium-driver, and fonts for its screenshots. Idempotent:
# does nothing when both programs are present. Needs root (or sudo) only
# when it has something to install.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup-browser: install chromium and chromium-driver (needs root)" >&2; exit 1; }
  sudo=sudo
fi
echo "setup-browser: installing chromium and chromium-driver" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-liberation fonts-dejavu-core >&2
