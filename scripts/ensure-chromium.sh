#!/usr/bin/env bash
# The browser test drives Debian's chromium (Playwright never downloads a browser here):
# install the package (as root) when it is missing.
set -euo pipefail

if command -v chromium >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium is missing and cannot be installed here: apt-get install chromium" >&2
  echo "(or set PRIMITIVES_CHROMIUM to a Chromium binary)" >&2
  exit 1
fi
echo "Installing chromium (Debian package) for the browser test..."
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
