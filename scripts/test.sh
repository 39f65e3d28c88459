#!/usr/bin/env bash
# The whole test suite, PostgreSQL included: starts (or reuses) a throwaway
# PostgreSQL server on 127.0.0.1, then runs every test, the ones that need
# PostgreSQL too. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPLYD_TEST_POSTGRES="$(bash scripts/pg-test-server.sh)"
export COMPLYD_TEST_POSTGRES
echo "test.sh: PostgreSQL at $COMPLYD_TEST_POSTGRES" >&2
cargo test "$@" -- --include-ignored
