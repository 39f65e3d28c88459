#!/usr/bin/env python3
"""What the store redesign proposed in BENCHMARKS.md ("What 0.75 of the
ceiling would take") could save, measured at the SQL level before anyone
builds it: the status handler's tombstone writes as today (each
transaction's sorted deletes inserted into the keyed `tombstones` table, the
new ones queued in `content_pending`) against appending them to a log in
arrival order and merging the log into `tombstones` later in one sorted
pass. The SQL does the loops (no per-statement overhead: that is the same
for both), on the settings complyd uses (WAL, synchronous = NORMAL, a
512 KiB page cache), with Python's own SQLite.

    python3 scripts/bench_tombstone_log.py [TOMBSTONES_STORED] [random|recent]   # 1,000,000 random

20 transactions of 50,000 deletes each, 60 % of them repeats of stored
tombstones and 40 % new ids; prints the CPU and wall time an event of each
way, and of the merge. The new ids are drawn from the whole id space
(`random`, a backfill or a sweep of old posts), or (`recent`) above every
stored one, as X's time-ordered ids are when the deletes name posts newer
than any deleted before.
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import time
N0 = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000   # tombstones already stored
B, NB = 50_000, 20                                           # batch size, batches
RECENT = (sys.argv[2] if len(sys.argv) > 2 else "random") == "recent"
TOP = 1 << 62
def db(path):
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f): os.remove(f)
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-512;"
                    "CREATE TABLE tombstones (id INTEGER PRIMARY KEY, reason INTEGER NOT NULL);"
                    "CREATE TABLE content_pending (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL);"
                    "CREATE TABLE log (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL);"
                    "CREATE TABLE known (k INTEGER PRIMARY KEY, id INTEGER NOT NULL);")
    c.execute("BEGIN")
    c.execute(f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {N0}) "
              f"INSERT INTO known (k, id) SELECT i, abs(random()) % {TOP} FROM s")
    c.execute("INSERT OR IGNORE INTO tombstones SELECT id, 1 FROM known ORDER BY id")
    c.execute("COMMIT"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return c
def batches(c):
    # 60 % repeats of stored tombstones, 40 % new ids, sorted (as StatusBatch sorts)
    out = []
    # recent: each batch's new ids lie above the last batch's, like time
    new_ids = f"abs(random()) % {TOP}"
    for b in range(NB):
        if RECENT:
            new_ids = f"{TOP + b * TOP // 1000} + abs(random()) % {TOP // 1000}"
        c.execute("DROP TABLE IF EXISTS temp.b%d" % b)
        c.execute(f"CREATE TEMP TABLE b{b} AS SELECT id FROM ("
                  f" SELECT id FROM known WHERE k IN (SELECT 1 + abs(random()) % {N0} FROM"
                  f"  (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {B*6//10}) SELECT i FROM s))"
                  f" UNION ALL SELECT {new_ids} FROM"
                  f"  (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {B*4//10}) SELECT i FROM s))"
                  " ORDER BY id")
        out.append(f"temp.b{b}")
    return out
def timed(label, c, stmts_per_batch, bs, total_events):
    t = time.process_time(); w = time.time()
    for b in bs:
        c.execute("BEGIN")
        for s in stmts_per_batch: c.execute(s.format(b=b))
        c.execute("COMMIT")
    cpu, wall = time.process_time() - t, time.time() - w
    print(f"{label}: {cpu / total_events * 1e6:.2f} us CPU an event, {wall / total_events * 1e6:.2f} us wall")
path = os.path.join(tempfile.mkdtemp(), "t.db")
c = db(path); bs = batches(c); ev = B * NB
timed("keyed (today)", c, ["CREATE TEMP TABLE IF NOT EXISTS n (id INTEGER PRIMARY KEY)", "DELETE FROM n",
      "INSERT INTO n SELECT id FROM {b} WHERE id NOT IN (SELECT id FROM tombstones)",
      "INSERT OR IGNORE INTO tombstones SELECT id, 1 FROM {b}",
      "INSERT INTO content_pending (id) SELECT id FROM n"], bs, ev)
c.close()
c = db(path); bs = batches(c)
timed("append to a log", c, ["INSERT INTO log (id) SELECT id FROM {b}"], bs, ev)
t = time.process_time(); w = time.time()
c.execute("BEGIN")
c.execute("INSERT INTO content_pending (id) SELECT DISTINCT id FROM log WHERE id NOT IN (SELECT id FROM tombstones) ORDER BY id")
c.execute("INSERT OR IGNORE INTO tombstones SELECT id, 1 FROM log ORDER BY id")
c.execute("DELETE FROM log")
c.execute("COMMIT")
cpu, wall = time.process_time() - t, time.time() - w
print(f"  then merging the log in one sorted pass: {cpu / ev * 1e6:.2f} us CPU an event, {wall / ev * 1e6:.2f} us wall")
c.close()
shutil.rmtree(os.path.dirname(path))
