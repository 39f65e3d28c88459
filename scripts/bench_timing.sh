#!/usr/bin/env bash
# Does the query API's timing tell a deleted post from a suspended author's
# post, or from an id never stored? (Issue 15, item 5: their status and body
# are the same; this measures the time.)
#
#   scripts/bench_timing.sh                 # 40,000 requests, the cases interleaved at random
#   REQUESTS=100000 scripts/bench_timing.sh
#   TIMING_PG=postgres://postgres@127.0.0.1:54329/postgres scripts/bench_timing.sh
#                                           # a PostgreSQL store instead (a database
#                                           # of its own, made and dropped with psql)
#
# It builds the release binary when missing, imports 30,000 posts into a
# SQLite store, deletes a third of them, suspends the authors of another
# third, starts `complyd run` (its streams point nowhere: only the query API
# works), then asks GET /v1/posts/{id} over one keep-alive connection for a
# random mix of four cases: deleted, author suspended, never stored, and
# visible (the control). Each request's time is measured by the client; the
# cases are interleaved so that any drift of the machine hits them alike.
# Prints per case: answers seen, median, p10, p90 (microseconds); writes the
# table to bench_timing.out.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-40000}
PORT=${PORT:-18093}
COMPLYD=${COMPLYD:-target/release/complyd}   # another build to compare
[[ -x "$COMPLYD" ]] || cargo build --release --bin complyd

work=$(mktemp -d)
pid=""
pg_db=""
cleanup() {
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [[ -n "$pg_db" ]]; then psql -q "$TIMING_PG" -c "DROP DATABASE IF EXISTS $pg_db" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work" <<'EOF'
import json, sys, time
work = sys.argv[1]
t = int(time.time() * 1000) - 60_000
base, a_del, a_sus, a_vis = 1_500_000_000_000_000_000, 5_000_000_000, 6_000_000_000, 7_000_000_000
with open(f"{work}/posts.jsonl", "w") as f, open(f"{work}/events.jsonl", "w") as e:
    for k in range(30_000):
        case, j = divmod(k, 10_000)
        author = (a_del, a_sus, a_vis)[case] + j
        pid = base + k
        f.write(json.dumps({"id_str": str(pid), "user": {"id_str": str(author)}, "text": f"post {pid}"}) + "\n")
        if case == 0:
            e.write(json.dumps({"delete": {"status": {"id": pid, "id_str": str(pid), "user_id": author,
                                                      "user_id_str": str(author)}, "timestamp_ms": str(t)}}) + "\r\n")
        elif case == 1:
            e.write(json.dumps({"user_suspend": {"id": author, "timestamp_ms": str(t)}}) + "\r\n")
EOF
if [[ -n "${TIMING_PG:-}" ]]; then
    pg_db="complyd_timing_$$"
    psql -q "$TIMING_PG" -c "CREATE DATABASE $pg_db"
    db="${TIMING_PG%/*}/$pg_db"
else
    db="sqlite:$work/store.db"
fi
"$COMPLYD" import --db "$db" "$work/posts.jsonl"
"$COMPLYD" replay --db "$db" "$work/events.jsonl"

cat >"$work/run.toml" <<EOF
[stream]
url = "http://127.0.0.1:9/stream/compliance/accounts/{account}/publishers/twitter/{label}.json"
account = "timing"
username = "timing@example.com"
password_env = "COMPLYD_TIMING_PW"
[store]
url = "$db"
[http]
listen = "127.0.0.1:$PORT"
workers = 1
read_connections = 1
[log]
level = "error"
EOF
COMPLYD_TIMING_PW=x "$COMPLYD" run --config "$work/run.toml" >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
    sleep 0.1
done

python3 - "$PORT" "$REQUESTS" <<'EOF' | tee bench_timing.out
import http.client, random, statistics, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
base = 1_500_000_000_000_000_000
cases = {
    "deleted": lambda: base + random.randrange(0, 10_000),
    "author suspended": lambda: base + random.randrange(10_000, 20_000),
    "never stored": lambda: base + random.randrange(100_000, 10_000_000),
    "visible (control)": lambda: base + random.randrange(20_000, 30_000),
}
names = list(cases)
c = http.client.HTTPConnection("127.0.0.1", port)
def ask(i):
    c.request("GET", f"/v1/posts/{i}")
    r = c.getresponse()
    return r.status, r.read().decode().replace(str(i), "ID")
for _ in range(3000):  # warm-up: caches, the read connection, the CPU's clocks
    ask(cases[random.choice(names)]())
times = {k: [] for k in names}
answers = {k: set() for k in names}
for _ in range(n):
    k = random.choice(names)
    i = cases[k]()
    t0 = time.perf_counter_ns()
    status, body = ask(i)
    times[k].append((time.perf_counter_ns() - t0) / 1000)
    answers[k].add((status, body))
print(f"{n} requests over one keep-alive connection, cases interleaved at random")
print(f"{'case':<20} {'n':>6}  {'median us':>9} {'p10 us':>7} {'p90 us':>7}  answer")
for k in names:
    q = statistics.quantiles(times[k], n=10)
    print(f"{k:<20} {len(times[k]):>6}  {statistics.median(times[k]):>9.1f} {q[0]:>7.1f} {q[-1]:>7.1f}  {sorted(answers[k])}")
hidden = names[:3]
meds = [statistics.median(times[k]) for k in hidden]
spread = statistics.median([statistics.quantiles(times[k], n=4)[2] - statistics.quantiles(times[k], n=4)[0] for k in hidden])
print(f"hidden cases: medians within {max(meds) - min(meds):.1f} us of each other; interquartile range {spread:.1f} us")
same = len(set().union(*(answers[k] for k in hidden))) == 1
print("hidden cases: same status and body:", "yes" if same else "NO")
EOF
