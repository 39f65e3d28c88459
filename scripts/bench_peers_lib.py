"""What scripts/bench_peers.py and scripts/bench_peers_faults.py share: the
process tree of a consumer, stopping it, and starting `complyd run`."""

import os
import signal
import subprocess


def tree(pid):
    """pid and its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo.extend(kids.get(q, []))
    return out


def kill_tree(proc):
    """SIGTERM to the consumer and its descendants; SIGKILL after 15 s."""
    for q in reversed(tree(proc.pid)):
        try:
            os.kill(q, signal.SIGTERM)
        except OSError:
            pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_complyd(complyd, base, user, password, d, listen, stream_extra="", extra="", store=None):
    """`complyd run` against the simulator at `base`, its store (SQLite in
    `d` unless `store` is another store URL) and log in `d`, its HTTP API on
    `listen`; `stream_extra` goes in [stream], `extra` after it (whole
    sections)."""
    store = store or f"sqlite:{d}/store.db"
    # The connection requests of earlier runs count against X's 10 a minute
    # (src/limiter.rs): each run keeps its own, or a store without a
    # directory of its own (PostgreSQL) would share the working directory's
    # and wait for the last run's to expire.
    if "[limiter]" not in extra:
        extra += f'\n[limiter]\nstate_file = "{d}/connections.json"\n'
    with open(f"{d}/run.toml", "w") as f:
        f.write(f"""[stream]
url = "{base}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json"
account = "demo"
username = "{user}"
password_env = "COMPLYD_BENCH_PW"
{stream_extra}
{extra}
[store]
url = "{store}"
[http]
listen = "{listen}"
[log]
level = "warn"
""")
    env = dict(os.environ, COMPLYD_BENCH_PW=password)
    return subprocess.Popen([complyd, "run", "--config", f"{d}/run.toml"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(f"{d}/run.log", "w"))


def ensure_running(proc, name, log=None):
    """Stops the benchmark when a consumer has already exited (a port in
    use, a bad setting): its figures would otherwise read as a consumer that
    got nothing, or as whatever else answers on its port."""
    if proc.poll() is None:
        return
    why = ""
    if log and os.path.exists(log):
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        why = f": {lines[-1]}" if lines else ""
    raise SystemExit(f"{name} exited with status {proc.returncode} during the warm-up{why}")


def markdown_table(head, rows):
    """A Markdown table: `head` the column names, `rows` lists of cells."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
