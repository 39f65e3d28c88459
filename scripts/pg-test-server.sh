#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 (installing Debian's
# postgresql package when it is missing) and prints its URL on stdout.
# Idempotent: a cluster already answering on the port is reused.
#
#   COMPLYD_PG_PORT  port (default 54329)
#   COMPLYD_PG_DIR   where the cluster lives (default /tmp/complyd-pg)
#   COMPLYD_PG_FAST  1 (default): fsync off, for tests; 0: durable defaults, for benchmarks
set -euo pipefail
port="${COMPLYD_PG_PORT:-54329}"
dir="${COMPLYD_PG_DIR:-/tmp/complyd-pg}"
fast="${COMPLYD_PG_FAST:-1}"

find_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bindir="$(find_bindir)"
if [ -z "$bindir" ]; then
  echo "pg-test-server: installing postgresql from Debian's packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir="$(find_bindir)"
fi
[ -n "$bindir" ] || { echo "pg-test-server: no PostgreSQL binaries found" >&2; exit 1; }

# PostgreSQL refuses to run as root: use the package's postgres user then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_owner "'$bindir/initdb' -D '$dir/data' -U postgres -A trust -E UTF8" >/dev/null
  opts="-h 127.0.0.1 -p $port -k $dir -c max_connections=200"
  if [ "$fast" = 1 ]; then
    opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  as_owner "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/log' -o '$opts' -w start" >/dev/null
fi
echo "postgres://postgres@127.0.0.1:$port/postgres"
