#!/usr/bin/env bash
# How the offline work's rate changes with the store's size (issue 15,
# item 7): import, replay, export and check with 10^5, 10^6 and 10^7 posts
# in the store (each size is N posts over N/10 users plus one user with N
# posts more: 2N in all), measured by `cargo bench --bench core`; and the
# daemon end to end (`cargo bench --bench e2e`, the simulator at full rate
# into `complyd run`'s pipeline and the same store) with the store holding the N
# posts its events name. Prints one table, writes it to bench_scaling.out
# and draws docs/bench_scaling.svg (rate against store size, log scale;
# docs/bench_scaling_postgres.svg for PostgreSQL).
#
# At every size the events are the same work: they name ACTIVE posts
# (100,000 by default) and ACTIVE/10 users, spread evenly over the store, so
# that only the store's size changes from one size to the next. ACTIVE=0
# has them name any post of the store instead: then larger stores also
# receive events for more distinct posts (more new tombstones and state
# rows, more pages written), and the plot goes to *_spread.svg.
#
#   scripts/bench_scaling.sh                          # SQLite, 10^5 10^6 10^7
#   SIZES="100000 1000000" scripts/bench_scaling.sh
#   ACTIVE=0 scripts/bench_scaling.sh                 # events over the whole store
#   COMPLYD_BENCH_DB=postgres://... scripts/bench_scaling.sh   # PostgreSQL
#                                    (the offline work and end to end)
#
# The 10^7 size takes several minutes and about 10 GB of temporary disk.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"100000 1000000 10000000"}
export COMPLYD_BENCH_ACTIVE=${ACTIVE:-100000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in $SIZES; do
    echo "bench_scaling: $n posts (+ $n for the big user)..." >&2
    COMPLYD_BENCH_POSTS=$n COMPLYD_BENCH_SKIP=suspend,writers cargo bench --bench core 2>/dev/null >"$work/core-$n.txt"
    COMPLYD_BENCH_POSTS=$n COMPLYD_BENCH_SECS=${E2E_SECS:-10} COMPLYD_BENCH_CURL=0 COMPLYD_BENCH_PIPELINE=0 \
        COMPLYD_BENCH_STALL_SECS=0 COMPLYD_BENCH_LATENCY_RATE=0 \
        cargo bench --bench e2e 2>/dev/null >"$work/e2e-$n.txt"
done
python3 - "$work" $SIZES <<'EOF' | tee bench_scaling.out
import re, sys
work, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
def rate(text, start):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(start):
            m = re.search(r"([\d,.]+) (posts|events|msgs)/s", cells[1])
            if m:
                return float(m.group(1).replace(",", ""))
            m = re.search(r"p50 ([\d.]+) µs", cells[1])
            if m:
                return 1e6 / float(m.group(1))  # checks a second, from the median
    return None
def e2e_rate(n):
    try:
        text = open(f"{work}/e2e-{n}.txt").read()
    except OSError:
        return None
    m = re.search(r"^end to end \(simulator.*?: ([\d.]+) events/s", text, re.M)
    return float(m.group(1)) if m else None
rows = {"import": "import", "replay": "replay", "export": "export", "check (from the p50)": "check, per id"}
table = {k: [] for k in rows}
E2E = "end to end (daemon, events)"
for n in sizes:
    text = open(f"{work}/core-{n}.txt").read()
    store = "PostgreSQL" if "store: PostgreSQL" in text else "SQLite"
    for k, start in rows.items():
        table[k].append(rate(text, start))
    e = e2e_rate(n)
    if e is not None:
        table.setdefault(E2E, []).append(e)
import os
active = int(os.environ["COMPLYD_BENCH_ACTIVE"])
print(f"store: {store}; posts stored: 2 x N (N over N/10 users, N for one user)"
      + ("; end to end: N posts, the dataset the simulator's events name" if E2E in table else "")
      + (f"; the events name {active:,} of the posts, spread over them" if active else "; the events name any of the posts"))
print()
print("| per second | " + " | ".join(f"N = {n:,}" for n in sizes) + " | last / first |")
print("|---|" + "---|" * (len(sizes) + 1))
for k, vals in table.items():
    ratio = vals[-1] / vals[0] if vals[0] and vals[-1] else float("nan")
    print(f"| {k} | " + " | ".join(f"{v:,.0f}" if v else "?" for v in vals) + f" | {ratio:.2f} |")
# The plot: one line per operation, log-log.
import math
W, H, L, B = 700, 400, 70, 50  # 200 px right of the plot for the labels
xs = [math.log10(n) for n in sizes]
allv = [v for vals in table.values() for v in vals if v]
ylo, yhi = math.floor(math.log10(min(allv))), math.ceil(math.log10(max(allv)))
def px(x): return L + (x - xs[0]) / max(xs[-1] - xs[0], 1e-9) * (W - L - 200)
def py(y): return H - B - (math.log10(y) - ylo) / max(yhi - ylo, 1e-9) * (H - B - 20)
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="14" text-anchor="middle">complyd ({store}): rate against store size</text>']
for e in range(ylo, yhi + 1):
    y = py(10 ** e)
    svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W-200}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L-5}" y="{y+4:.1f}" text-anchor="end">1e{e}/s</text>')
for n, x in zip(sizes, xs):
    svg.append(f'<text x="{px(x):.1f}" y="{H-B+18}" text-anchor="middle">N = {n:,}</text>')
for (k, vals), c in zip(table.items(), colors):
    pts = [(px(x), py(v)) for x, v in zip(xs, vals) if v]
    svg.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)))
    for a, b in pts:
        svg.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>')
    if pts:
        svg.append(f'<text x="{pts[-1][0]+8:.1f}" y="{pts[-1][1]+4:.1f}" fill="{c}">{k}</text>')
svg.append("</svg>")
svg_file = ("docs/bench_scaling_postgres" if store == "PostgreSQL" else "docs/bench_scaling") + ("" if active else "_spread") + ".svg"
open(svg_file, "w").write("\n".join(svg))
print(f"plot: {svg_file}", file=sys.stderr)
EOF
echo "bench_scaling: wrote bench_scaling.out and the plot" >&2
