# Sourced by .ci/run and .ci/bench-smoke.sh: `install_pmemlog` makes libpmemlog-dev (the
# pmdk peer's C library) present, or returns 1 when it cannot.
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
