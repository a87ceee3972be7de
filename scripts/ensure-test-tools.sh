#!/usr/bin/env bash
# What the browser, metrics and cluster tests drive, from Debian's packages: chromium
# (Playwright never downloads a browser here), prometheus, and redis-server (the GCS's store in
# the head-restart test). Installs what is missing (as root).
set -euo pipefail

missing=()
command -v chromium >/dev/null || [ -n "${PRIMITIVES_CHROMIUM:-}" ] || missing+=(chromium)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing for the tests and not installable here: ${missing[*]} (apt-get install them;" >&2
  echo "PRIMITIVES_CHROMIUM may name another Chromium binary)" >&2
  exit 1
fi
echo "Installing ${missing[*]} (Debian packages) for the browser and metrics tests..."
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
