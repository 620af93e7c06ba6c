#!/usr/bin/env python3
"""Report and plot for bench/scale.sh.

Usage: scale-plot.py SCALE.csv [--png OUT.png] [--title TEXT]

Prints the markdown tables (time per file, median over the rounds that
succeeded, in microseconds; the daemon's peak RSS, the maximum over the
phases and rounds) on stdout. With --png, also draws time per file against
file count (log x, log y), one line per filesystem, one panel per operation
and layout; that needs matplotlib (bench/scale.sh installs it into a venv).
A failed or skipped cell says so, with the errno and where it stopped.
"""
import argparse
import csv
import statistics
import sys
from collections import defaultdict

PHASES = ["create", "stat", "readdir", "unlink"]
ORDER = ["ext4", "gocryptfs", "securefs", "ssefs-aes256"]
REF = "gocryptfs"


def load(path):
    ok = defaultdict(list)        # (sys, layout, n, phase) -> [us per file]
    bad = {}                      # (sys, layout, n, phase) -> "fail: note" / "skipped: note"
    rss = defaultdict(float)      # (sys, layout, n) -> max MiB
    systems, layouts, sizes = [], [], set()
    with open(path) as f:
        for row in csv.DictReader(f):
            s, l, n, ph = row["system"], row["layout"], int(row["files"]), row["phase"]
            if s not in systems:
                systems.append(s)
            if l not in layouts:
                layouts.append(l)
            sizes.add(n)
            k = (s, l, n, ph)
            if row["status"] == "ok":
                ok[k].append(float(row["us_per_file"]))
            elif k not in bad or row["status"] == "fail":
                bad[k] = f"{row['status']}: {row['note']}" if row["note"] else row["status"]
            if row["rss_mib"] not in ("", "NA"):
                rss[(s, l, n)] = max(rss[(s, l, n)], float(row["rss_mib"]))
    systems.sort(key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    return ok, bad, rss, systems, layouts, sorted(sizes)


def fmt(v):
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def human(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def report(ok, bad, rss, systems, layouts, sizes):
    med = {k: statistics.median(v) for k, v in ok.items()}
    rounds = max((len(v) for v in ok.values()), default=0)
    out = [""]
    out.append(f"Time per file in µs, median of up to {rounds} round(s) (lower is better); "
               f"in brackets the ratio to {REF} at the same size and layout. "
               "Each phase starts cold (unmount, drop caches, mount; ext4: drop caches). "
               "Peak RSS: the FUSE daemon's VmHWM, the maximum over the phases and rounds.")
    for l in layouts:
        out.append("")
        out.append(f"### {l}" + (" (one directory)" if l == "flat" else " (1000 files per directory)" if l == "tree" else ""))
        out.append("")
        out.append("| system | files | " + " | ".join(f"{p} (µs/file)" for p in PHASES) + " | peak RSS (MiB) |")
        out.append("|---|---:|" + "---:|" * len(PHASES) + "---:|")
        for s in systems:
            for n in sizes:
                if not any((s, l, n, p) in med or (s, l, n, p) in bad for p in PHASES):
                    continue
                cells = []
                for p in PHASES:
                    k = (s, l, n, p)
                    if k in med:
                        c = fmt(med[k])
                        g = med.get((REF, l, n, p))
                        if g and s != REF:
                            c += f" ({med[k] / g:.2f}x)"
                        if k in bad:
                            c += f" [also {bad[k]}]"
                    else:
                        c = bad.get(k, "—").replace("|", "/")
                    cells.append(c)
                r = rss.get((s, l, n))
                cells.append(f"{r:.1f}" if r else "—")
                out.append(f"| {s} | {human(n)} | " + " | ".join(cells) + " |")
    # growth: cost per file at the largest size each system finished vs the smallest
    out.append("")
    out.append("Growth (time per file at the largest size that finished ÷ at the smallest size):")
    out.append("")
    for l in layouts:
        for s in systems:
            parts = []
            for p in PHASES:
                ns = [n for n in sizes if (s, l, n, p) in med]
                if len(ns) >= 2:
                    parts.append(f"{p} {med[(s, l, ns[-1], p)] / med[(s, l, ns[0], p)]:.2f}x "
                                 f"({human(ns[0])}→{human(ns[-1])})")
            if parts:
                out.append(f"- {l}, {s}: " + "; ".join(parts))
    return "\n".join(out), med


def plot(med, bad, systems, layouts, sizes, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    colors = {"ext4": "tab:gray", "gocryptfs": "tab:blue", "securefs": "tab:green",
              "ssefs-aes256": "tab:red"}
    markers = {"ext4": "o", "gocryptfs": "s", "securefs": "^", "ssefs-aes256": "D"}
    fig, axes = plt.subplots(len(layouts), len(PHASES), figsize=(4 * len(PHASES), 3.4 * len(layouts)),
                             squeeze=False, sharex=True)
    for i, l in enumerate(layouts):
        for j, p in enumerate(PHASES):
            ax = axes[i][j]
            for s in systems:
                xs = [n for n in sizes if (s, l, n, p) in med]
                if not xs:
                    continue
                ys = [med[(s, l, n, p)] for n in xs]
                ax.plot(xs, ys, marker=markers.get(s, "o"), markerfacecolor="none", label=s, color=colors.get(s))
                # a size it failed at: a cross on the x axis side
                for n in sizes:
                    if (s, l, n, p) in bad and bad[(s, l, n, p)].startswith("fail"):
                        ax.plot([n], [ys[-1]], marker="x", markersize=10, color=colors.get(s))
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{p}, {l}")
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("µs per file")
            if i == len(layouts) - 1:
                ax.set_xlabel("files")
            ax.set_xticks(sizes)
            ax.set_xticklabels([human(n) for n in sizes])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    fig.suptitle(title, y=0.99, fontsize=11)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.90))
    fig.savefig(png, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--png")
    ap.add_argument("--title", default="time per file vs file count (median; log-log)")
    args = ap.parse_args()
    ok, bad, rss, systems, layouts, sizes = load(args.csv)
    text, med = report(ok, bad, rss, systems, layouts, sizes)
    print(text)
    if args.png:
        plot(med, bad, systems, layouts, sizes, args.png, args.title)
        print(f"\nPlot: {args.png}")


if __name__ == "__main__":
    sys.exit(main())
