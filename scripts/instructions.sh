#!/usr/bin/env bash
# Instructions (and, with INSTR_STRACE=1, syscalls) per unit of proxy work, for smolproxy and
# tinyproxy: a figure machine noise does not move (issue 16; the README table carries it).
#
# Each proxy runs under `valgrind --tool=callgrind` for an exact number of units of work, once
# with N1 units and once with N2, and the figure per unit is (Ir(N2) - Ir(N1)) / (N2 - N1):
# start-up, shutdown and the readiness probe cancel out. The units, one at a time, sent by the
# bench client (examples/bench.rs) with an exact count:
#   keepalive  absolute-form `GET http://ORIGIN/1k` on one client connection
#              (`bench requests PROXY ORIGIN COUNT keepalive`; tinyproxy closes the client
#              connection after every response, so for it each request is a new connection,
#              as in scripts/bench.sh)
#   close      the same with `Connection: close`, a new client connection per request
#   setup      CONNECT to the bench sink, 16-byte round trip, the client closes first
#              (`bench setups-count PROXY SINK COUNT`, as `bench setups ... client`)
# The origin is nginx-light serving a 1 KB file (keep-alive to the proxy), the tunnel target
# the bench sink, configured as in scripts/bench.sh; neither runs under valgrind.
#
# tinyproxy (Debian's 1.11) serves each connection on a thread of its own in one process;
# callgrind counts every thread of the process in one total, and --trace-children=yes would
# also follow a fork, summed here over every output file. smolproxy runs as in the bench
# (--quiet, one executor thread).
#
# Timing under valgrind differs from a native run (the proxy runs ~50x slower), so how often a
# read finds no data yet can differ a little from a native run. Pinned to one core, the counts
# repeat to about 1-3% from run to run (unpinned they moved 5-10%): the README carries the
# median of three runs.
#
# Knobs (environment):
#   INSTR_SMOLPROXY=path    measure this binary instead of building target/release/smolproxy
#   INSTR_N1 [500], INSTR_N2 [2000]     the two amounts of work
#   INSTR_PROXIES ["smolproxy tinyproxy"], INSTR_WORKLOADS ["keepalive close setup"]
#   INSTR_CPU [0]           the core everything runs on
#   INSTR_STRACE=1          also count syscalls per unit (strace -f -c, same N1/N2 method);
#                           `only` for syscalls alone
#   INSTR_KEEP=dir          keep the callgrind/strace output files in dir
set -euo pipefail
shopt -s inherit_errexit

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/sbin:/sbin"

n1="${INSTR_N1:-500}"
n2="${INSTR_N2:-2000}"
proxies="${INSTR_PROXIES:-smolproxy tinyproxy}"
workloads="${INSTR_WORKLOADS:-keepalive close setup}"
strace_too="${INSTR_STRACE:-0}"
# Everything on one core: the proxy, its peers and the client then take turns in much the same
# order every run, so how often a read finds nothing yet (and the proxy waits) repeats too.
pin=(taskset -c "${INSTR_CPU:-0}")
# Longest wait for a server to come up, in tenths of a second (valgrind starts slowly).
ready_tenths=600

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'instructions: %s\n' "$*" >&2; exit 1; }

for tool in valgrind tinyproxy nginx; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install valgrind tinyproxy nginx-light)"
done
[ "$strace_too" = 0 ] || command -v strace >/dev/null || die "strace is missing"
[ "$n2" -gt "$n1" ] || die "INSTR_N2 must be larger than INSTR_N1"

# Built where cargo builds (CARGO_TARGET_DIR is honoured).
target="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "${INSTR_SMOLPROXY:-}" ]; then
    smolproxy="$(realpath "$INSTR_SMOLPROXY")"
    [ -x "$smolproxy" ] || die "INSTR_SMOLPROXY=$INSTR_SMOLPROXY is not an executable"
else
    say "building the release binary"
    cargo build --release --quiet --bin smolproxy
    smolproxy="$target/release/smolproxy"
fi
cargo build --release --quiet --example bench
bench="$target/release/examples/bench"

work="$(mktemp -d /tmp/smolproxy-instr.XXXXXX)"
chmod 755 "$work"
# shellcheck source=scripts/bench/procs.sh
. "$root/scripts/bench/procs.sh"

# --- peers -------------------------------------------------------------------------------

origin_port="$("$bench" freeport)"
nginx_origin "$origin_port" 4096
start nginx "${pin[@]}" nginx -p "$work" -c "$work/nginx.conf"
wait_port nginx "$origin_port"
origin="127.0.0.1:$origin_port"

start_sink "${pin[@]}" "$bench" sink

# --- runs --------------------------------------------------------------------------------

# proxy_cmd NAME PORT: the command line that runs proxy NAME listening on PORT.
proxy_cmd() {
    case "$1" in
        smolproxy)
            echo "$smolproxy --listen 127.0.0.1:$2 --connect-ports any --quiet --max-connections 20000"
            ;;
        tinyproxy)
            # As scripts/bench.sh runs it: foreground, no log noise, CONNECT allowed to the sink.
            tinyproxy_conf "$work/tinyproxy-$2.conf" "$2"
            echo "tinyproxy -d -c $work/tinyproxy-$2.conf"
            ;;
    esac
}

# client PROXYADDR WORKLOAD COUNT: the exact amount of work, through the proxy.
client() {
    case "$2" in
        keepalive) "${pin[@]}" "$bench" requests "$1" "$origin" "$3" keepalive ;;
        close) "${pin[@]}" "$bench" requests "$1" "$origin" "$3" close ;;
        setup) "${pin[@]}" "$bench" setups-count "$1" "$sink" "$3" ;;
    esac
}

# measure TOOL PROXY WORKLOAD COUNT: runs PROXY under TOOL (callgrind or strace) for COUNT
# units of WORKLOAD and prints the total: instructions (Ir) or syscalls. It runs in a command
# substitution, whose EXIT trap is not the script's, so it stops its own proxy on failure.
measure() {
    local tool="$1" proxy="$2" workload="$3" count="$4" port out pid
    port="$("$bench" freeport)"
    out="$work/$tool.$proxy.$workload.$count"
    mkdir -p "$out"
    local cmd
    read -r -a cmd <<<"$(proxy_cmd "$proxy" "$port")"
    case "$tool" in
        callgrind)
            start "$tool-$proxy" "${pin[@]}" valgrind --tool=callgrind --trace-children=yes \
                --callgrind-out-file="$out/callgrind.out.%p" "${cmd[@]}"
            ;;
        strace)
            start "$tool-$proxy" "${pin[@]}" strace -f -c -o "$out/strace" "${cmd[@]}"
            ;;
    esac
    pid=$last_pid
    wait_port "$tool-$proxy" "$port"
    client "127.0.0.1:$port" "$workload" "$count" >"$out/client" 2>&1 ||
        { stop "$pid"; die "$proxy $workload $count: $(cat "$out/client")"; }
    # Under strace the proxy is strace's child: it is ended, and strace then writes its count
    # and exits (a SIGTERM to strace would only detach it).
    if [ "$tool" = strace ]; then
        kill "$(pgrep -P "$pid")" 2>/dev/null || true
    fi
    stop "$pid"
    case "$tool" in
        callgrind)
            # Every process's total (with --trace-children, one file per process).
            awk '/^summary:/ { s += $2 } END { printf "%d\n", s }' "$out"/callgrind.out.*
            ;;
        strace)
            awk '$NF == "total" { print $4 + 0 }' "$out/strace"
            ;;
    esac
    if [ -n "${INSTR_KEEP:-}" ]; then
        mkdir -p "$INSTR_KEEP"
        cp -r "$out" "$INSTR_KEEP/"
    fi
}

# per_unit TOOL PROXY WORKLOAD: (total(N2) - total(N1)) / (N2 - N1).
per_unit() {
    local a b
    a="$(measure "$@" "$n1")"
    b="$(measure "$@" "$n2")"
    awk -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.1f\n", (b - a) / (n2 - n1) }'
}

declare -A result
case "$strace_too" in
    0) tools=(callgrind) ;;
    only) tools=(strace) ;;
    *) tools=(callgrind strace) ;;
esac
for tool in "${tools[@]}"; do
    for w in $workloads; do
        for p in $proxies; do
            say "$tool: $p, $w, $n1 and $n2 units"
            result[$tool.$p.$w]="$(per_unit "$tool" "$p" "$w")"
        done
    done
done

# --- report ------------------------------------------------------------------------------

label() {
    case "$1" in
        keepalive) echo "keep-alive GET 1 KB" ;;
        close) echo "Connection: close GET 1 KB" ;;
        setup) echo "CONNECT setup (16-byte round trip, client closes)" ;;
    esac
}
echo
echo "Per unit of work, from $n1 and $n2 units one at a time ((total(N2) - total(N1)) / (N2 - N1));"
echo "smolproxy: $smolproxy, tinyproxy $(tinyproxy -v 2>&1 | awk '{ print $2 }')."
for tool in "${tools[@]}"; do
    what="instructions (callgrind Ir)"
    [ "$tool" = callgrind ] || what="syscalls (strace -f -c)"
    echo
    printf '| %s per unit | %s | smol ÷ tiny |\n' "$what" "${proxies// / | }"
    printf '|---|%s---:|\n' "$(for _ in $proxies; do printf -- '---:|'; done)"
    for w in $workloads; do
        row="| $(label "$w") |"
        for p in $proxies; do row+=" ${result[$tool.$p.$w]} |"; done
        ratio="-"
        if [ -n "${result[$tool.smolproxy.$w]:-}" ] && [ -n "${result[$tool.tinyproxy.$w]:-}" ]; then
            ratio="$(awk -v s="${result[$tool.smolproxy.$w]}" -v t="${result[$tool.tinyproxy.$w]}" \
                'BEGIN { if (t > 0) printf "%.2f", s / t; else print "-" }')"
        fi
        echo "$row $ratio |"
    done
done
