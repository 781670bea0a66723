#!/usr/bin/env python3
"""Plots and tables from a results file of scripts/run_benchmarks.sh (JSON lines).

Usage: python3 scripts/plot_benchmarks.py [RESULTS] [--out DIR] [--tables]

  RESULTS   the JSON-lines file (default docs/results/benchmarks.jsonl)
  --out     where the PNGs go (default docs/img)
  --tables  also print the Markdown tables of docs/BENCHMARKS.md to stdout

PNGs written:
  append_throughput.png   records/s vs payload size, pstream against each peer and the
                          persist ceiling; one panel per (threads, batch)
  append_latency.png      p50 / p99 / p99.9 acknowledgement latency vs payload size
  append_ratios.png       pstream / peer throughput ratio (same run, interleaved), with the
                          targets of issue 7
  recovery.png            recovery seconds per GiB vs live data, the memory floor, the target
  disk_throughput.png     file-based peers on a real disk (only when the run has disk rows)

Needs matplotlib (pip install matplotlib).
"""

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIZES = [64, 256, 1024, 4096]
COLORS = {
    "pstream": "#1f77b4",
    "pmemlog": "#d62728",
    "fdatasync": "#2ca02c",
    "okaywal": "#ff7f0e",
    "ceiling": "#7f7f7f",
}
# Targets of issue 7 as (payload, threads, batch, baseline) -> least pstream/peer ratio.
RATIO_TARGETS = {
    (64, 1, 1, "pmemlog"): 2.5,
    (64, 2, 1, "pmemlog"): 4.0,
    (64, 1, 16, "pmemlog"): 1.5,
}


def load(path):
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                sys.exit(f"{path}:{number}: not JSON: {error}")
    return rows


def is_shm(row, shm_dir):
    return row.get("dir", shm_dir) == shm_dir


def append_rows(rows, shm_dir):
    return [r for r in rows if r.get("bench") == "append" and is_shm(r, shm_dir)]


def collect(rows):
    """(threads, batch) -> system -> size -> list of rows (pstream: one per peer run)."""
    table = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        key = (r["threads"], r["batch"])
        size = r["payload_bytes"]
        table[key]["pstream"][size].append(
            {"ops": r["ops_per_sec"], "lat": r["latency_ns"], "run": r}
        )
        table[key]["ceiling"][size].append({"ops": r["ceiling_ops_per_sec"], "run": r})
        if r.get("baseline"):
            table[key][r["baseline"]][size].append(
                {"ops": r["baseline_ops_per_sec"], "lat": r["baseline_latency_ns"], "run": r}
            )
    return table


def median(values):
    return statistics.median(values) if values else float("nan")


def panel_keys(table):
    return sorted(table.keys())


def systems_of(panel):
    order = ["pstream", "pmemlog", "okaywal", "fdatasync"]
    return [s for s in order if s in panel]


def plot_throughput(table, out):
    keys = panel_keys(table)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        panel = table[key]
        for system in systems_of(panel) + ["ceiling"]:
            if system == "ceiling" and key[1] != 1:
                continue  # the ceiling persists one payload per fence: single appends only
            sizes = sorted(panel[system])
            ys = [median([e["ops"] for e in panel[system][s]]) for s in sizes]
            style = "--" if system == "ceiling" else "-"
            label = "persist ceiling" if system == "ceiling" else system
            ax.plot(sizes, ys, style, marker="o", color=COLORS[system], label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(SIZES, [label_size(s) for s in SIZES])
        ax.set_xlabel("payload")
        ax.set_title(f"{key[0]} thread(s), batch {key[1]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("records/s (durable)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Append throughput vs payload size (medians; pstream: one value per peer run)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "append_throughput.png"), dpi=110)
    plt.close(fig)


def plot_latency(table, out):
    keys = panel_keys(table)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    styles = {"p50": "-", "p99": "--", "p999": ":"}
    for ax, key in zip(axes[0], keys):
        panel = table[key]
        for system in systems_of(panel):
            sizes = sorted(panel[system])
            for q, style in styles.items():
                ys = [median([e["lat"][q] for e in panel[system][s]]) for s in sizes]
                label = f"{system} {q}" if q == "p50" or system == "pstream" else None
                ax.plot(sizes, ys, style, marker=".", color=COLORS[system], label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(SIZES, [label_size(s) for s in SIZES])
        ax.set_xlabel("payload")
        ax.set_title(f"{key[0]} thread(s), batch {key[1]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("ack latency per call, ns (solid p50, dashed p99, dotted p99.9)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Acknowledgement latency percentiles (one call = one record or one batch)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "append_latency.png"), dpi=110)
    plt.close(fig)


def ratio_rows(rows):
    """(threads, batch, baseline) -> size -> median ratio_to_baseline."""
    ratios = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("baseline"):
            ratios[(r["threads"], r["batch"], r["baseline"])][r["payload_bytes"]].append(
                r["ratio_to_baseline"]
            )
    return ratios


def plot_ratios(rows, out):
    ratios = ratio_rows(rows)
    order = ["pmemlog", "okaywal", "fdatasync"]
    baselines = sorted({k[2] for k in ratios}, key=lambda b: (order + [b]).index(b))
    configs = sorted({(k[0], k[1]) for k in ratios})
    if not baselines:
        return
    fig, axes = plt.subplots(
        1, len(baselines), figsize=(4.6 * len(baselines), 4.2), squeeze=False
    )
    width = 0.8 / max(1, len(configs))
    for ax, baseline in zip(axes[0], baselines):
        for i, config in enumerate(configs):
            series = ratios.get((config[0], config[1], baseline), {})
            xs = [j + i * width for j, s in enumerate(SIZES) if s in series]
            ys = [median(series[s]) for s in SIZES if s in series]
            ax.bar(xs, ys, width, label=f"{config[0]}t batch {config[1]}")
        for (size, threads, batch, b), target in RATIO_TARGETS.items():
            if b != baseline or (threads, batch) not in configs:
                continue
            i = configs.index((threads, batch))
            x = SIZES.index(size) + i * width
            ax.plot([x - width / 2, x + width / 2], [target, target], color="black", lw=2)
            ax.annotate(f"target {target}x", (x, target), fontsize=7, ha="center",
                        va="bottom")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks([j + width * (len(configs) - 1) / 2 for j in range(len(SIZES))],
                      [label_size(s) for s in SIZES])
        ax.set_xlabel("payload")
        ax.set_title(f"pstream / {baseline}")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("throughput ratio (same run, interleaved)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("pstream over each peer (black bars: targets of issue 7)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "append_ratios.png"), dpi=110)
    plt.close(fig)


def plot_recovery(rows, out):
    reports = [r for r in rows if r.get("bench") == "recovery"]
    if not reports:
        return
    points = sorted(reports[-1]["points"], key=lambda p: p["live_mib"])
    gib = [p["live_payload_bytes"] / 2**30 for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.plot(gib, [p["recovery_seconds"] for p in points], "-o", label="recovery (open)",
              color=COLORS["pstream"])
    left.plot(gib, [p["floor_seconds"] for p in points], "--o",
              label="floor: fresh map + one read", color=COLORS["ceiling"])
    left.plot(gib, [p["floor_warm_seconds"] for p in points], ":o",
              label="floor: resident read", color="#9467bd")
    left.plot(gib, [0.25 * g for g in gib], "-", color="black", lw=1,
              label="target 0.25 s/GiB")
    ticks = [gib, [label_gib(g) for g in gib]]
    left.set_xscale("log", base=2)
    left.set_xticks(*ticks)
    left.set_yscale("log")
    left.set_xlabel("live data, GiB")
    left.set_ylabel("seconds")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    right.plot(gib, [p["recovery_seconds_per_gib"] for p in points], "-o",
               label="recovery", color=COLORS["pstream"])
    right.plot(gib, [p["floor_seconds_per_gib"] for p in points], "--o",
               label="floor (fresh map)", color=COLORS["ceiling"])
    right.axhline(0.25, color="black", lw=1, label="target")
    right.set_xscale("log", base=2)
    right.set_xticks(*ticks)
    right.set_ylim(bottom=0)
    right.set_xlabel("live data, GiB")
    right.set_ylabel("seconds per GiB")
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3)
    fig.suptitle("Recovery time vs live data, with the memory-bandwidth floor (same run)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "recovery.png"), dpi=110)
    plt.close(fig)


def plot_disk(rows, shm_dir, out):
    disk = [r for r in rows if r.get("bench") == "append" and not is_shm(r, shm_dir)]
    if not disk:
        return
    table = collect(disk)
    keys = panel_keys(table)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        panel = table[key]
        for system in systems_of(panel):
            sizes = sorted(panel[system])
            ys = [median([e["ops"] for e in panel[system][s]]) for s in sizes]
            ax.plot(sizes, ys, "-o", color=COLORS[system], label=system)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([s for s in SIZES if any(s in panel[x] for x in panel)],
                      [label_size(s) for s in SIZES if any(s in panel[x] for x in panel)])
        ax.set_title(f"{key[0]} thread(s), batch {key[1]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("records/s (durable)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Peers with --dir on a disk ({disk[0].get('dir')}); pstream's pool there too")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "disk_throughput.png"), dpi=110)
    plt.close(fig)


def label_gib(gib):
    return f"{gib:g} GiB" if gib >= 1 else f"{gib * 1024:g} MiB"


def label_size(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def fmt_ops(value):
    if value != value:  # NaN
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def print_tables(rows, shm_dir):
    meta = next((r for r in rows if r.get("bench") == "meta"), {})
    if meta:
        print(f"Run: {meta.get('date')}, commit {meta.get('commit')}, {meta.get('cpu')}, "
              f"{meta.get('cores')} cores, {meta.get('rustc')}, "
              f"{meta.get('seconds_per_side')} s per side, pools in {meta.get('dir')}.\n")
    appends = append_rows(rows, shm_dir)
    print("| payload | threads | batch | peer | pstream rec/s | peer rec/s | ratio "
          "| pstream p50/p99/p99.9 ns | peer p50/p99/p99.9 ns | ceiling rec/s "
          "| pstream / ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    order = {"pmemlog": 0, "okaywal": 1, "fdatasync": 2}
    for r in sorted(appends, key=lambda r: (r["payload_bytes"], r["threads"], r["batch"],
                                            order.get(r.get("baseline"), 9))):
        lat = r["latency_ns"]
        blat = r.get("baseline_latency_ns") or {}
        ceiling = fmt_ops(r["ceiling_ops_per_sec"]) if r["batch"] == 1 else "-"
        to_ceiling = f"{r['ratio_to_ceiling']:.2f}" if r["batch"] == 1 else "-"
        print(f"| {label_size(r['payload_bytes'])} | {r['threads']} | {r['batch']} "
              f"| {r.get('baseline') or '-'} | {fmt_ops(r['ops_per_sec'])} "
              f"| {fmt_ops(r.get('baseline_ops_per_sec') or float('nan'))} "
              f"| {r.get('ratio_to_baseline') or float('nan'):.2f}x "
              f"| {lat['p50']}/{lat['p99']}/{lat['p999']} "
              f"| {blat.get('p50', '-')}/{blat.get('p99', '-')}/{blat.get('p999', '-')} "
              f"| {ceiling} | {to_ceiling} |")
    disk = [r for r in rows if r.get("bench") == "append" and not is_shm(r, shm_dir)]
    if disk:
        print(f"\nOn a disk ({disk[0].get('dir')}):\n")
        print("| payload | batch | peer | pstream rec/s | peer rec/s | ratio "
              "| peer p50/p99 ns |")
        print("|---|---|---|---|---|---|---|")
        for r in sorted(disk, key=lambda r: (r["payload_bytes"], r["batch"], r["baseline"])):
            blat = r.get("baseline_latency_ns") or {}
            print(f"| {label_size(r['payload_bytes'])} | {r['batch']} | {r['baseline']} "
                  f"| {fmt_ops(r['ops_per_sec'])} | {fmt_ops(r['baseline_ops_per_sec'])} "
                  f"| {r['ratio_to_baseline']:.2f}x | {blat.get('p50')}/{blat.get('p99')} |")
    for report in [r for r in rows if r.get("bench") == "recovery"][-1:]:
        print("\n| live data | records | recovery s | s/GiB | floor s (fresh map) "
              "| floor s/GiB | resident read GiB/s | recovery / floor | vs target 0.25 s/GiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for p in report["points"]:
            print(f"| {p['live_mib']} MiB | {p['live_records']} | {p['recovery_seconds']:.3f} "
                  f"| {p['recovery_seconds_per_gib']:.3f} | {p['floor_seconds']:.3f} "
                  f"| {p['floor_seconds_per_gib']:.3f} | {p['floor_warm_gib_per_sec']:.2f} "
                  f"| {p['ratio_to_floor']:.2f}x | {p['ratio_to_target']:.2f}x |")
    for report in [r for r in rows if r.get("bench") == "agent"][-1:]:
        print(f"\n| agent ({report['payload_bytes']} B messages) | per second "
              "| deliveries/s | p50 ns | p99 ns | fences per round |")
        print("|---|---|---|---|---|---|")
        for p in report["fanout"]:
            lat = p["latency_ns"]
            print(f"| fan-out to {p['recipients']} | {fmt_ops(p['messages_per_sec'])} "
                  f"| {fmt_ops(p['deliveries_per_sec'])} | {lat['p50']} | {lat['p99']} "
                  f"| {p['fences_per_message']:.1f} |")
        for p in report["ephemeral"]:
            lat = p["latency_ns"]
            print(f"| ephemeral append + {p['mode']} | {fmt_ops(p['round_trips_per_sec'])} "
                  f"| - | {lat['p50']} | {lat['p99']} | {p['fences_per_round_trip']:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="docs/results/benchmarks.jsonl")
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--tables", action="store_true")
    args = parser.parse_args()
    rows = load(args.results)
    meta = next((r for r in rows if r.get("bench") == "meta"), {})
    shm_dir = meta.get("dir", "/dev/shm")
    os.makedirs(args.out, exist_ok=True)
    appends = append_rows(rows, shm_dir)
    if appends:
        table = collect(appends)
        plot_throughput(table, args.out)
        plot_latency(table, args.out)
        plot_ratios(appends, args.out)
    plot_recovery(rows, args.out)
    plot_disk(rows, shm_dir, args.out)
    if args.tables:
        print_tables(rows, shm_dir)
    written = sorted(f for f in os.listdir(args.out) if f.endswith(".png"))
    print(f"wrote {', '.join(written)} in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
