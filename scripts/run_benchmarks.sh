#!/usr/bin/env bash
# Runs pstream's benchmark matrix and appends one JSON object per line to a results file:
#
#   append:   payloads 64 B, 256 B, 1 KiB, 4 KiB; 1 and 2 threads; single appends and batches
#             of 16; each against every peer this build has (fdatasync always, libpmemlog when
#             libpmemlog-dev is installed, okaywal), interleaved A B A B in the same process
#             run, with the persist ceiling of the same run;
#   disk:     the file-based peers (fdatasync, okaywal) with --dir on a real disk, when
#             DISK_DIR is set (64 B and 4 KiB, 1 thread, single and batched);
#   recovery: open time of pools with 64 MiB to 4 GiB of live data, memory floor beside it;
#   agent:    fan-out to 1, 10, 64 recipients; ephemeral take + ack round trips.
#
# Then plot with: python3 scripts/plot_benchmarks.py RESULTS
#
# Settings (environment): OUT (results file, default docs/results/benchmarks.jsonl; an
# existing file is replaced), SECONDS_PER_SIDE (default 2), DIR (pool directory, default
# /dev/shm), DISK_DIR (unset: skip the disk rows), SIZES_MIB (recovery sizes, default
# 64,256,1024,4096), FEATURES (cargo features; default: okaywal, plus pmdk when libpmemlog
# is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-docs/results/benchmarks.jsonl}
SECONDS_PER_SIDE=${SECONDS_PER_SIDE:-2}
DIR=${DIR:-/dev/shm}
DISK_DIR=${DISK_DIR:-}
SIZES_MIB=${SIZES_MIB:-64,256,1024,4096}

have_pmemlog() {
    [ -e /usr/include/libpmemlog.h ] && ldconfig -p 2>/dev/null | grep -q 'libpmemlog\.so'
}
if [ -z "${FEATURES:-}" ]; then
    FEATURES=okaywal
    if have_pmemlog; then FEATURES=okaywal,pmdk; fi
fi
BASELINES=(fdatasync)
case ",$FEATURES," in *,pmdk,*) BASELINES=(pmemlog "${BASELINES[@]}") ;; esac
case ",$FEATURES," in *,okaywal,*) BASELINES+=(okaywal) ;; esac

echo "== building (features: $FEATURES)" >&2
cargo build --release -p pstream-cli --features "$FEATURES" >&2
BIN=target/release/pstream

mkdir -p "$(dirname "$OUT")"
: > "$OUT"
# One line describing the run, so the results say where they came from.
python3 - "$FEATURES" "$SECONDS_PER_SIDE" "$DIR" >> "$OUT" <<'PY'
import json, os, platform, subprocess, sys, time
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
cpu = ""
try:
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
except OSError:
    pass
print(json.dumps({
    "bench": "meta",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "commit": os.environ.get("COMMIT") or sh("git", "rev-parse", "--short", "HEAD"),
    "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
    "rustc": sh("rustc", "--version"),
    "kernel": platform.release(),
    "cpu": cpu,
    "cores": os.cpu_count(),
    "features": sys.argv[1],
    "seconds_per_side": float(sys.argv[2]),
    "dir": sys.argv[3],
}))
PY

run_append() { # size threads batch baseline dir
    echo "== append $1 B, $2 thread(s), batch $3, vs $4 in $5" >&2
    "$BIN" bench append --size "$1" --threads "$2" --batch "$3" --baseline "$4" \
        --seconds "$SECONDS_PER_SIDE" --dir "$5" --json | tail -n 1 >> "$OUT"
}

for size in 64 256 1024 4096; do
    for threads in 1 2; do
        for batch in 1 16; do
            for baseline in "${BASELINES[@]}"; do
                run_append "$size" "$threads" "$batch" "$baseline" "$DIR"
            done
        done
    done
done

if [ -n "$DISK_DIR" ]; then
    mkdir -p "$DISK_DIR"
    for size in 64 4096; do
        for batch in 1 16; do
            for baseline in "${BASELINES[@]}"; do
                [ "$baseline" = pmemlog ] && continue
                run_append "$size" 1 "$batch" "$baseline" "$DISK_DIR"
            done
        done
    done
fi

echo "== recovery ($SIZES_MIB MiB)" >&2
"$BIN" bench recovery --sizes-mib "$SIZES_MIB" --dir "$DIR" --json | tail -n 1 >> "$OUT"

echo "== agent" >&2
"$BIN" bench agent --dir "$DIR" --json | tail -n 1 >> "$OUT"

echo "== wrote $OUT ($(wc -l < "$OUT") lines)" >&2
