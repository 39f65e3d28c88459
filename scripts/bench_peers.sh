#!/usr/bin/env bash
# complyd against what people run instead, on this machine, in one run:
# the ceiling (8 x curl --compressed to /dev/null), complyd end to end into
# SQLite (and into PostgreSQL when one answers: COMPLYD_BENCH_PG, by
# default the server of scripts/pg-test-server.sh, in a schema of its own),
# gnippy (the PowerTrack client from PyPI) and a hand-written requests +
# iter_lines + json.loads consumer, each against a fresh
# `complyd sim` at full rate. Prints one table (events/s, ratio to the
# ceiling, CPU seconds per million events, peak RSS). Then the fault mix
# (scripts/bench_peers_faults.py): the same consumers at a fixed rate while
# drops mid-message, 503s, stalls and forced disconnects hit the partitions
# in turn, and the events each one lost. Both tables go to bench_peers.out.
#
#   scripts/bench_peers.sh                   # 20 s each after 3 s of warm-up, then the mix
#   DURATION=30 WARMUP=5 scripts/bench_peers.sh
#   FAULT_MIX=0 scripts/bench_peers.sh       # the throughput table only
#   COMPLYD_BENCH_PG=postgres://USER@HOST:PORT/DB   # the PostgreSQL row's database
#   THROUGHPUT=0 scripts/bench_peers.sh      # the fault mix only
#   MIX_ONLY=complyd (or peers)              # the fault mix for complyd (or the peers) only
#   MIX_RATE=5000 MIX_SECONDS=60 MIX_EVERY=4 MIX_SETTLE=20   # the mix's defaults
#   COMPLYD_BUILDS="/tmp/before /tmp/after" ROUNDS=2 scripts/bench_peers.sh
#                                            # complyd's row only, builds alternated
#                                            # (COMPLYD_INTO_PG=1, here and with SOAK: into PostgreSQL;
#                                            # a build may be a script setting COMPLYD_SECTION__KEY)
#   COMPLYD_EXTRA='[handlers]\nin_flight = 4' # added to complyd's configuration
#   SOAK=300 SOAK_EVERY=30 scripts/bench_peers.sh
#                                            # complyd alone for 300 s: its rate, CPU, memory
#                                            # and store size every 30 s as the store grows
#
# Needs curl and python3 (with venv); installs gnippy and requests in a
# throwaway virtual environment; builds the release binary (when not current).
# Run it on a quiet machine: every consumer shares the 2 cores with the
# simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
# Always asked: cargo does nothing when the build is current, and a stale
# binary would be measured as today's code.
cargo build --release --bin complyd
command -v curl >/dev/null || { echo "curl is missing" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# complyd's rows alone (COMPLYD_BUILDS, SOAK) need no peers.
if [[ -z "${COMPLYD_BUILDS:-}${SOAK:-}" ]]; then
  "$work/venv/bin/pip" install -q "gnippy==0.7.0" "requests>=2,<3"
fi

python3 scripts/bench_peers.py "$PWD/target/release/complyd" "$work/venv/bin/python" "$work" "$DURATION" "$WARMUP" \
    | tee bench_peers.out
