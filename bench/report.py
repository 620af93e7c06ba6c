#!/usr/bin/env python3
"""Turn bench/run.sh's per-round CSV into the markdown table.

Usage: report.py RESULTS.csv [--systems "ext4 bindfs ..."] [--seq-rw read]
                 [--settings TEXT] [--no-targets] [--ref gocryptfs]

Each cell is "median (ratio to gocryptfs)"; peak RSS is the maximum over the
rounds instead of the median. Ratios are value / gocryptfs value for every
column, so for time and RSS columns lower is better.
"""
import argparse
import csv
import statistics
import sys
from collections import defaultdict

ALL_SYSTEMS = "ext4 bindfs gocryptfs securefs ssefs-aes256 ssefs-sm4 ssefs-kms ssefs-aes256-4k pthp pthp-uring".split()

# metric, header, unit, higher_is_better
def columns(seq_rw):
    return [
        ("seq_write", "seq write", "MB/s", True),
        ("read_cold", "seq read cold", "MB/s", True),
        ("read_warm", "seq read warm", "MB/s", True),
        ("untar", "untar", "s", False),
        ("ls_lR", "ls -lR cold", "s", False),
        ("read_all", "read all cold", "s", False),
        ("rm_rf", "rm -rf", "s", False),
        ("randread_4k", "4K rand read", "IOPS", True),
        ("randwrite_4k", "4K rand write", "IOPS", True),
        (f"seq1m_4j_{seq_rw}", f"1M seq {seq_rw} x4", "MB/s", True),
        ("peak_rss", "daemon peak RSS", "MiB", False),
    ]

# targets for ssefs relative to gocryptfs in the same run (from the project's issue)
# metric -> (op, ratio)   op ">=" on ratio for throughput, "<=" for time
TARGETS = {
    "seq_write": (">=", 1.8),
    "read_cold": (">=", 1.5),
    "untar": ("<=", 0.7),
    "ls_lR": ("<=", 0.5),
    "read_all": ("<=", 0.8),
    "rm_rf": ("<=", 0.7),
    "randread_4k": (">=", 1.0),
    "randwrite_4k": (">=", 1.0),
}
RSS_LIMIT_MIB = 128.0


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--systems", default=" ".join(ALL_SYSTEMS))
    ap.add_argument("--seq-rw", default="read")
    ap.add_argument("--settings", default="")
    ap.add_argument("--no-targets", action="store_true")
    ap.add_argument("--ref", default="gocryptfs",
                    help="the system every ratio is taken against (default gocryptfs)")
    args = ap.parse_args()

    vals = defaultdict(list)  # (system, metric) -> [values]
    rounds = set()
    with open(args.csv) as f:
        for row in csv.DictReader(f):
            rounds.add(row["round"])
            try:
                v = float(row["value"])
            except ValueError:
                continue
            vals[(row["system"], row["metric"])].append(v)

    systems = [s for s in args.systems.split() if any(k[0] == s for k in vals)]
    cols = columns(args.seq_rw)
    cols = [c for c in cols if any((s, c[0]) in vals for s in systems)]

    def summary(s, m):
        xs = vals.get((s, m))
        if not xs:
            return None
        return max(xs) if m == "peak_rss" else statistics.median(xs)

    out = []
    out.append("")
    ref = args.ref
    out.append(f"Median of {len(rounds)} round(s); each cell is `median (ratio to {ref})`. "
               f"Ratio = value / {ref} value: for MB/s and IOPS higher is better, "
               "for the time columns (s) and RSS lower is better. "
               "Peak RSS is the FUSE daemon's VmHWM, the maximum over the rounds (ext4 has no daemon). "
               "ssefs-sm4 and ssefs-kms run the write/read workloads only.")
    if args.settings:
        out.append("")
        out.append(args.settings)
    out.append("")
    head = ["system"] + [f"{h} ({u}){'' if hib else ' ↓'}" for _, h, u, hib in cols]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * len(cols)) + "|")
    for s in systems:
        cells = [s]
        for m, _, _, _ in cols:
            v = summary(s, m)
            g = summary(ref, m)
            if v is None:
                cells.append("—")
            elif g:
                cells.append(f"{fmt(v)} ({v / g:.2f}x)")
            else:
                cells.append(fmt(v))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("↓ = lower is better.")

    if not args.no_targets and ref == "gocryptfs" and "gocryptfs" in systems:
        out.append("")
        out.append("Targets for ssefs (relative to gocryptfs in this run):")
        out.append("")
        for s in [x for x in systems if x.startswith("ssefs-")]:
            misses, passes = [], []
            for m, (op, want) in TARGETS.items():
                v, g = summary(s, m), summary("gocryptfs", m)
                if v is None or not g:
                    continue
                r = v / g
                ok = r >= want if op == ">=" else r <= want
                label = f"{m} {r:.2f}x (want {op}{want}x)"
                if m == "read_cold":
                    b = summary("bindfs", m)
                    if b:
                        ok = ok and v >= b
                        label += f", {fmt(v)} vs bindfs {fmt(b)} MB/s (want ≥ bindfs)"
                (passes if ok else misses).append(label)
            rss = summary(s, "peak_rss")
            if rss is not None:
                label = f"peak_rss {fmt(rss)} MiB (want ≤{RSS_LIMIT_MIB:.0f})"
                (passes if rss <= RSS_LIMIT_MIB else misses).append(label)
            out.append(f"- {s}: " + ("misses: " + "; ".join(misses) if misses else "meets all")
                       + (f" — meets: " + "; ".join(passes) if passes and misses else ""))
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
