#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests: start the local
# cluster if it is down, install it (Debian, as root) if it is missing.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if command -v pg_isready >/dev/null && ready; then
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "PostgreSQL is not running and cannot be installed here: start one on 127.0.0.1:5432" >&2
    echo "or set PRIMITIVES_TEST_ADMIN_URL to a server the tests may create databases on." >&2
    exit 1
  fi
  echo "Installing PostgreSQL (Debian package)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fresh=1
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "Starting PostgreSQL $version..."
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  ready && break
  sleep 1
done
ready || { echo "PostgreSQL did not start" >&2; exit 1; }

if [ "${fresh:-0}" = 1 ]; then
  # The tests connect as postgres:postgres over TCP (a throw-away local test server).
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
fi
