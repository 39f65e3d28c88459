#!/usr/bin/env python3
"""What opening a store of an earlier complyd costs: the move to SQLite
schema 8 (PostgreSQL 7) reads every stored post with today's import.

Usage: python3 scripts/bench_schema_move.py [POSTS] [COMPLYD]
  POSTS    posts to import (default 1,000,000): 80 % plain v1.1, 10 % v1.1
           quotes with their copy, 10 % v2 lines with includes
  COMPLYD  the binary (default target/release/complyd)
  COMPLYD_BENCH_PG=postgres://USER@HOST:PORT/DB   the same on PostgreSQL
           (databases complyd_move_* are made from it with createdb, and
           dropped; the server's CPU is not counted in "CPU")

Imports the posts once, then opens two copies of the store marked as the
version before: one whose rows already list what they carry (the move
only reads), one whose rows list nothing (every carrier is imported
again). Prints the wall and CPU seconds of each open and the rows (posts
and their copies) read per second.
"""
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

posts = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
complyd = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "target/release/complyd")
work = tempfile.mkdtemp(prefix="complyd-move-")
lines = os.path.join(work, "posts.jsonl")
rng = random.Random(7)
with open(lines, "w") as f:
    for i in range(posts):
        pid, a = 10**18 + i * 1000, rng.randint(1, 100_000)
        text = f"the words of post {i}, about as long as a post usually is, give or take"
        r = rng.random()
        if r < 0.8:
            f.write(f'{{"id_str":"{pid}","user":{{"id_str":"{a}"}},"text":"{text}","lang":"en"}}\n')
        elif r < 0.9:
            q = pid - 500
            f.write(
                f'{{"id_str":"{pid}","user":{{"id_str":"{a}"}},"text":"{text}","quoted_status_id_str":"{q}",'
                f'"quoted_status":{{"id_str":"{q}","user":{{"id_str":"{a + 1}"}},"text":"quoted {text}"}}}}\n'
            )
        else:
            q = pid - 500
            f.write(
                f'{{"data":{{"id":"{pid}","author_id":"{a}","text":"{text}","referenced_tweets":[{{"type":"quoted","id":"{q}"}}]}},'
                f'"includes":{{"tweets":[{{"id":"{q}","author_id":"{a + 1}","text":"q {text}"}}],"users":[{{"id":"{a}"}}]}}}}\n'
            )
pg = os.environ.get("COMPLYD_BENCH_PG")
if pg:
    # The server's URL without its database: each store is a database of its own.
    server, _, _ = pg.rpartition("/")

    def psql(db, sql):
        out = subprocess.run(["psql", "-qtAX", "-v", "ON_ERROR_STOP=1", f"{server}/{db}", "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    admin = pg.rpartition("/")[2] or "postgres"
    for db in ["complyd_move_base", "complyd_move"]:
        psql(admin, f"DROP DATABASE IF EXISTS {db}")
    psql(admin, "CREATE DATABASE complyd_move_base")
    subprocess.run([complyd, "import", "--db", f"{server}/complyd_move_base", lines], check=True, stdout=subprocess.DEVNULL)
    rows = int(psql("complyd_move_base", "SELECT count(*) FROM posts"))
    for name, unlist in [("rows list all they carry", False), ("rows list nothing", True)]:
        psql(admin, "CREATE DATABASE complyd_move TEMPLATE complyd_move_base")
        if unlist:
            psql("complyd_move", "UPDATE posts SET embeds = NULL WHERE form = 1; DELETE FROM embedded_in; DELETE FROM embedded_users")
        psql("complyd_move", "UPDATE complyd_meta SET value = 6 WHERE key = 'schema_version'")
        psql("complyd_move", "VACUUM ANALYZE")
        t0, r0 = time.monotonic(), os.times()
        subprocess.run([complyd, "gaps", "--db", f"{server}/complyd_move"], check=True, stdout=subprocess.DEVNULL)
        wall, r1 = time.monotonic() - t0, os.times()
        cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
        version = int(psql("complyd_move", "SELECT value FROM complyd_meta WHERE key = 'schema_version'"))
        links = int(psql("complyd_move", "SELECT count(*) FROM embedded_in"))
        left = int(psql("complyd_move", "SELECT count(*) FROM complyd_meta WHERE key LIKE 'move%'"))
        assert version == 7 and left == 0, (version, left)
        print(f"PostgreSQL, {name}: open {wall:.2f} s wall, {cpu:.2f} s CPU, {rows:,} rows, {rows / wall:,.0f} read/s, {links:,} copies listed")
        psql(admin, "DROP DATABASE complyd_move")
    psql(admin, "DROP DATABASE complyd_move_base")
    shutil.rmtree(work)
    sys.exit(0)
base = os.path.join(work, "s.db")
subprocess.run([complyd, "import", "--db", f"sqlite:{base}", lines], check=True, stdout=subprocess.DEVNULL)
c = sqlite3.connect(base)
rows = c.execute("SELECT count(*) FROM posts").fetchone()[0]
c.close()
for name, unlist in [("rows list all they carry", False), ("rows list nothing", True)]:
    db = os.path.join(work, "moved.db")
    for suffix in ["", "-status", "-user"]:
        shutil.copy(base + suffix, db + suffix)
    c = sqlite3.connect(db)
    if unlist:
        c.executescript("UPDATE posts SET embeds = NULL WHERE form = 1; DELETE FROM embedded_in; DELETE FROM embedded_users;")
    c.execute("PRAGMA user_version = 7")
    c.commit()
    c.close()
    os.sync()
    t0, r0 = time.monotonic(), os.times()
    subprocess.run([complyd, "gaps", "--db", f"sqlite:{db}"], check=True, stdout=subprocess.DEVNULL)
    wall, r1 = time.monotonic() - t0, os.times()
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    c = sqlite3.connect(db)
    version = c.execute("PRAGMA user_version").fetchone()[0]
    links = c.execute("SELECT count(*) FROM embedded_in").fetchone()[0]
    c.close()
    assert version == 8, version
    print(f"{name}: open {wall:.2f} s wall, {cpu:.2f} s CPU, {rows:,} rows, {rows / wall:,.0f} read/s, {links:,} copies listed")
    for suffix in ["", "-status", "-user", "-wal", "-shm"]:
        for f in [db + suffix]:
            if os.path.exists(f):
                os.remove(f)
shutil.rmtree(work)
