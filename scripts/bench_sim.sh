#!/usr/bin/env bash
# Throughput benchmark of `complyd sim`: drains all 8 partitions at once with
# `curl --compressed` for DURATION seconds and reports events/s.
#
#   scripts/bench_sim.sh                      # 10 s, rate 0 (as fast as possible)
#   DURATION=20 scripts/bench_sim.sh
#   SIM_CMD="target/release/complyd sim" scripts/bench_sim.sh
#
# Environment:
#   SIM_CMD   command that runs the simulator (default: target/release/complyd sim,
#             built first with `cargo build --release` when missing)
#   DURATION  seconds each curl drains its partition (default 10)
#   RATE      --rate given to the simulator (default 0 = unlimited)
#   SEED      --seed (default 1)
# Events are counted twice: lines the 8 curl clients decompressed (`wc -l`;
# no heartbeat is due while data flows), and the simulator's own events_sent
# from /admin/stats (handed to the sockets, a few more than arrived in time).
# full_buffer_disconnects > 0 means some client could not keep up with a live
# RATE and was cut off (the firehose's behaviour), so its partition stopped.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
RATE=${RATE:-0}
SEED=${SEED:-1}
SIM_CMD=${SIM_CMD:-target/release/complyd sim}
USER_PASS=${USER_PASS:-demo@example.com:sim-password}

if [[ "$SIM_CMD" == "target/release/complyd sim" && ! -x target/release/complyd ]]; then
    cargo build --release --bin complyd
fi

work=$(mktemp -d)
sim_pid=""
cleanup() {
    if [[ -n "$sim_pid" ]]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

: >"$work/out"
# shellcheck disable=SC2086
$SIM_CMD --listen 127.0.0.1:0 --rate "$RATE" --seed "$SEED" >"$work/out" 2>"$work/log" &
sim_pid=$!
for _ in $(seq 1 100); do
    [[ $(wc -l <"$work/out") -ge 2 ]] && break
    sleep 0.1
done
base=$(sed -n 1p "$work/out" | sed 's#^listening on ##')
url1=$(sed -n 2p "$work/out")
if [[ -z "$base" || -z "$url1" ]]; then
    echo "simulator did not start:" >&2
    cat "$work/log" >&2
    exit 1
fi
url=${url1%partition=1}

start=$(date +%s.%N)
for p in 1 2 3 4 5 6 7 8; do
    ( curl --compressed -s -N -u "$USER_PASS" --max-time "$DURATION" "${url}partition=$p" \
        | wc -l >"$work/lines.$p" || true ) &
done
wait $(jobs -p | grep -v "^$sim_pid$") 2>/dev/null || true
end=$(date +%s.%N)

client_events=0
for p in 1 2 3 4 5 6 7 8; do
    n=$(cat "$work/lines.$p" 2>/dev/null || echo 0)
    client_events=$((client_events + n))
done
read -r server_events cut_off < <(curl -s "$base/admin/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)["partitions"]
print(sum(p["events_sent"] for p in s), sum(p["full_buffer_disconnects"] for p in s))' 2>/dev/null || echo "? ?")
elapsed=$(echo "$end - $start" | bc -l)
rate=$(echo "$client_events / $elapsed" | bc -l)
printf 'duration_s=%.2f client_events=%d server_events_sent=%s full_buffer_disconnects=%s events_per_s=%.0f\n' \
    "$elapsed" "$client_events" "$server_events" "$cut_off" "$rate"
