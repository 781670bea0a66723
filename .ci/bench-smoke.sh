#!/usr/bin/env bash
# Bench smoke for CI: when libpmemlog-dev is installable, builds
# the `pmdk` feature and runs a 0.5 s append interleaved with libpmemlog. Exits 0 unless
# something is genuinely broken (a build fails, or the smoke run fails or prints no ratio);
# a machine without libpmemlog-dev only gets a note. Run from anywhere: ./.ci/bench-smoke.sh
set -euo pipefail

cd "$(dirname "$0")/.."

# The benches themselves are compiled (type-checked, every target) by .ci/run's
# `cargo clippy --all-targets`; BENCH_SMOKE_BUILD=1 also builds them optimized.
if [ "${BENCH_SMOKE_BUILD:-0}" = 1 ]; then
    echo "== cargo bench --workspace --no-run"
    cargo bench --workspace --no-run
fi

# shellcheck source=.ci/pmemlog.sh
source .ci/pmemlog.sh

if install_pmemlog; then
    # The dev profile, every package and the examples: the same profile, features and
    # dev-dependencies as .ci/run's test build, which already built this binary (a no-op
    # there). This is a smoke run, not a measurement.
    echo "== cargo build --workspace --bins --examples --features pstream-cli/pmdk"
    cargo build --workspace --bins --examples --features pstream-cli/pmdk
    target_dir="${CARGO_TARGET_DIR:-target}"
    echo "== pstream bench append --baseline pmemlog (0.5 s smoke)"
    line=$("$target_dir"/debug/pstream bench append --baseline pmemlog --seconds 0.5 \
        --ceiling-seconds 0.1 --pool-mib 64 --json | tail -n 1)
    echo "$line"
    if ! grep -q '"baseline":"pmemlog"' <<<"$line" \
        || ! grep -q '"ratio_to_baseline":[0-9]' <<<"$line"; then
        echo "bench-smoke: the pmemlog smoke printed no ratio" >&2
        exit 1
    fi
else
    echo "note: libpmemlog-dev is not installable here (no apt-get, no root, or no package);"
    echo "      skipping the pmdk feature build and the pmemlog smoke run"
fi

echo "== bench smoke ok"
