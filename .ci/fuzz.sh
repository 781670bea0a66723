#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for FUZZ_SECONDS (default 20) from
# its committed seed corpus. Needs the nightly toolchain and cargo-fuzz; installs cargo-fuzz
# if it is missing, and skips (exit 0, with a note) when either cannot be had. Exits 1 if a
# target finds a crash (the reproducer is in fuzz/artifacts/<target>/).
# Run from anywhere: ./.ci/fuzz.sh    (FUZZ_SECONDS=60 ./.ci/fuzz.sh for longer runs)
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "note: no nightly toolchain (rustup toolchain install nightly); fuzzing skipped"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked; then
        echo "note: cargo-fuzz could not be installed; fuzzing skipped"
        exit 0
    fi
fi
cargo +nightly --version
cargo +nightly fuzz --version

echo "== cargo +nightly fuzz build"
cargo +nightly fuzz build

# New corpus units go to a scratch directory: only the seeds in corpus/ are committed.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/pstream-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$target"
    # Inputs that once crashed a target are replayed first, with the seeds.
    corpora=("corpus/$target")
    if [[ -d "regressions/$target" ]]; then
        corpora+=("regressions/$target")
    fi
    echo "== fuzz $target (${seconds} s)"
    if cargo +nightly fuzz run "$target" "$scratch/$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1; then
        grep -E "^Done [0-9]+ runs" "$scratch/$target.log" || tail -n 3 "$scratch/$target.log"
    else
        tail -n 40 "$scratch/$target.log"
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz targets failed: ${failed[*]} (reproducers in fuzz/artifacts/)"
    exit 1
fi
echo "== fuzz ok"
