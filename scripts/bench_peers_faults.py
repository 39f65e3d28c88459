"""The fault mix: how many events each consumer loses when the stream breaks.

Part of scripts/bench_peers.sh (FAULT_MIX=0 skips it). For each consumer, a
fresh `complyd sim` at a fixed rate (MIX_RATE events/s, well under every
consumer's capacity, so that only the faults cost events) serves all 8
partitions. After WARMUP s, the window opens: for MIX_SECONDS s, every
MIX_EVERY s the next fault of the cycle below is armed on the next
partition (`arm_faults`). Then the consumer has MIX_SETTLE s to catch up (complyd: until
every partition is connected again and its gap ledger has no unresolved
gap, at most 300 s), and is stopped.

What the consumer lost: every event of the window (event time in
[window start, window end)) that it never got. The window's events come from
the simulator's own Replay of those minutes (it serves every generated event,
sent or not). What the consumer got:

- a Python peer: the lines it parsed, each written to a file;
- complyd: every line the simulator sent it, live, backfilled or replayed
  (its `--record` file). That counts what reached complyd, not what it
  stored; that everything received is stored is what the test suite proves
  (tests/operating.rs, tests/daemon_faults.rs). The table adds what
  complyd's gap ledger says (`complyd gaps`).

Duplicates (a backfill resends events) count once: an event is its exact
line.
"""

import datetime
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

from bench_peers_lib import ensure_running, kill_tree, markdown_table, start_complyd

RATE = float(os.environ.get("MIX_RATE", 5000))
SECONDS = float(os.environ.get("MIX_SECONDS", 60))
EVERY = float(os.environ.get("MIX_EVERY", 4))
SETTLE = float(os.environ.get("MIX_SETTLE", 20))
WARMUP = 3.0

# The cycle: drops mid-line, 503s, stalls, forced disconnects.
CYCLE = [
    ("drop mid-message", [{"kind": "drop_mid_message"}]),
    ("503 twice after a forced disconnect",
     [{"kind": "status", "status": 503, "count": 2}, {"kind": "forced_disconnect"}]),
    ("8 s stall (the buffer overflows)", [{"kind": "stall", "duration_ms": 8000}]),
    ("forced disconnect", [{"kind": "forced_disconnect"}]),
]

# An event's time: "timestamp_ms":"<ms>", or (user_withheld)
# "timestampMs":"<ISO 8601>".
TS = re.compile(rb'"timestamp_?[mM]s":"([^"]+)"')


def event_ms(line):
    m = TS.search(line)
    if not m:
        return None
    v = m.group(1).decode()
    if v.isdigit():
        return int(v)
    return int(datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)


def post_json(url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


def minute_date(ms):
    return time.strftime("%Y%m%d%H%M", time.gmtime(ms // 1000))


def start_sim(complyd, work, port, user, password, record):
    cfg = os.path.join(work, f"sim-{port}.toml")
    with open(cfg, "w") as f:
        f.write(f"""listen = "127.0.0.1:{port}"
username = "{user}"
password = "{password}"
seed = 1
rate = {RATE}
record = "{record}"
# The peers are not held to X's 10 connections a minute (complyd holds
# itself to them).
[rate_limit]
connections = 1000
[replay]
requests = 100
min_age_minutes = 0
""")
    p = subprocess.Popen([complyd, "sim", "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    url1 = p.stdout.readline().strip()
    return p, f"http://127.0.0.1:{port}", url1[: -len("partition=1")]


def window_events(base, user, password, a_ms, b_ms, work):
    """The set of event lines with event time in [a_ms, b_ms), from Replay."""
    frm = (a_ms // 60000) * 60000
    to = -(-b_ms // 60000) * 60000
    while time.time() * 1000 < to + 1500:
        time.sleep(0.5)
    url = (f"{base}/replay/compliance/accounts/demo/publishers/twitter/prod.json"
           f"?fromDate={minute_date(frm)}&toDate={minute_date(to)}")
    out = os.path.join(work, "replay.gz")
    subprocess.run(["curl", "-sS", "--fail", "-u", f"{user}:{password}", "-H", "Accept-Encoding: gzip",
                    "-o", out, url], check=True)
    events = set()
    with gzip.open(out, "rb") as f:
        for line in f.read().split(b"\r\n"):
            t = event_ms(line)
            if t is not None and a_ms <= t < b_ms:
                events.add(line)
    return events


def arm_faults(base, stop):
    """Arms a fault every EVERY s on partitions 1..8 in turn, until `stop` is
    set; the kind moves on one more each round of 8, so that each partition
    meets different faults. Returns the list of (kind, partition) armed."""
    armed = []
    k = 0
    while not stop.wait(EVERY if k else 0.5):
        name, faults = CYCLE[(k + k // 8) % len(CYCLE)]
        p = k % 8 + 1
        for f in faults:
            post_json(f"{base}/admin/faults", dict(f, partition=p))
        armed.append((name, p))
        k += 1
    return armed


def metric(port, name):
    """The sum of the samples of `name` at complyd's /metrics (None when
    it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def run_one(name, complyd, work, user, password, port, start, got, settle=None):
    d = os.path.join(work, f"mix-{port}")
    os.makedirs(d, exist_ok=True)
    record = os.path.join(d, "record.tsv")
    sim, base, url = start_sim(complyd, d, port, user, password, record)
    proc = None
    try:
        proc = start(base, url, d)
        time.sleep(WARMUP)
        ensure_running(proc, name, os.path.join(d, "run.log"))
        a_ms = int(time.time() * 1000)
        stop = threading.Event()
        armed = []
        t = threading.Thread(target=lambda: armed.extend(arm_faults(base, stop)))
        t.start()
        time.sleep(SECONDS)
        stop.set()
        t.join()
        b_ms = int(time.time() * 1000)
        (settle or (lambda _d: time.sleep(SETTLE)))(d)
        kill_tree(proc)
        stopped_ms = int(time.time() * 1000)
        truth = window_events(base, user, password, a_ms, b_ms, d)
    finally:
        if proc and proc.poll() is None:
            kill_tree(proc)
        sim.terminate()
        sim.wait()
    received, extra = got(d, record, stopped_ms)
    lost = len(truth - received)
    print(f"  fault mix, {name}: {lost:,} of {len(truth):,} lost", file=sys.stderr)
    return {"consumer": name, "window": len(truth), "lost": lost, "faults": len(armed), "extra": extra}


def lines_file(d, _record, _stopped):
    with open(os.path.join(d, "lines"), "rb") as f:
        return set(f.read().split(b"\n")), ""


def recorded(complyd):
    def got(d, record, stopped_ms):
        """Every line the simulator sent before the consumer stopped (the
        truth replay comes after), and what complyd's gap ledger says."""
        got = set()
        with open(record, "rb") as f:
            for line in f:
                _part, at, msg = line.rstrip(b"\n").split(b"\t", 2)
                if int(at) < stopped_ms:
                    got.add(msg)
        out = subprocess.run([complyd, "gaps", "--db", f"sqlite:{d}/store.db", "--json"],
                             capture_output=True, text=True, check=True).stdout
        gaps = [json.loads(g) for g in out.splitlines() if g.strip()]
        how = sorted({g.get("repair") or g["state"] for g in gaps})
        repaired = sum(g["state"] == "repaired" for g in gaps)
        note = f"its gap ledger: {len(gaps)} gaps, {repaired} repaired ({', '.join(how)})"
        if os.path.exists(os.path.join(d, "not-caught-up")):
            note += "; stopped before every partition was connected again (300 s)"
        return got, note
    return got


def run(complyd, venv_py, work, user, password):
    """Runs the mix against each consumer and prints its table."""
    results = []

    def complyd_start(base, url, d):
        return start_complyd(complyd, base, user, password, d, "127.0.0.1:18791", "backfill_minutes = 5", f"""
[limiter]
state_file = "{d}/connections.json"
[replay]
freshness_ms = 60000
check_interval_ms = 2000
""")

    def complyd_settle(d):
        """Until every partition is connected again and no gap is unresolved
        (a gap enters the ledger when its partition reconnects) for 3 s in a
        row: at least SETTLE s, at most 300 s."""
        t0, calm = time.time(), 0
        while time.time() - t0 < 300:
            time.sleep(1)
            ok = metric(18791, "complyd_partition_connected") == 8 and metric(18791, "complyd_gaps_unresolved") == 0
            calm = calm + 1 if ok else 0
            if calm >= 3 and time.time() - t0 >= SETTLE:
                return
        # Still reconnecting (X's backoff after 503s doubles up to 320 s):
        # said in the table, not hidden.
        open(os.path.join(d, "not-caught-up"), "w").close()

    only = os.environ.get("MIX_ONLY", "")
    if only in ("", "complyd"):
        results.append(run_one("complyd run -> SQLite (backfill_minutes = 5)", complyd, work, user, password, 18760,
                               complyd_start, recorded(complyd), complyd_settle))

    peers = [
        ("gnippy 0.7.0 (PowerTrackClient x 8)", GNIPPY),
        ("requests + iter_lines, reconnecting", REQUESTS),
    ]
    for i, (name, code) in enumerate(peers):
        if only not in ("", "peers"):
            continue
        script = os.path.join(work, f"mix-peer-{i}.py")
        with open(script, "w") as f:
            f.write(code % (user, password))
        results.append(run_one(name, complyd, work, user, password, 18761 + i,
                               lambda base, url, d, script=script: subprocess.Popen(
                                   [venv_py, script, url, os.path.join(d, "lines")],
                                   stderr=open(os.path.join(d, "peer.log"), "w")),
                               lines_file))

    print(f"\nFault mix: {RATE:,.0f} events/s, a {SECONDS:.0f} s window with a fault every {EVERY:.0f} s"
          f" ({', '.join(n for n, _ in CYCLE)}; partitions in turn), then {SETTLE:.0f} s to catch up\n")
    print(markdown_table(
        ["consumer", "events in the window", "lost", "share lost", "faults", "notes"],
        [[r["consumer"], f"{r['window']:,}", f"{r['lost']:,}", f"{r['lost'] / r['window']:.2%}", r["faults"], r["extra"]]
         for r in results]))


# gnippy, as its README shows it: one PowerTrackClient a partition, a
# callback a line. It does not reconnect by itself.
GNIPPY = """
import gnippy, json, sys, threading, time
url, out = sys.argv[1], open(sys.argv[2], "wb")
lock = threading.Lock()
def on_line(line):
    json.loads(line)
    with lock:
        out.write(line if isinstance(line, bytes) else line.encode())
        out.write(b"\\n")
clients = [gnippy.PowerTrackClient(on_line, url=f"{url}partition={p}", auth=("%s", "%s")) for p in range(1, 9)]
for c in clients:
    c.connect()
while True:
    time.sleep(0.2)
    with lock:
        out.flush()
"""

# The consumer people write by hand, with the reconnect loop a careful
# person adds (1 s pause): requests, iter_lines, json.loads.
REQUESTS = """
import json, requests, sys, threading, time
url, out = sys.argv[1], open(sys.argv[2], "wb")
lock = threading.Lock()
def read(p):
    while True:
        try:
            with requests.get(f"{url}partition={p}", auth=("%s", "%s"), stream=True,
                              headers={"Accept-Encoding": "gzip"}, timeout=30) as r:
                for line in r.iter_lines():
                    if line:
                        json.loads(line)
                        with lock:
                            out.write(line)
                            out.write(b"\\n")
        except Exception:
            pass
        time.sleep(1)
for p in range(1, 9):
    threading.Thread(target=read, args=(p,), daemon=True).start()
while True:
    time.sleep(0.2)
    with lock:
        out.flush()
"""
