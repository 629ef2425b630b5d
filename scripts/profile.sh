#!/usr/bin/env bash
# Where each proxy's CPU goes, kernel or user space, per unit of work: the profile behind the
# issue-16 targets that scripts/bench.sh reports as missed (README, "Why the missed targets are
# missed").
#
# Each proxy runs pinned to core 0 as in scripts/bench.sh, under the same loads from core 1 (wrk
# keep-alive and Connection: close GETs of a 1 KB file from nginx, 50 connections; CONNECT
# setups to the bench sink, 32 in flight). While a load runs, `perf record -e cpu-clock` samples
# every thread of the proxy; its CPU time comes from /proc/PID/stat as in the bench. Printed per
# workload and proxy:
#   CPU us/unit   proxy CPU time (user + system) / units served
#   kernel %      share of the samples in the kernel: system calls, and the loopback peers'
#                 receive path, which runs in softirq on the sending core and so is charged to
#                 the proxy that sends
#   kernel us     CPU us/unit x kernel share: what a proxy with no user space at all would cost
#   user us       the rest: the proxy's own code and its libraries
#   system calls  the five largest, by share of all samples (children included; the entry
#                 point's name, whichever of __x64_sys_X, __sys_X, ksys_X a stack shows)
#
# cpu-clock is a software clock: it works in virtual machines without hardware counters. There,
# time spent with interrupts off is charged to the point where they come back on (commonly
# _raw_spin_unlock_irqrestore, in wake-ups of the peer on the other core), which is still kernel.
#
# Usage: scripts/profile.sh            (root, or kernel.perf_event_paranoid <= 1)
# Knobs (environment):
#   PROFILE_PROXIES ["smolproxy ats tinyproxy"], PROFILE_WORKLOADS ["keepalive close setup"]
#   PROFILE_SECS [4]         seconds per load
#   PROFILE_SMOLPROXY=path   profile this binary instead of building target/release/smolproxy
#   PROFILE_KEEP=dir         keep perf.data files (perf report -i dir/NAME.data) in dir
set -euo pipefail
shopt -s inherit_errexit

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/sbin:/sbin"

proxies="${PROFILE_PROXIES:-smolproxy ats tinyproxy}"
workloads="${PROFILE_WORKLOADS:-keepalive close setup}"
secs="${PROFILE_SECS:-4}"
ready_tenths=300

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'profile: %s\n' "$*" >&2; exit 1; }

for tool in perf wrk nginx; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install linux-perf wrk nginx-light)"
done
[ "$(nproc)" -ge 2 ] || die "two cores are needed: the proxy on core 0, the load on core 1"
case " $proxies " in *" tinyproxy "*) command -v tinyproxy >/dev/null || die "tinyproxy is missing" ;; esac
case " $proxies " in *" ats "*) command -v traffic_server >/dev/null ||
    die "traffic_server is missing (apt-get install trafficserver, or PROFILE_PROXIES without ats)" ;; esac

target="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "${PROFILE_SMOLPROXY:-}" ]; then
    smolproxy="$(realpath "$PROFILE_SMOLPROXY")"
    [ -x "$smolproxy" ] || die "PROFILE_SMOLPROXY=$PROFILE_SMOLPROXY is not an executable"
else
    say "building the release binary"
    cargo build --release --quiet --bin smolproxy
    smolproxy="$target/release/smolproxy"
fi
cargo build --release --quiet --example bench
bench="$target/release/examples/bench"

work="$(mktemp -d /tmp/smolproxy-profile.XXXXXX)"
chmod 755 "$work"
# shellcheck source=scripts/bench/procs.sh disable=SC1091
. "$root/scripts/bench/procs.sh"

pin_proxy=(taskset -c 0)
pin_load=(taskset -c 1)

origin_port="$("$bench" freeport)"
nginx_origin "$origin_port" 4096
start nginx "${pin_load[@]}" nginx -p "$work" -c "$work/nginx.conf"
wait_port nginx "$origin_port"
origin="127.0.0.1:$origin_port"

start_sink "${pin_load[@]}" "$bench" sink

printf 'wrk.path = "http://%s/1k"\nwrk.headers["Host"] = "%s"\n' "$origin" "$origin" \
    >"$work/keepalive.lua"
printf 'wrk.path = "http://%s/1k"\nwrk.headers["Host"] = "%s"\nwrk.headers["Connection"] = "close"\n' \
    "$origin" "$origin" >"$work/close.lua"

# start_proxy NAME: starts proxy NAME on core 0; sets $proxy_pid and $proxy_addr.
start_proxy() {
    local port
    port="$("$bench" freeport)"
    case "$1" in
        smolproxy)
            start "$1" "${pin_proxy[@]}" "$smolproxy" --listen "127.0.0.1:$port" \
                --connect-ports any --quiet --max-connections 20000
            ;;
        tinyproxy)
            tinyproxy_conf "$work/tinyproxy.conf" "$port"
            start "$1" "${pin_proxy[@]}" tinyproxy -d -c "$work/tinyproxy.conf"
            ;;
        ats)
            start "$1" "${pin_proxy[@]}" "$root/scripts/bench/trafficserver.sh" "$port" "$work/ats"
            ;;
    esac
    # shellcheck disable=SC2154 # set by start (procs.sh)
    proxy_pid=$last_pid
    proxy_addr="127.0.0.1:$port"
    wait_port "$1" "$port"
}

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
clk_tck="$(getconf CLK_TCK)"

# load WORKLOAD: runs it from core 1 against $proxy_addr and prints the units served.
load() {
    local out="$work/load.out"
    case "$1" in
        keepalive | close)
            timeout $((secs + 30)) "${pin_load[@]}" wrk -t1 -c50 -d"${secs}s" \
                -s "$work/$1.lua" "http://$proxy_addr/" >"$out" 2>&1 || true
            awk '/ requests in / { print $1 }' "$out"
            ;;
        setup)
            timeout $((secs + 30)) "${pin_load[@]}" "$bench" setups "$proxy_addr" "$sink" 32 \
                "$secs" client >"$out" 2>&1 || true
            sed -n 's/.*ok=\([0-9]*\).*/\1/p' "$out" | head -n1
            ;;
    esac
}

printf '\n| workload | proxy | CPU us/unit | kernel %% | kernel us | user us | largest system calls (%% of samples) |\n'
printf '|---|---|---:|---:|---:|---:|---|\n'
for proxy in $proxies; do
    start_proxy "$proxy"
    for workload in $workloads; do
        data="$work/$proxy-$workload.data"
        t0="$(ticks "$proxy_pid")"
        perf record -q -e cpu-clock -F 1999 -g -p "$proxy_pid" -o "$data" \
            >"$work/perf.out" 2>&1 &
        perf_pid=$!
        sleep 0.3
        units="$(load "$workload")"
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        t1="$(ticks "$proxy_pid")"
        if [ -z "$units" ] || [ "$units" -eq 0 ]; then die "$workload through $proxy served nothing"; fi
        kernel="$(perf report -i "$data" --stdio -q --sort dso -g none 2>/dev/null |
            awk '/\[kernel\./ { sub("%", "", $1); k += $1 } END { printf "%.1f", k }')"
        calls="$(perf report -i "$data" --stdio -q --children --sort symbol -g none 2>/dev/null |
            awk '$3 == "[k]" && $4 ~ /^(__x64_sys_|__sys_|ksys_|do_epoll_)/ && n < 5 {
                     sub("%", "", $1); name = $4
                     sub("^(__x64_sys_|__sys_|ksys_|do_)", "", name); sub("[.].*$", "", name)
                     # One name per system call: epoll_pwait runs do_epoll_wait, accept runs
                     # __sys_accept4.
                     sub("^epoll_pwait2?$", "epoll_wait", name); sub("^accept4$", "accept", name)
                     if (!(name in seen)) { seen[name] = 1
                         printf "%s%s %.1f", (n++ ? ", " : ""), name, $1 } }')"
        awk -v w="$workload" -v p="$proxy" -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$units" \
            -v k="$kernel" -v c="$calls" 'BEGIN {
                us = t / hz * 1e6 / n
                printf "| %s | %s | %.1f | %.1f | %.1f | %.1f | %s |\n",
                    w, p, us, k, us * k / 100, us * (100 - k) / 100, c
            }'
        say "$workload through $proxy: $units units"
        [ -z "${PROFILE_KEEP:-}" ] || { mkdir -p "$PROFILE_KEEP"; cp "$data" "$PROFILE_KEEP/"; }
    done
    stop "$proxy_pid"
done
