"""complyd against what people run instead, on one machine, in one run.

Driven by scripts/bench_peers.sh (which builds complyd and the peers'
virtual environment). For each consumer, a fresh `complyd sim --rate 0`
(the simulator releases events as fast as its slowest client reads) serves
all 8 partitions; the consumer reads for a warm-up, then for DURATION
seconds, and is measured over those seconds:

complyd runs twice: into SQLite, then into PostgreSQL when the database
COMPLYD_BENCH_PG names (by default scripts/pg-test-server.sh's) answers.

- events/s: events the consumer itself counted (curl: the simulator's
  events_sent; complyd: events committed to its store, from /healthz; the
  Python peers: messages they parsed with json.loads);
- CPU seconds per million events, and peak RSS (VmHWM), of the consumer's
  processes (the 8 curl processes summed);
- the ratio to the ceiling (8 x `curl --compressed` to /dev/null).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from bench_peers_lib import ensure_running, kill_tree, markdown_table, start_complyd, tree

COMPLYD, VENV_PY, WORK, DURATION, WARMUP = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
USER, PASSWORD = "demo@example.com", "sim-password"
TICK = os.sysconf("SC_CLK_TCK")


def start_sim(port):
    p = subprocess.Popen(
        [COMPLYD, "sim", "--listen", f"127.0.0.1:{port}", "--rate", "0", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    url1 = p.stdout.readline().strip()
    return p, f"http://127.0.0.1:{port}", url1[: -len("partition=1")]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def sim_events(base):
    return sum(p["events_sent"] for p in get_json(f"{base}/admin/stats")["partitions"])


def cpu_s(pids):
    total = 0
    for q in pids:
        try:
            with open(f"/proc/{q}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def peak_rss_mb(pids):
    total = 0
    for q in pids:
        try:
            with open(f"/proc/{q}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def measure(name, start, count, stores):
    sim, base, url = start_sim(18700 + len(RESULTS))
    try:
        proc = start(base, url)
        time.sleep(WARMUP)
        ensure_running(proc, name, os.path.join(complyd_dir(), "run.log"))
        pids = tree(proc.pid)
        c0, cpu0, t0 = count(base), cpu_s(pids), time.time()
        time.sleep(DURATION)
        pids = tree(proc.pid)
        c1, cpu1, t1 = count(base), cpu_s(pids), time.time()
        rss = peak_rss_mb(pids)
        n = c1 - c0
        RESULTS.append({
            "consumer": name, "events_per_s": n / (t1 - t0),
            "cpu_s_per_million": (cpu1 - cpu0) / n * 1e6 if n else float("nan"),
            "peak_rss_mb": rss, "stores": stores,
        })
        print(f"  {name}: {n / (t1 - t0):,.0f} events/s", file=sys.stderr)
    finally:
        kill_tree(proc)
        sim.terminate()
        sim.wait()


def counter_file(path):
    def count(_base):
        try:
            with open(path) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0
    return count


# gnippy, the PowerTrack client from PyPI: one PowerTrackClient a partition.
GNIPPY = """
import gnippy, json, sys, threading, time
url, out = sys.argv[1], sys.argv[2]
n = [0]
lock = threading.Lock()
def on_line(line):
    json.loads(line)
    with lock:
        n[0] += 1
clients = [gnippy.PowerTrackClient(on_line, url=f"{url}partition={p}", auth=("%s", "%s")) for p in range(1, 9)]
for c in clients:
    c.connect()
while True:
    with open(out + ".tmp", "w") as f:
        f.write(str(n[0]))
    import os; os.replace(out + ".tmp", out)
    time.sleep(0.2)
""" % (USER, PASSWORD)

# The consumer people write by hand: requests, iter_lines, json.loads.
REQUESTS = """
import json, requests, sys, threading, time, os
url, out = sys.argv[1], sys.argv[2]
n = [0]
lock = threading.Lock()
def read(p):
    with requests.get(f"{url}partition={p}", auth=("%s", "%s"), stream=True,
                      headers={"Accept-Encoding": "gzip"}) as r:
        for line in r.iter_lines():
            if line:
                json.loads(line)
                with lock:
                    n[0] += 1
for p in range(1, 9):
    threading.Thread(target=read, args=(p,), daemon=True).start()
while True:
    with open(out + ".tmp", "w") as f:
        f.write(str(n[0]))
    os.replace(out + ".tmp", out)
    time.sleep(0.2)
""" % (USER, PASSWORD)


def committed(_base):
    try:
        return get_json("http://127.0.0.1:18790/healthz")["events_committed"]
    except OSError:
        return 0


def complyd_dir():
    """The work directory of the complyd run being measured (its store and
    log)."""
    return os.path.join(WORK, f"complyd-{len(RESULTS)}")


def complyd_run(base, _url, binary=None, store=None):
    """`complyd run` into a new SQLite store (or `store`, a store URL);
    COMPLYD_EXTRA (TOML sections, `\\n` for new lines) is added to its
    configuration."""
    d = complyd_dir()
    os.makedirs(d, exist_ok=True)
    extra = os.environ.get("COMPLYD_EXTRA", "").replace("\\n", "\n")
    return start_complyd(binary or COMPLYD, base, USER, PASSWORD, d, "127.0.0.1:18790", extra=extra, store=store)


# The throwaway server of scripts/pg-test-server.sh, unless COMPLYD_BENCH_PG
# names another database.
PG_DEFAULT = "postgres://postgres@127.0.0.1:54329/postgres"

# Run in the virtual environment (psycopg is installed there): creates or
# drops the schema argv[2] in the database argv[1].
PG_SCHEMA = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute(f"DROP SCHEMA IF EXISTS {sys.argv[2]} CASCADE")
    if sys.argv[3] == "create":
        c.execute(f"CREATE SCHEMA {sys.argv[2]}")
"""


def postgres_store():
    """A store URL in a new schema of the PostgreSQL database
    COMPLYD_BENCH_PG names (PG_DEFAULT when unset), and a function that drops
    the schema; or None and why there is no PostgreSQL row. Only the host
    and port are ever printed: the URL may hold a password."""
    url = os.environ.get("COMPLYD_BENCH_PG", PG_DEFAULT)
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or 5432
    where = f"{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        return None, (f"not reachable at {where} ({e.strerror or e}): start one with"
                      " scripts/pg-test-server.sh or name one in COMPLYD_BENCH_PG")
    pip = subprocess.run([VENV_PY, "-m", "pip", "install", "-q", "psycopg[binary]>=3,<4"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if pip.returncode != 0:
        return None, f"psycopg could not be installed: {pip.stderr.strip().splitlines()[-1:]}"
    schema = f"complyd_bench_peers_{os.getpid()}"
    made = subprocess.run([VENV_PY, "-c", PG_SCHEMA, url, schema, "create"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if made.returncode != 0:
        return None, f"cannot create a schema at {where}: {made.stderr.strip().splitlines()[-1:]}"
    sep = "&" if parts.query else "?"
    drop = lambda: subprocess.run([VENV_PY, "-c", PG_SCHEMA, url, schema, "drop"],  # noqa: E731
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (f"{url}{sep}options=-csearch_path%3D{schema}", drop), where


def pg_or_exit():
    """COMPLYD_INTO_PG=1: a new PostgreSQL schema for one run, as
    (store URL, drop), or the benchmark stops saying why there is none."""
    pg, pg_where = postgres_store()
    if not pg:
        raise SystemExit(f"COMPLYD_INTO_PG=1 but no PostgreSQL: {pg_where}")
    return pg


INTO_PG = os.environ.get("COMPLYD_INTO_PG") == "1"


def builds():
    """COMPLYD_BUILDS="BIN_A BIN_B": complyd's row only, for each build in
    turn, ROUNDS times (2 by default), in one sitting: a before/after
    comparison. The simulator is always the script's own build. A build may
    be a script that sets COMPLYD_SECTION__KEY settings and execs complyd:
    settings compared the same way."""
    for _ in range(int(os.environ.get("ROUNDS", 2))):
        for b in os.environ["COMPLYD_BUILDS"].split():
            store, drop = pg_or_exit() if INTO_PG else (None, lambda: None)
            try:
                measure(b, lambda base, url, b=b, store=store: complyd_run(base, url, b, store=store),
                        committed, "yes (PostgreSQL)" if INTO_PG else "yes (SQLite)")
            finally:
                drop()
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {DURATION:.0f} s each after"
          f" {WARMUP:.0f} s of warm-up, in the order run\n")
    print(markdown_table(
        ["complyd build", "events/s", "CPU s per million events", "peak RSS MB"],
        [[r["consumer"], f"{r['events_per_s']:,.0f}", f"{r['cpu_s_per_million']:.1f}", f"{r['peak_rss_mb']:.0f}"]
         for r in RESULTS]))


def throughput():
    """Each consumer at full rate: prints the table."""
    # The ceiling: 8 curl processes decompressing to /dev/null.
    measure("ceiling: 8 x curl --compressed", lambda base, url: subprocess.Popen(
        ["bash", "-c", " ".join(
            f"curl --compressed -s -N -u {USER}:{PASSWORD} '{url}partition={p}' -o /dev/null &" for p in range(1, 9))
         + " wait"]), sim_events, "no")

    # complyd end to end, into SQLite, then into PostgreSQL when reachable.
    measure("complyd run -> SQLite", complyd_run, committed, "yes (SQLite)")
    pg, pg_where = postgres_store()
    if pg:
        store, drop = pg
        try:
            measure("complyd run -> PostgreSQL", lambda base, url: complyd_run(base, url, store=store),
                    committed, "yes (PostgreSQL)")
        finally:
            drop()

    for name, code in [("gnippy 0.7.0 (PowerTrackClient x 8)", GNIPPY), ("requests + iter_lines + json.loads", REQUESTS)]:
        out = os.path.join(WORK, f"count-{len(RESULTS)}")
        script = os.path.join(WORK, f"peer-{len(RESULTS)}.py")
        with open(script, "w") as f:
            f.write(code)
        measure(name, lambda base, url, script=script, out=out: subprocess.Popen(
            [VENV_PY, script, url, out], stderr=subprocess.DEVNULL), counter_file(out), "no")

    ceiling = RESULTS[0]["events_per_s"]
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {DURATION:.0f} s each after"
          f" {WARMUP:.0f} s of warm-up, load average before: {open('/proc/loadavg').read().split()[0]}\n")
    print(markdown_table(
        ["consumer", "events/s", "ratio to the ceiling", "CPU s per million events", "peak RSS MB", "stores the events"],
        [[r["consumer"], f"{r['events_per_s']:,.0f}", f"{r['events_per_s'] / ceiling:.2f}",
          f"{r['cpu_s_per_million']:.1f}", f"{r['peak_rss_mb']:.0f}", r["stores"]] for r in RESULTS]))
    if pg:
        print(f"\nPostgreSQL at {pg_where}; its server's processes are not in complyd's CPU and memory figures.")
    else:
        print(f"\nNo PostgreSQL row: {pg_where}.")
    sys.stdout.flush()


def store_mb(d):
    """The size of complyd's store files (the main file, the handlers'
    files and their WALs) in `d`."""
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith("store.db")) / 1e6


def soak(seconds, every):
    """SOAK=SECONDS: complyd's row alone for that long, one line every
    `every` seconds: how its rate changes as its store grows."""
    sim, base, url = start_sim(18700)
    store, drop = pg_or_exit() if INTO_PG else (None, lambda: None)
    proc = complyd_run(base, url, store=store)
    rows = []
    try:
        time.sleep(WARMUP)
        ensure_running(proc, "complyd", os.path.join(complyd_dir(), "run.log"))
        pids = tree(proc.pid)
        c0, cpu0, t0, start = committed(base), cpu_s(pids), time.time(), time.time()
        while time.time() - start < seconds:
            time.sleep(every)
            c1, cpu1, t1 = committed(base), cpu_s(pids), time.time()
            n = c1 - c0
            rows.append([f"{t1 - start:.0f}", f"{c1:,}", f"{n / (t1 - t0):,.0f}",
                         f"{(cpu1 - cpu0) / n * 1e6:.1f}" if n else "-",
                         f"{peak_rss_mb(pids):.0f}", "-" if INTO_PG else f"{store_mb(complyd_dir()):,.0f}"])
            print("  " + " | ".join(rows[-1]), file=sys.stderr)
            c0, cpu0, t0 = c1, cpu1, t1
    finally:
        kill_tree(proc)
        sim.terminate()
        sim.wait()
        drop()
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, after {WARMUP:.0f} s of warm-up\n")
    print(markdown_table(
        ["seconds", "events committed", "events/s", "CPU s per million events", "peak RSS MB", "store MB"], rows))


RESULTS = []
if os.environ.get("SOAK"):
    soak(float(os.environ["SOAK"]), float(os.environ.get("SOAK_EVERY", 10)))
    sys.exit(0)
if os.environ.get("COMPLYD_BUILDS"):
    builds()
    sys.exit(0)
if os.environ.get("THROUGHPUT", "1") != "0":
    throughput()
if os.environ.get("FAULT_MIX", "1") != "0":
    import bench_peers_faults
    bench_peers_faults.run(COMPLYD, VENV_PY, WORK, USER, PASSWORD)
