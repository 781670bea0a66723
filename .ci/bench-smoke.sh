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

# libpmemlog-dev: already there, or installable with apt-get (as root, or with sudo -n).
install_pmemlog() {
    [ -e /usr/include/libpmemlog.h ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || return 1
        sudo=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q libpmemlog-dev >/dev/null 2>&1 && return 0
    # The package lists may be missing on a fresh machine.
    "${sudo[@]}" apt-get update -q >/dev/null 2>&1 || return 1
    "${sudo[@]}" apt-get install -y -q libpmemlog-dev >/dev/null 2>&1
}

if install_pmemlog; then
    # The dev profile reuses the test build: this is a smoke run, not a measurement.
    echo "== cargo build -p pstream-cli --features pmdk"
    cargo build -p pstream-cli --features pmdk
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
