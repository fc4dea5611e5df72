#!/usr/bin/env bash
# Headless Chromium for the console's browser tests, from Debian's packages (Playwright drives it through
# playwright-core; no browser is ever downloaded). Prints the browser's path.
set -euo pipefail
find_chromium() { command -v chromium || command -v chromium-browser || true; }
if [ -z "$(find_chromium)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
fi
find_chromium
