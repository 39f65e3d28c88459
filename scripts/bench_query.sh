#!/usr/bin/env bash
# Load benchmark of the query API: `GET /v1/posts/{id}` with wrk on loopback
# while the daemon ingests a live simulated stream (complyd demo, everything
# in one process, SQLite store).
#
#   scripts/bench_query.sh                    # 20 s of wrk at 10,000 events/s ingest
#   DURATION=30 RATE=10000 CONNECTIONS=32 scripts/bench_query.sh
#
# Environment:
#   DURATION     seconds of wrk (default 20)
#   RATE         simulated events/s the daemon ingests meanwhile (default 10000)
#   POSTS        posts in the store (default 100000); wrk asks for random ones
#                of them plus 10% ids that were never stored
#   CONNECTIONS  wrk connections (default 16), THREADS wrk threads (default 2)
#   PORT         the daemon's HTTP port (default 18080)
# Needs wrk (Debian: apt-get install wrk) and a release build (built when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
RATE=${RATE:-10000}
POSTS=${POSTS:-100000}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
PORT=${PORT:-18080}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[[ -x target/release/complyd ]] || cargo build --release --bin complyd

work=$(mktemp -d)
demo_pid=""
cleanup() {
    if [[ -n "$demo_pid" ]]; then kill -INT "$demo_pid" 2>/dev/null || true; wait "$demo_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/demo.toml" <<EOF
[http]
listen = "127.0.0.1:$PORT"
workers = 2
read_connections = 4

[sim]
rate = $RATE
seed = 1
posts = $POSTS
EOF

target/release/complyd demo --config "$work/demo.toml" --dir "$work/demo" >"$work/demo.out" 2>"$work/demo.log" &
demo_pid=$!
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.out" "$work/demo.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "the daemon never became ready" >&2; cat "$work/demo.log" >&2; exit 1; }

# The stored ids (the first id_str of each line is the post's own).
grep -o '"id_str":"[0-9]*"' "$work/demo/posts.jsonl" | awk -F'"' '{print $4}' | awk '!seen[$0]++' >"$work/ids"
echo "stored ids: $(wc -l <"$work/ids")"
cat >"$work/get.lua" <<EOF
local ids = {}
for line in io.lines("$work/ids") do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
  local id
  if math.random(10) == 1 then id = tostring(math.random(1, 1000000)) .. "7" else id = ids[math.random(#ids)] end
  local cc = ({"DE", "FR", "US", "BR"})[math.random(4)]
  return wrk.format("GET", "/v1/posts/" .. id .. "?country=" .. cc)
end
EOF

sleep 2
committed_before=$(curl -s "http://127.0.0.1:$PORT/healthz" | grep -o '"events_committed":[0-9]*' | cut -d: -f2)
t0=$(date +%s.%N)
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/get.lua" "http://127.0.0.1:$PORT" | tee "$work/wrk.out"
t1=$(date +%s.%N)
committed_after=$(curl -s "http://127.0.0.1:$PORT/healthz" | grep -o '"events_committed":[0-9]*' | cut -d: -f2)
awk -v a="$committed_before" -v b="$committed_after" -v t0="$t0" -v t1="$t1" -v r="$RATE" \
    'BEGIN { printf "ingest during the run: %.0f events/s committed (simulator rate %s)\n", (b - a) / (t1 - t0), r }'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
