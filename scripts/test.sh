#!/usr/bin/env bash
# Installs what the tests talk to, builds everything, and runs the tests.
#
#   scripts/test.sh [CARGO TEST ARGS...]      e.g. scripts/test.sh tunnel -- --nocapture
#
# Test peers (real clients, proxies and servers the integration tests start on port 0):
#   Debian: curl tinyproxy stunnel4 microsocks squid openssl chromium libnss3-tools haproxy
#           prometheus (promtool) systemd (systemd-analyze) shellcheck busybox logrotate strace
#           make
#   npm:    newman, har-validator, postman-collection (pinned in package.json and
#           package-lock.json, installed into ./node_modules, put on PATH for the tests)
# Each install is skipped when what it brings is already there, so a second run goes straight
# to cargo. Four of the Debian packages come with services (tinyproxy on 8888, squid on 3128,
# haproxy, prometheus on 9090); the tests start their own copies, so the system ones are kept from starting and stopped
# if they run. The last lines printed are cargo test's own summary; the exit status is cargo's.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# Debian package that provides each binary the tests run.
declare -A deb_for=(
    [curl]=curl
    [tinyproxy]=tinyproxy
    [stunnel]=stunnel4
    [microsocks]=microsocks
    [squid]=squid
    [openssl]=openssl
    [chromium]=chromium
    [certutil]=libnss3-tools
    [haproxy]=haproxy
    [promtool]=prometheus
    [systemd-analyze]=systemd
    [shellcheck]=shellcheck
    [busybox]=busybox
    [logrotate]=logrotate
    [strace]=strace
    [make]=make
)
# The system services those packages install, with the pid file each one writes.
declare -A service_pid=(
    [tinyproxy]=/run/tinyproxy/tinyproxy.pid
    [squid]=/run/squid.pid
    [haproxy]=/run/haproxy.pid
    [prometheus]=/run/prometheus/prometheus.pid
)

export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then
        apt-get update -q
        apt_updated=yes
    fi
    # Keep apt from starting the packages' services: invoke-rc.d asks policy-rc.d first, and
    # 101 means "not allowed". A policy-rc.d that was already there is left as it was.
    local made_policy=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=yes
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" || rc=$?
    if [ "$made_policy" = yes ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    return "$rc"
}

step "test peers: Debian packages"
missing=()
for bin in "${!deb_for[@]}"; do
    command -v "$bin" >/dev/null || missing+=("${deb_for[$bin]}")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "all present: ${!deb_for[*]}"
else
    echo "installing: ${missing[*]}"
    apt_install "${missing[@]}"
fi

step "test peers: stopping system services that hold ports (tinyproxy, squid, haproxy, prometheus)"
for svc in "${!service_pid[@]}"; do
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$svc" ]; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
    # If the init script could not stop it, end exactly the process its pid file names.
    pidfile="${service_pid[$svc]}"
    if [ -s "$pidfile" ]; then
        pid="$(head -n1 "$pidfile" | tr -dc 0-9)"
        # Only if that pid is still the service (a stale pid file may name another process).
        if [ -n "$pid" ] && grep -qs "$svc" "/proc/$pid/comm"; then
            echo "stopping system $svc (pid $pid)"
            kill "$pid" 2>/dev/null || true
        fi
    fi
done
echo "done"

step "test peers: npm packages (newman, har-validator, postman-collection)"
if ! command -v npm >/dev/null; then
    echo "npm missing: installing Debian's nodejs and npm"
    apt_install nodejs npm
fi
# npm ci when node_modules is missing or older than the lock file; otherwise nothing to do.
if [ ! -x node_modules/.bin/newman ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    echo "node_modules up to date"
fi
export PATH="$root/node_modules/.bin:$PATH"
echo "newman $(newman --version)"

step "cargo build --all-targets"
cargo build --all-targets

step "cargo test $*"
if [ $# -eq 0 ]; then
    # Doc tests first, then the rest: `cargo test` would print the doc tests (often 0 of them)
    # last, and the closing summary should be the real tests'. --no-fail-fast runs every test
    # binary even after one fails, so one run shows every failure; the exit status is still
    # non-zero if anything failed.
    doc_rc=0
    cargo test --doc --no-fail-fast || doc_rc=$?
    rc=0
    cargo test --lib --bins --tests --no-fail-fast || rc=$?
    [ "$rc" -ne 0 ] || rc=$doc_rc
    exit "$rc"
fi
exec cargo test "$@"
