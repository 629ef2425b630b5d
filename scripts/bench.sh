#!/usr/bin/env bash
# Measures smolproxy side by side with tinyproxy and Apache Traffic Server (ATS), mitmproxy's
# mitmdump for interception, microsocks and dante for SOCKS5, and a direct connection where that
# means something, on this machine, in one run, as SPEC.md §9 asks, and prints Markdown tables:
# HTTP and CONNECT, core utilisation during those runs, interception, SOCKS5.
#
#   scripts/bench.sh
#
# Environment knobs (defaults in brackets):
#   BENCH_REPS [3]           repetitions of each workload; the table shows median (min–max)
#   BENCH_SECS [5]           length of each timed run (wrk, setups)
#   BENCH_BULK_BYTES [2147483648]   bytes each way through the one bulk tunnel
#   BENCH_TUNNELS [10000]    idle tunnels for the large memory point (lowered to fit the
#                            open-file limit: the proxy needs two descriptors per tunnel)
#   BENCH_SMOLPROXY []       measure this smolproxy binary instead of building the tree's
#                            (for comparing a change against the tree: build it elsewhere)
#   BENCH_INTERCEPT_SECS [3/5 of BENCH_SECS, rounded up]   length of each intercepted run
#   BENCH_MITMPROXY [11.0.2] the mitmproxy version pip installs into target/bench-venv (the
#                            newest for Python 3.11; mitmproxy 12 needs 3.12)
#   BENCH_SOCKS_SECS [3/5 of BENCH_SECS, rounded up]   length of each SOCKS5 setups run
#   BENCH_SOCKS_BULK_BYTES [BENCH_BULK_BYTES / 4]       bytes each way through the SOCKS5 bulk
#                            tunnel (microsocks copies 1 KB per read: a quarter keeps it short)
#   BENCH_ATS [1]            0 leaves Apache Traffic Server out (its columns show "–")
#
# Workloads (SPEC.md §9, issues 7 and 16), each run for smolproxy, tinyproxy, ATS and direct,
# alternating, BENCH_REPS times:
#   1. keep-alive HTTP: wrk -t1 -c50, absolute-form GET of a 1 KB file: req/s, p50, p99
#   2. Connection: close per request, same otherwise: req/s
#   3. CONNECT bulk: one tunnel moving BENCH_BULK_BYTES each way at once: MB/s each way
#   4. CONNECT setups/s with 32 in flight: open, CONNECT, 16-byte round trip, close
#   5. memory: VmRSS of a fresh idle proxy, then with 1,000 and BENCH_TUNNELS idle tunnels
#      (tinyproxy runs a thread per connection and stops at MaxClients 1000: 1,000 only; ATS
#      stops accepting near 9,000 tunnels at 20,000 descriptors: as many as it can hold, see
#      ats_tunnels below)
#   6. binary size (scripts/size.sh)
# ATS is Debian's trafficserver 9.2 (traffic_server alone, no traffic_manager) as a plain
# forward proxy: no cache, no remap, one network thread, Via both ways, no transaction log,
# loopback only, run by scripts/bench/trafficserver.sh with the settings of
# scripts/bench/trafficserver.records.config.in (both say why each one is there). It gets one
# network thread because smolproxy and tinyproxy get one core; its other threads (cache AIO,
# tasks, log) are pinned to core 0 with it and counted in its CPU.
# Core utilisation: for every timed run of workloads 1-4 the script reads the cpu0 and cpu1
# lines of /proc/stat before and after, and records each core's busy share of the ticks that
# passed, busy = all ticks but idle and iowait. A second table shows the median per workload
# and target as "core 0 / core 1" in percent. Core 0 runs the proxy, core 1 wrk or the bench
# client and the origin, so a row whose core 1 is near 100% was capped by the load side: there
# throughput cannot separate the proxies, and the proxy-CPU-per-unit rows are the comparison.
# The figures are whole-core, so anything else the machine runs counts too (see the load
# average above the tables). "direct" shows how busy the load side is with no proxy at all.
# then, through interception (SPEC.md §10), for smolproxy, mitmdump and direct (TLS straight
# to the origin), alternating, BENCH_REPS times, each BENCH_INTERCEPT_SECS long:
#   7. intercepted keep-alive: 16 sessions, each CONNECT, TLS with the proxy, then GETs of the
#      1 KB file back to back: req/s, p50, p99
#   8. new intercepted TLS sessions/s with 16 in flight: new TCP, CONNECT, full handshake (no
#      resumption), one GET, close
# The origin for these is the same nginx, over TLS (an openssl-made origin CA and a P-256
# certificate for 127.0.0.1); both proxies verify it against that CA. tinyproxy cannot
# intercept. mitmdump runs from a venv (target/bench-venv) as its users run it, with one change:
# connection_strategy=lazy, so that it dials the origin at the first request as smolproxy does,
# instead of before answering the CONNECT.
# Then, over SOCKS5 (SPEC.md §11) for smolproxy, microsocks, dante and direct, alternating,
# BENCH_REPS times (about a minute at the defaults, memory included):
#   9. SOCKS5 bulk: one tunnel moving BENCH_SOCKS_BULK_BYTES each way at once: MB/s each way
#  10. SOCKS5 setups/s with 32 in flight: open, greeting (no auth), CONNECT to the sink's IPv4
#      address, 16-byte round trip, the sink closes, then the client; BENCH_SOCKS_SECS long.
#      The sink closes first here (the CONNECT rows have the client close first) because dante
#      binds each outgoing socket to its external address before connecting: closing first,
#      it would leave a bound port in TIME_WAIT per setup, which Linux does not hand out again
#      for 60 s, and at its rate the ephemeral range ran out within two repetitions, failing
#      dante (reply 0x03) and then every other client's connect (EADDRNOTAVAIL). With the sink
#      closing first the TIME_WAITs are on the sink's and the proxies' listening ports.
#  11. memory: PSS of a fresh idle server, then with 1,000 idle SOCKS5 tunnels
# smolproxy answers SOCKS on its --listen port; microsocks (Debian's, as it comes: 1.0.3 logs
# a line per connection to stderr, here a file) runs a thread per client; dante
# (dante-server's danted) runs in the foreground with -N 1, one mother process, which still
# forks its own pool of negotiate, request and io children (io children take 32 clients each),
# so its CPU and memory are summed over its children: CPU of children that ended counts
# through the mother's cutime/cstime, and memory is PSS (shared pages counted once) rather
# than RSS, which would count the shared libraries once per child. Its config: no
# authentication, clients and destinations on 127.0.0.0/8 only, CONNECT only, errors logged.
# The proxy under test runs alone on core 0; wrk, the bench client (examples/bench.rs) and the
# origin (nginx-light, or the bench sink for tunnels) share core 1. Everything listens on
# 127.0.0.1 ports picked at run time; nothing else is ever a target. Every run has a time
# limit, and every process started here is ended on exit.
set -euo pipefail
shopt -s inherit_errexit

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

reps="${BENCH_REPS:-3}"
secs="${BENCH_SECS:-5}"
bulk_bytes="${BENCH_BULK_BYTES:-2147483648}"
tunnels_many="${BENCH_TUNNELS:-10000}"
tunnels_few=1000
# Requests in flight for wrk, CONNECT setups in flight.
wrk_conns=50
setups_inflight=32
# Intercepted runs: shorter than the others (three targets, two workloads, about a minute at
# the defaults in all). Sessions kept alive; new sessions in flight.
intercept_secs="${BENCH_INTERCEPT_SECS:-$(((secs * 3 + 4) / 5))}"
intercept_conns=16
sessions_inflight=16
mitmproxy_version="${BENCH_MITMPROXY:-11.0.2}"
# SOCKS5 runs: shorter setups runs and a smaller bulk transfer than the HTTP ones, so that the
# three servers and direct add about a minute at the defaults.
socks_secs="${BENCH_SOCKS_SECS:-$(((secs * 3 + 4) / 5))}"
socks_bulk_bytes="${BENCH_SOCKS_BULK_BYTES:-$((bulk_bytes / 4))}"
# Longest wait for a server to come up or a hold client to report, in tenths of a second.
ready_tenths=300
# Longest any one load-generator command may run before it is stopped, in seconds.
run_limit=120

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------

export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
ats="${BENCH_ATS:-1}"
[ "$ats" = 0 ] || command -v traffic_server >/dev/null || missing+=(trafficserver)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v microsocks >/dev/null || missing+=(microsocks)
command -v danted >/dev/null || missing+=(dante-server)
command -v taskset >/dev/null || missing+=(util-linux)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt)"
    # Keep apt from starting the packages' system services (invoke-rc.d asks policy-rc.d).
    made_policy=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=yes
    fi
    apt-get update -q >&2
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        rc=$?
    [ "$made_policy" = no ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
fi
# The trafficserver package's own service (installed before, or started by a package manager
# without policy-rc.d) would take CPU on either core during the runs; the bench runs its own.
if [ "$ats" != 0 ] && service trafficserver status >/dev/null 2>&1; then
    say "stopping the trafficserver service (the bench runs its own traffic_server)"
    service trafficserver stop >&2 || die "could not stop the trafficserver service"
fi

if [ "$(nproc)" -ge 2 ]; then
    pin_proxy=(taskset -c 0)
    pin_load=(taskset -c 1)
else
    say "only one core: running unpinned"
    pin_proxy=()
    pin_load=()
fi

# Two descriptors per tunnel in the proxy, plus a few of its own.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit="$(ulimit -n)"
fd_capped=no
if [ "$fd_limit" != unlimited ] && [ $(((fd_limit - 64) / 2)) -lt "$tunnels_many" ]; then
    fitted=$(((fd_limit - 64) / 2 / 100 * 100))
    say "open-file limit is $fd_limit (hard; raising it needs CAP_SYS_RESOURCE):" \
        "measuring $fitted idle tunnels instead of $tunnels_many"
    tunnels_many="$fitted"
    fd_capped=yes
fi
# ATS keeps 192 descriptors for itself and stops accepting once 1.1 × its open connections
# (client and origin sockets both) reach the rest: 9,003 tunnels at 20,000 descriptors, of which
# it is given the largest round hundred, if that is below tunnels_many.
ats_tunnels="$tunnels_many"
if [ "$fd_limit" != unlimited ]; then
    fitted=$(((fd_limit - 192) * 10 / 11 / 2 / 100 * 100))
    [ "$fitted" -ge "$ats_tunnels" ] || ats_tunnels="$fitted"
fi

if [ -n "${BENCH_SMOLPROXY:-}" ]; then
    smolproxy="$(realpath "$BENCH_SMOLPROXY")"
    [ -x "$smolproxy" ] || die "BENCH_SMOLPROXY=$BENCH_SMOLPROXY is not an executable"
    say "measuring $smolproxy; building the bench helper"
else
    say "building release binary and the bench helper"
    cargo build --release --quiet --bin smolproxy
    smolproxy="$root/target/release/smolproxy"
fi
cargo build --release --quiet --example bench
bench="$root/target/release/examples/bench"

# mitmdump in a venv of its own, made once and kept with the build (target/ is not in git).
# A failure here leaves its rows empty rather than stopping the other measurements.
venv="$root/target/bench-venv"
mitmdump="$venv/bin/mitmdump"
mitm_problem=""
if ! "$mitmdump" --version 2>/dev/null | grep -qx "Mitmproxy: $mitmproxy_version"; then
    say "installing mitmproxy $mitmproxy_version into $venv (pip)"
    if ! { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2; } ||
        ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "mitmproxy==$mitmproxy_version" >&2; then
        mitm_problem="pip could not install mitmproxy $mitmproxy_version into $venv"
        say "$mitm_problem: its rows stay empty"
    fi
fi

# --- processes -------------------------------------------------------------------------------

work="$(mktemp -d /tmp/smolproxy-bench.XXXXXX)"
chmod 755 "$work"
# shellcheck source=scripts/bench/procs.sh
. "$root/scripts/bench/procs.sh"

freeport() { "$bench" freeport; }

# rss_kb PID: resident memory of a process and its direct children, in KB.
rss_kb() {
    local total=0 pid kb
    for pid in "$1" $(pgrep -P "$1" || true); do
        kb="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# pss_kb PID: proportional set size of a process and its direct children, in KB. Pages shared
# between them count once in all, where summed RSS would count dante's libraries and
# copy-on-write heap once per child process.
pss_kb() {
    local total=0 pid kb
    for pid in "$1" $(pgrep -P "$1" || true); do
        kb="$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

threads_of() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }

# procs_threads PID: how many processes (it and its direct children) and threads in all.
procs_threads() {
    local procs=1 threads pid
    threads="$(threads_of "$1")"
    for pid in $(pgrep -P "$1" || true); do
        procs=$((procs + 1))
        threads=$((threads + $(threads_of "$pid" 2>/dev/null || echo 0)))
    done
    echo "$procs $threads"
}

alive() { kill -0 "$1" 2>/dev/null || die "$2 exited during the benchmark (see above)"; }

# --- peers -----------------------------------------------------------------------------------

say "starting origin (nginx-light, 1 KB file, plain and TLS) and the tunnel sink on core 1"
origin_port="$(freeport)"
tls_origin_port="$(freeport)"

# The TLS origin's CA and certificate (P-256, IP SAN 127.0.0.1, two days), which the proxies
# and the direct client trust; what webpki and OpenSSL check: a CA with basicConstraints and
# keyCertSign, a leaf that is not a CA, for serverAuth.
openssl_quiet() {
    openssl "$@" 2>"$work/openssl.err" || { cat "$work/openssl.err" >&2; die "openssl $1 failed"; }
}
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$work/origin-ca-key.pem" -out "$work/origin-ca.pem" \
    -subj "/CN=smolproxy bench origin CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl_quiet req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/origin-key.pem" -out "$work/origin.csr" -subj "/CN=127.0.0.1"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1" >"$work/origin.ext"
openssl_quiet x509 -req -in "$work/origin.csr" -CA "$work/origin-ca.pem" \
    -CAkey "$work/origin-ca-key.pem" -set_serial "0x$(openssl rand -hex 8)" -days 2 \
    -extfile "$work/origin.ext" -out "$work/origin.pem"
# One process (no master): pinned and measured as one, and no user switch is needed. The origin
# of the intercepted runs is the same file over TLS, keep-alive as above.
nginx_origin "$origin_port" 16384 "    server {
        listen 127.0.0.1:$tls_origin_port ssl backlog=4096;
        ssl_certificate $work/origin.pem;
        ssl_certificate_key $work/origin-key.pem;
        root $work/www;
        location / { }
    }"
start nginx "${pin_load[@]}" nginx -p "$work" -c "$work/nginx.conf"
nginx_pid=$last_pid
wait_port nginx "$origin_port"
wait_port nginx "$tls_origin_port"
origin="127.0.0.1:$origin_port"
tls_origin="127.0.0.1:$tls_origin_port"

start_sink "${pin_load[@]}" "$bench" sink

say "starting smolproxy and tinyproxy on core 0"
start smolproxy "${pin_proxy[@]}" "$smolproxy" --listen 127.0.0.1:0 --connect-ports any --quiet \
    --max-connections 20000
smol_pid=$last_pid
smol_addr="$(listening_addr smolproxy)"

# tinyproxy as its users run it: foreground, no log noise, CONNECT allowed to the sink
# (tinyproxy_conf, scripts/bench/procs.sh).
tiny_port="$(freeport)"
tinyproxy_conf "$work/tinyproxy.conf" "$tiny_port"
start tinyproxy "${pin_proxy[@]}" tinyproxy -d -c "$work/tinyproxy.conf"
tiny_pid=$last_pid
wait_port tinyproxy "$tiny_port"
tiny_addr="127.0.0.1:$tiny_port"

# start_ats NAME: a fresh ATS on core 0 (scripts/bench/trafficserver.sh, which execs
# traffic_server: the PID is the proxy's) writing under $work/NAME; sets $ats_pid, $ats_addr.
start_ats() {
    local port
    say "starting ATS ($1) on core 0"
    port="$(freeport)"
    start "$1" "${pin_proxy[@]}" "$root/scripts/bench/trafficserver.sh" "$port" "$work/$1"
    ats_pid=$last_pid
    wait_port "$1" "$port"
    ats_addr="127.0.0.1:$port"
    # Its threads must have kept the pin (see trafficserver.sh on hwloc): say so if not.
    if [ ${#pin_proxy[@]} -gt 0 ]; then
        local moved
        moved="$(awk '/^Cpus_allowed_list:/ && $2 != "0" { n++ } END { print n + 0 }' \
            "/proc/$ats_pid"/task/*/status 2>/dev/null || echo "?")"
        [ "$moved" = 0 ] || note "ATS ($1): $moved thread(s) allowed off core 0; its rows are not comparable"
    fi
}
ats_pid="" ats_addr=""

# The SOCKS5 servers, started in their own section below.
micro_addr="" micro_pid="" dante_addr="" dante_pid=""

addr_of() {
    case "$1" in
        smolproxy) echo "$smol_addr" ;;
        tinyproxy) echo "$tiny_addr" ;;
        ats) echo "$ats_addr" ;;
        mitmdump) echo "$mitm_addr" ;;
        microsocks) echo "$micro_addr" ;;
        dante) echo "$dante_addr" ;;
        direct) echo direct ;;
    esac
}

# socks_via TARGET: the bench client's PROXY argument for a SOCKS5 tunnel through TARGET.
socks_via() {
    if [ "$1" = direct ]; then echo direct; else echo "socks5://$(addr_of "$1")"; fi
}

pid_of() {
    case "$1" in
        smolproxy) echo "$smol_pid" ;;
        tinyproxy) echo "$tiny_pid" ;;
        ats) echo "$ats_pid" ;;
        mitmdump) echo "$mitm_pid" ;;
        microsocks) echo "$micro_pid" ;;
        dante) echo "$dante_pid" ;;
        direct) echo "" ;;
    esac
}

# CPU time (user + system, all threads) a proxy has used so far, in clock ticks. Throughput
# depends on whatever else the machine runs; CPU time per unit of work much less so. dante
# works in child processes: the live ones are read one by one, and the ended ones count in the
# parent's cutime + cstime once it has reaped them (for the other proxies both are zero).
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() {
    local total=0 pid
    [ -n "$1" ] || { echo 0; return 0; }
    [ -r "/proc/$1/stat" ] || die "a proxy (pid $1) exited during the benchmark"
    total="$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat")"
    for pid in $(pgrep -P "$1" || true); do
        # A child may end between pgrep and here.
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
# record_cpu METRIC TARGET TICKS_BEFORE UNITS: proxy CPU microseconds per unit of work.
record_cpu() {
    local pid after
    pid="$(pid_of "$2")"
    [ -n "$pid" ] || return 0
    after="$(cpu_ticks "$pid")"
    [ "${4:-0}" != 0 ] || return 0
    record "$1" "$2" "$(awk -v t=$((after - $3)) -v hz="$clk_tck" -v n="$4" \
        'BEGIN { printf "%.3f", t * 1e6 / hz / n }')"
}

# core_ticks: "BUSY0 TOTAL0 BUSY1 TOTAL1", the ticks cores 0 and 1 have spent so far from the
# cpu0 and cpu1 lines of /proc/stat (user nice system idle iowait irq softirq steal guest
# guest_nice; guest time is already in user and nice). Busy is all but idle and iowait.
core_ticks() {
    awk '$1 == "cpu0" || $1 == "cpu1" {
        t = $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9
        printf "%d %d ", t - $5 - $6, t
    }' /proc/stat
}
# record_cores METRIC TARGET BEFORE: how busy each core was, in percent, since BEFORE (a
# core_ticks line), as METRIC.core0 and METRIC.core1. Only when the proxy and the load side
# are pinned to cores 0 and 1.
record_cores() {
    local b0 t0 b1 t1 a0 u0 a1 u1
    [ ${#pin_proxy[@]} -gt 0 ] || return 0
    read -r b0 t0 b1 t1 <<<"$3"
    read -r a0 u0 a1 u1 <<<"$(core_ticks)"
    record "$1.core0" "$2" "$(busy_pct $((a0 - b0)) $((u0 - t0)))"
    record "$1.core1" "$2" "$(busy_pct $((a1 - b1)) $((u1 - t1)))"
}
busy_pct() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", (t > 0) ? 100 * b / t : 0 }'; }

# --- results ---------------------------------------------------------------------------------

results="$work/results"
notes="$work/notes"
: >"$results"
: >"$notes"
# record METRIC TARGET VALUE
record() { echo "$1 $2 $3" >>"$results"; }
note() { echo "$*" >>"$notes"; say "note: $*"; }
[ -z "$mitm_problem" ] || note "$mitm_problem"

# bounded CMD...: runs a load generator on core 1 with a hard time limit.
bounded() { timeout --kill-after=5 "$run_limit" "${pin_load[@]}" "$@"; }

# order_for REP [OTHER]: the order of targets turns each repetition, so none always runs
# first or last. OTHER is the proxy smolproxy is set against (tinyproxy unless given).
order_for() {
    local other="${2:-tinyproxy}"
    case $(($1 % 3)) in
        0) echo smolproxy "$other" direct ;;
        1) echo "$other" direct smolproxy ;;
        2) echo direct smolproxy "$other" ;;
    esac
}

# rotate REP NAME...: the NAMEs turned by REP places, as order_for does for three.
rotate() {
    local k=$(($1 % ($# - 1)))
    shift
    local names=("$@")
    echo "${names[@]:k}" "${names[@]:0:k}"
}

to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

# Absolute-form requests through a proxy: wrk connects to the proxy and asks for the origin's
# URL. Direct runs use the same script with origin-form.
cat >"$work/proxied.lua" <<EOF
wrk.path = "http://$origin/1k"
wrk.headers["Host"] = "$origin"
EOF
cat >"$work/direct.lua" <<EOF
wrk.path = "/1k"
wrk.headers["Host"] = "$origin"
EOF

# wrk_run WORKLOAD TARGET REP [WRK ARGS...]
wrk_run() {
    local workload="$1" target="$2" rep="$3" url script out
    shift 3
    if [ "$target" = direct ]; then
        url="http://$origin/"
        script="$work/direct.lua"
    else
        url="http://$(addr_of "$target")/"
        script="$work/proxied.lua"
    fi
    out="$work/wrk-$workload-$target-$rep.txt"
    local ticks cores
    ticks="$(cpu_ticks "$(pid_of "$target")")"
    cores="$(core_ticks)"
    bounded wrk -t1 -c"$wrk_conns" -d"${secs}s" --latency -s "$script" "$@" "$url" >"$out" 2>&1 ||
        note "$workload $target run $rep: wrk exited with status $?"
    record_cores "$workload" "$target" "$cores"
    local rps p50 p99 non2xx errors
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    p50="$(awk '$1 == "50%" { print $2 }' "$out")"
    p99="$(awk '$1 == "99%" { print $2 }' "$out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    errors="$(sed -n 's/^ *Socket errors: //p' "$out")"
    [ -z "$non2xx" ] || note "$workload $target run $rep: $non2xx non-2xx/3xx responses"
    [ -z "$errors" ] || note "$workload $target run $rep: socket errors: $errors"
    record "$workload.rps" "$target" "${rps:-0}"
    record_cpu "$workload.cpu" "$target" "$ticks" "$(awk '/ requests in / { print $1 }' "$out")"
    if [ "$workload" = keepalive ]; then
        record keepalive.p50 "$target" "$(to_ms "${p50:-0}")"
        record keepalive.p99 "$target" "$(to_ms "${p99:-0}")"
    fi
    say "$workload $target run $rep: ${rps:-?} req/s, p50 ${p50:-?}, p99 ${p99:-?}"
}

# bulk_run PREFIX TARGET REP VIA BYTES: one tunnel through VIA (the bench client's PROXY
# argument) moving BYTES each way at once; metrics are named PREFIX.bulk.* ("" for CONNECT).
bulk_run() {
    local prefix="$1" target="$2" rep="$3" via="$4" bytes="$5" out line ticks cores
    out="$work/${prefix}bulk-$target-$rep.txt"
    ticks="$(cpu_ticks "$(pid_of "$target")")"
    cores="$(core_ticks)"
    if bounded "$bench" bulk "$via" "$sink" "$bytes" >"$out" 2>&1; then
        record_cores "${prefix}bulk" "$target" "$cores"
        line="$(sed -n 's/.*mbps=//p' "$out")"
        record "${prefix}bulk.mbps" "$target" "$line"
        # Per MB relayed, counting both directions.
        record_cpu "${prefix}bulk.cpu" "$target" "$ticks" $((2 * bytes / 1000000))
        say "${prefix}bulk $target run $rep: $line MB/s each way"
    else
        note "${prefix}bulk $target run $rep failed: $(tr '\n' ' ' <"$out")"
    fi
}

# setups_run PREFIX TARGET REP VIA SECS CLOSER: tunnels opened through VIA, $setups_inflight
# at a time, each with one round trip and closed first by CLOSER (client or sink), for SECS;
# metrics are named PREFIX.setups.*.
setups_run() {
    local prefix="$1" target="$2" rep="$3" via="$4" run_secs="$5" closer="$6" out rate errors ticks
    local cores
    out="$work/${prefix}setups-$target-$rep.txt"
    ticks="$(cpu_ticks "$(pid_of "$target")")"
    cores="$(core_ticks)"
    if bounded "$bench" setups "$via" "$sink" "$setups_inflight" "$run_secs" "$closer" \
        >"$out" 2>&1; then
        record_cores "${prefix}setups" "$target" "$cores"
        rate="$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' "$out")"
        errors="$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' "$out")"
        [ "${errors:-0}" -eq 0 ] || note "${prefix}setups $target run $rep: $errors failed: $(grep -v '^setups ok' "$out" | head -n1)"
        record "${prefix}setups.rate" "$target" "${rate:-0}"
        record_cpu "${prefix}setups.cpu" "$target" "$ticks" "$(sed -n 's/^setups ok=\([0-9]*\).*/\1/p' "$out")"
        record "${prefix}setups.p99" "$target" "$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' "$out")"
        say "${prefix}setups $target run $rep: ${rate:-?}/s"
    else
        note "${prefix}setups $target run $rep failed: $(tr '\n' ' ' <"$out")"
    fi
}

# hold_run KIND NAME PID VIA COUNT: opens COUNT idle tunnels through the proxy (VIA is the
# bench client's PROXY argument) and records its memory against NAME's idle figure recorded
# before: KIND http records rss.* and kbper.* from RSS; KIND socks records socks.pss.* and
# socks.kbper.* from PSS (see pss_kb), and the processes and threads holding the tunnels.
hold_run() {
    local kind="$1" name="$2" pid="$3" via="$4" count="$5" i held mem base measure prefix
    case "$kind" in
        http) measure=rss_kb prefix="" mem=rss ;;
        socks) measure=pss_kb prefix=socks. mem=pss ;;
    esac
    local log="hold-$kind-$name-$count"
    start "$log" "${pin_load[@]}" "$bench" hold "$via" "$sink" "$count" "$run_limit"
    local hold_pid=$last_pid
    for ((i = 0; i < ready_tenths * 2; i++)); do
        grep -q '^ready' "$work/$log.out" && break
        sleep 0.1
    done
    held="$(sed -n 's/^ready held=\([0-9]*\).*/\1/p' "$work/$log.out")"
    if [ -z "$held" ]; then
        note "$name ($kind): hold $count gave no answer: $(cat "$work/$log.err")"
        stop "$hold_pid"
        return
    fi
    if [ "$held" -ne "$count" ]; then
        note "$name ($kind): only $held of $count tunnels opened: $(cat "$work/$log.out")"
    fi
    sleep 1 # let the proxy finish its bookkeeping for the last tunnel
    local kb procs threads
    kb="$("$measure" "$pid")"
    read -r procs threads <<<"$(procs_threads "$pid")"
    base="$(awk -v m="$prefix$mem.idle" -v n="$name" '$1 == m && $2 == n { print $3 }' \
        "$results" | tail -n1)"
    record "$prefix$mem.t$count" "$name" "$kb"
    record "${prefix}kbper.t$count" "$name" "$(awk -v r="$kb" -v b="$base" -v n="$held" \
        'BEGIN { printf "%.2f", (r - b) / n }')"
    if [ "$kind" = socks ]; then
        record "socks.procs.t$count" "$name" "$procs"
        record "socks.threads.t$count" "$name" "$threads"
    fi
    say "$name with $held idle tunnels ($kind): ${mem^^} $kb KB," \
        "$procs process(es), $threads threads"
    stop "$hold_pid"
    sleep 1
}

# write_dante_conf PORT FILE: dante as a no-authentication SOCKS5 server on 127.0.0.1:PORT
# for clients on loopback, CONNECT to loopback only, logging errors to stderr (its .err file).
# One rule per block line: dante reads "command: connect log: error" as two commands.
write_dante_conf() {
    {
        echo "logoutput: stderr"
        echo "internal: 127.0.0.1 port = $1"
        echo "external: 127.0.0.1"
        echo "clientmethod: none"
        echo "socksmethod: none"
        # Run as root, dante warns unless its unprivileged work runs as another user; nobody,
        # as in Debian's sample config.
        if [ "$(id -u)" -eq 0 ]; then echo "user.unprivileged: nobody"; fi
        cat <<EOF
client pass {
    from: 127.0.0.0/8 to: 0.0.0.0/0
    log: error
}
socks pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect
    log: error
}
EOF
    } >"$2"
}

# start_socks TARGET LOG: starts a fresh SOCKS5 server TARGET (smolproxy, microsocks or dante)
# on core 0 with its output in $work/LOG.*; sets $socks_pid and $socks_addr (127.0.0.1:PORT).
start_socks() {
    local port
    case "$1" in
        smolproxy)
            # The same flags as for HTTP: SOCKS is told apart by its first byte.
            start "$2" "${pin_proxy[@]}" "$smolproxy" --listen 127.0.0.1:0 --connect-ports any \
                --quiet --max-connections 20000
            socks_pid=$last_pid
            socks_addr="$(listening_addr "$2")"
            ;;
        microsocks)
            # Debian's microsocks has no quiet flag: a line per connection goes to LOG.err.
            port="$(freeport)"
            start "$2" "${pin_proxy[@]}" microsocks -i 127.0.0.1 -p "$port"
            socks_pid=$last_pid
            wait_port "$2" "$port"
            socks_addr="127.0.0.1:$port"
            ;;
        dante)
            # Foreground (no -D), one mother process (-N 1); it forks its children itself.
            port="$(freeport)"
            write_dante_conf "$port" "$work/$2.conf"
            start "$2" "${pin_proxy[@]}" danted -f "$work/$2.conf" -N 1 -p "$work/$2.pid"
            socks_pid=$last_pid
            wait_port "$2" "$port"
            socks_addr="127.0.0.1:$port"
            ;;
    esac
}

check_proxies() {
    alive "$smol_pid" smolproxy
    alive "$tiny_pid" tinyproxy
    [ -z "$ats_pid" ] || alive "$ats_pid" "ATS (traffic_server)"
}

# field NAME FILE: the value of NAME=… on the bench client's summary line.
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$2" | head -n1; }

# intercept_run WORKLOAD TARGET REP: WORKLOAD is keepalive or sessions (bench intercept-*),
# through the intercepting TARGET, trusting its CA, or straight to the TLS origin (direct).
intercept_run() {
    local workload="$1" target="$2" rep="$3" ca n out ticks ok errors rate p50 p99 cores
    case "$target" in
        smolproxy) ca="$work/smol-ca.pem" ;;
        mitmdump) ca="$mitm_ca" ;;
        direct) ca="$work/origin-ca.pem" ;;
    esac
    [ -n "$(addr_of "$target")" ] || return 0 # not started (see the notes)
    if [ "$workload" = keepalive ]; then n=$intercept_conns; else n=$sessions_inflight; fi
    out="$work/intercept-$workload-$target-$rep.txt"
    ticks="$(cpu_ticks "$(pid_of "$target")")"
    cores="$(core_ticks)"
    if bounded "$bench" "intercept-$workload" "$(addr_of "$target")" "$tls_origin" "$ca" "$n" \
        "$intercept_secs" >"$out" 2>&1; then
        record_cores "i$workload" "$target" "$cores"
        ok="$(field ok "$out")"
        errors="$(field errors "$out")"
        rate="$(field rate "$out")"
        p50="$(field p50_ms "$out")"
        p99="$(field p99_ms "$out")"
        [ "${errors:-0}" -eq 0 ] || note "intercepted $workload $target run $rep: $errors failed:" \
            "$(grep -v "^intercept-$workload ok" "$out" | head -n1)"
        record "i$workload.rate" "$target" "${rate:-0}"
        record_cpu "i$workload.cpu" "$target" "$ticks" "${ok:-0}"
        record "i$workload.p50" "$target" "${p50:-0}"
        record "i$workload.p99" "$target" "${p99:-0}"
        say "intercepted $workload $target run $rep: ${rate:-?}/s," \
            "p50 ${p50:-?} ms, p99 ${p99:-?} ms"
    else
        note "intercepted $workload $target run $rep failed: $(tr '\n' ' ' <"$out")"
    fi
}

# --- run -------------------------------------------------------------------------------------

# ATS is started here rather than with the others above: start_ats may leave a note.
[ "$ats" = 0 ] || start_ats ats
load_before="$(cut -d' ' -f1 /proc/loadavg)"
say "load average before: $load_before"
bench_start=$SECONDS
for ((rep = 1; rep <= reps; rep++)); do
    if [ -n "$ats_pid" ]; then
        order="$(rotate "$rep" smolproxy tinyproxy ats direct)"
    else
        order="$(order_for "$rep")"
    fi
    say "repetition $rep of $reps (order: $order)"
    for t in $order; do wrk_run keepalive "$t" "$rep"; done
    check_proxies
    for t in $order; do wrk_run close "$t" "$rep" -H "Connection: close"; done
    check_proxies
    for t in $order; do bulk_run "" "$t" "$rep" "$(addr_of "$t")" "$bulk_bytes"; done
    check_proxies
    for t in $order; do setups_run "" "$t" "$rep" "$(addr_of "$t")" "$secs" client; done
    check_proxies
done
record rss.afterload smolproxy "$(rss_kb "$smol_pid")"
record rss.afterload tinyproxy "$(rss_kb "$tiny_pid")"
[ -z "$ats_pid" ] || record rss.afterload ats "$(rss_kb "$ats_pid")"
stop "$smol_pid"
stop "$tiny_pid"
[ -z "$ats_pid" ] || stop "$ats_pid"

say "interception: smolproxy and mitmdump on core 0, the TLS origin on core 1"
# From here on "smolproxy" is an intercepting instance of its own: the one above would have
# intercepted the sink's tunnels too (127.0.0.1), and its rows stay as they were measured.
smol_addr="" smol_pid="" mitm_addr="" mitm_pid="" mitm_ca=""
if "$smolproxy" ca new --cert "$work/smol-ca.pem" --key "$work/smol-ca-key.pem" \
    >"$work/ca-new.out" 2>&1; then
    start smolproxy-intercept "${pin_proxy[@]}" "$smolproxy" --listen 127.0.0.1:0 --quiet \
        --connect-ports any --intercept 127.0.0.1 --intercept-ca "$work/smol-ca.pem" \
        --intercept-key "$work/smol-ca-key.pem" --ca-file "$work/origin-ca.pem"
    smol_pid=$last_pid
    smol_addr="$(listening_addr smolproxy-intercept)"
else
    note "smolproxy ca new failed (a build without interception?): $(head -n1 "$work/ca-new.out")"
fi
if [ -z "$mitm_problem" ]; then
    # Quiet (-q: no flow lines, errors only), dialling the origin lazily (see the top), its CA
    # made at first start in a confdir of this run, the origin verified against its CA.
    mitm_port="$(freeport)"
    start mitmdump "${pin_proxy[@]}" "$mitmdump" -q --listen-host 127.0.0.1 \
        --listen-port "$mitm_port" --set confdir="$work/mitmproxy" \
        --set connection_strategy=lazy \
        --set ssl_verify_upstream_trusted_ca="$work/origin-ca.pem"
    mitm_pid=$last_pid
    wait_port mitmdump "$mitm_port"
    mitm_addr="127.0.0.1:$mitm_port"
    mitm_ca="$work/mitmproxy/mitmproxy-ca-cert.pem"
    [ -s "$mitm_ca" ] || die "mitmdump made no CA at $mitm_ca"
fi
for ((rep = 1; rep <= reps; rep++)); do
    order="$(order_for "$rep" mitmdump)"
    say "interception: repetition $rep of $reps (order: $order)"
    for t in $order; do intercept_run keepalive "$t" "$rep"; done
    for t in $order; do intercept_run sessions "$t" "$rep"; done
    [ -z "$smol_pid" ] || alive "$smol_pid" smolproxy
    [ -z "$mitm_pid" ] || alive "$mitm_pid" mitmdump
done
[ -z "$smol_pid" ] || stop "$smol_pid"
[ -z "$mitm_pid" ] || stop "$mitm_pid"

say "SOCKS5: smolproxy, microsocks and dante on core 0, the sink on core 1"
socks_start=$SECONDS
# Fresh instances: "smolproxy" is now a plain (non-intercepting) one again.
start_socks smolproxy smolproxy-socks
smol_pid=$socks_pid smol_addr=$socks_addr
start_socks microsocks microsocks
micro_pid=$socks_pid micro_addr=$socks_addr
start_socks dante dante
dante_pid=$socks_pid dante_addr=$socks_addr
check_socks() {
    alive "$smol_pid" smolproxy
    alive "$micro_pid" microsocks
    alive "$dante_pid" dante
}
for ((rep = 1; rep <= reps; rep++)); do
    order="$(rotate "$rep" smolproxy microsocks dante direct)"
    say "SOCKS5: repetition $rep of $reps (order: $order)"
    for t in $order; do bulk_run socks. "$t" "$rep" "$(socks_via "$t")" "$socks_bulk_bytes"; done
    check_socks
    for t in $order; do
        setups_run socks. "$t" "$rep" "$(socks_via "$t")" "$socks_secs" sink
    done
    check_socks
done
stop "$smol_pid"
stop "$micro_pid"
stop "$dante_pid"
socks_took=$((SECONDS - socks_start))

say "memory: fresh proxies, idle, then idle tunnels"
start smolproxy-mem "${pin_proxy[@]}" "$smolproxy" --listen 127.0.0.1:0 --connect-ports any \
    --quiet --max-connections 20000
mem_pid=$last_pid
mem_addr="$(listening_addr smolproxy-mem)"
sleep 1
record rss.idle smolproxy "$(rss_kb "$mem_pid")"
hold_run http smolproxy "$mem_pid" "$mem_addr" "$tunnels_few"
if [ "$tunnels_many" -gt "$tunnels_few" ]; then
    hold_run http smolproxy "$mem_pid" "$mem_addr" "$tunnels_many"
fi
alive "$mem_pid" smolproxy
record rss.after smolproxy "$(rss_kb "$mem_pid")"
stop "$mem_pid"

mem_port="$(freeport)"
tinyproxy_conf "$work/tinyproxy-mem.conf" "$mem_port"
start tinyproxy-mem "${pin_proxy[@]}" tinyproxy -d -c "$work/tinyproxy-mem.conf"
mem_pid=$last_pid
wait_port tinyproxy-mem "$mem_port"
sleep 1
record rss.idle tinyproxy "$(rss_kb "$mem_pid")"
hold_run http tinyproxy "$mem_pid" "127.0.0.1:$mem_port" "$tunnels_few"
alive "$mem_pid" tinyproxy
record rss.after tinyproxy "$(rss_kb "$mem_pid")"
stop "$mem_pid"

if [ "$ats" != 0 ]; then
    start_ats ats-mem
    sleep 1
    record rss.idle ats "$(rss_kb "$ats_pid")"
    hold_run http ats "$ats_pid" "$ats_addr" "$tunnels_few"
    if [ "$ats_tunnels" -gt "$tunnels_few" ]; then
        hold_run http ats "$ats_pid" "$ats_addr" "$ats_tunnels"
    fi
    alive "$ats_pid" "ATS (traffic_server)"
    record rss.after ats "$(rss_kb "$ats_pid")"
    stop "$ats_pid"
fi

say "memory over SOCKS5: fresh smolproxy, microsocks and dante, idle, then idle tunnels"
socks_start=$SECONDS
for t in smolproxy microsocks dante; do
    start_socks "$t" "$t-mem"
    sleep 1
    record socks.pss.idle "$t" "$(pss_kb "$socks_pid")"
    hold_run socks "$t" "$socks_pid" "socks5://$socks_addr" "$tunnels_few"
    alive "$socks_pid" "$t"
    stop "$socks_pid"
done
socks_took=$((socks_took + SECONDS - socks_start))
stop "$nginx_pid"
bench_secs=$((SECONDS - bench_start))
load_after="$(cut -d' ' -f1 /proc/loadavg)"
say "load average after: $load_after"

size_out="$work/size.txt"
: >"$size_out"
# size_in PATTERN: the number before the first "bytes" on size.sh's line matching PATTERN.
size_in() {
    awk -v p="$1" 'index($0, p) && / bytes / {
        for (i = 1; i < NF; i++) if ($(i + 1) == "bytes") { print $i; exit }
    }' "$size_out"
}
if [ -n "${BENCH_SMOLPROXY:-}" ]; then
    # Another build was measured: its own size, not the tree's.
    size_default="$(stat -c %s "$smolproxy")"
    size_router="not measured"
    size_notls="not measured"
else
    say "binary size (scripts/size.sh)"
    size_rc=0
    bash scripts/size.sh >"$size_out" 2>&1 || size_rc=$?
    [ "$size_rc" -eq 0 ] ||
        note "scripts/size.sh exited $size_rc: $(grep -i -m1 -e error -e OVER "$size_out" || true)"
    # The labels scripts/size.sh prints.
    size_default="$(size_in "smolproxy (default: tls, tls-server, export)")"
    size_router="$(size_in "smolproxy --features tls (router)")"
    size_notls="$(size_in "smolproxy --no-default-features")"
fi

# --- report ----------------------------------------------------------------------------------

# stat METRIC TARGET FORMAT: "median (min–max)" of the recorded values, or "–".
stat() {
    awk -v m="$1" -v t="$2" -v f="$3" '
        $1 == m && $2 == t { v[n++] = $3 + 0 }
        END {
            if (n == 0) { printf "–"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
            med = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
            if (n == 1) printf f, med
            else printf f " (" f "–" f ")", med, v[0], v[n - 1]
        }' "$results"
}

median() {
    awk -v m="$1" -v t="$2" '
        $1 == m && $2 == t { v[n++] = $3 + 0 }
        END {
            if (n == 0) exit
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
            print (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
        }' "$results"
}

# ratio A B: A / B to two decimals, or "–".
ratio() {
    if [ -z "$1" ] || [ -z "$2" ]; then
        printf '–'
    else
        awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) printf "–"; else printf "%.2f×", a / b }'
    fi
}

# fixed_row LABEL SMOLPROXY [TINYPROXY]: a line for a value measured once, not compared.
fixed_row() { printf '| %s | %s | %s | – | – | – | – | – |\n' "$1" "$2" "${3:-–}"; }

# many_row LABEL METRIC FORMAT: a line for the large idle-tunnel point, where ATS holds
# $ats_tunnels (its cell says how many when that is fewer than smolproxy's $tunnels_many) and
# tinyproxy is not run. Per-tunnel figures compare across the two counts; totals do not.
many_row() {
    local label="$1" metric="$2" fmt="$3" s a cell vs="–"
    s="$(median "$metric.t$tunnels_many" smolproxy)"
    if [ "$ats" = 0 ]; then
        cell="–"
    elif [ "$ats_tunnels" -le "$tunnels_few" ]; then
        cell="not run"
    else
        a="$(median "$metric.t$ats_tunnels" ats)"
        cell="$(stat "$metric.t$ats_tunnels" ats "$fmt")"
        if [ "$ats_tunnels" != "$tunnels_many" ]; then
            cell+=" at $ats_tunnels tunnels"
            if [ "$metric" = rss ]; then a=""; fi
        fi
        vs="$(ratio "$s" "$a")"
    fi
    printf '| %s | %s | not run (MaxClients 1000) | %s | – | – | %s | – |\n' "$label" \
        "$(stat "$metric.t$tunnels_many" smolproxy "$fmt")" "$cell" "$vs"
}

# core_row LABEL WORKLOAD TARGET...: a line of the core utilisation table: for each TARGET,
# the median busy % of core 0 and of core 1 during its WORKLOAD runs, as "core 0 / core 1".
core_row() {
    local label="$1" workload="$2" target line c0 c1
    shift 2
    line="| $label"
    for target in "$@"; do
        c0="$(median "$workload.core0" "$target")"
        c1="$(median "$workload.core1" "$target")"
        if [ -z "$c0" ]; then
            line+=" | –"
        else
            line+=" | $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.0f / %.0f", a, b }')"
        fi
    done
    echo "$line |"
}

# row_vs LABEL METRIC FORMAT OTHER...: one line of a table: smolproxy, each OTHER, then
# smolproxy ÷ each OTHER; a target with nothing recorded shows "–".
row_vs() {
    local label="$1" metric="$2" fmt="$3" s other line
    shift 3
    s="$(median "$metric" smolproxy)"
    line="| $label | $(stat "$metric" smolproxy "$fmt")"
    for other in "$@"; do line+=" | $(stat "$metric" "$other" "$fmt")"; done
    for other in "$@"; do line+=" | $(ratio "$s" "$(median "$metric" "$other")")"; done
    echo "$line |"
}

# row LABEL METRIC FORMAT: a line of the HTTP and CONNECT table.
row() { row_vs "$1" "$2" "$3" tinyproxy ats direct; }

# intercept_row LABEL METRIC FORMAT: a line of the interception table.
intercept_row() { row_vs "$1" "$2" "$3" mitmdump direct; }

# socks_row LABEL METRIC FORMAT: a line of the SOCKS5 table.
socks_row() { row_vs "$1" "$2" "$3" microsocks dante direct; }

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || commit="$commit+uncommitted"
[ -z "${BENCH_SMOLPROXY:-}" ] || commit="$BENCH_SMOLPROXY"
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
mitm_version="not installed"
[ -n "$mitm_problem" ] || mitm_version="$("$mitmdump" --version 2>/dev/null | awk '
    $1 == "Mitmproxy:" { m = $2 }
    $1 == "Python:" { p = $2 }
    END { print m " (Python " p ")" }')"

echo
echo "## smolproxy benchmark ($(date -u +%Y-%m-%d), smolproxy $commit)"
echo
echo "Machine: $(nproc) × $cpu, Linux $(uname -r). Proxy pinned to core 0; wrk, bench client"
ats_version="not run"
[ "$ats" = 0 ] || ats_version="$(traffic_server -V 2>/dev/null |
    awk '/^Traffic Server / { print $3; exit }')"
echo "and origin on core 1. tinyproxy $(tinyproxy -v 2>&1 | awk '{ print $2 }')," \
    "Apache Traffic Server (ATS) ${ats_version:-unknown},"
micro_version="$(dpkg-query -W -f='${Version}' microsocks 2>/dev/null || echo unknown)"
dante_version="$(danted -v 2>&1 | sed -n 's/^Dante v\([0-9.]*[0-9]\).*/\1/p' | head -n1)"
echo "mitmproxy $mitm_version, microsocks $micro_version, dante ${dante_version:-unknown},"
echo "$(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }')."
echo "$reps runs each, alternating; median (min–max). Ratios are smolproxy ÷ the other's median."
echo "Load average (1 min) before/after: $load_before / $load_after$(awk -v l="$load_before" \
    'BEGIN { if (l > 1.0) printf " — the machine was busy with other work, so throughput is noisy; the CPU-per-unit rows are the steadier comparison" }')."
echo
echo "| workload | smolproxy | tinyproxy | ATS | direct | smol ÷ tiny | smol ÷ ATS | smol ÷ direct |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
row "keep-alive GET 1 KB, req/s (wrk -c$wrk_conns, ${secs}s) ↑" keepalive.rps "%.0f"
row "keep-alive latency p50, ms ↓" keepalive.p50 "%.2f"
row "keep-alive latency p99, ms ↓" keepalive.p99 "%.2f"
row "Connection: close, req/s ↑" close.rps "%.0f"
row "CONNECT bulk, MB/s each way ($((bulk_bytes / 1000000)) MB each way) ↑" bulk.mbps "%.0f"
row "CONNECT setups/s, $setups_inflight in flight ↑" setups.rate "%.0f"
row "CONNECT setup+round trip p99, ms ↓" setups.p99 "%.2f"
row "proxy CPU per keep-alive request, µs ↓" keepalive.cpu "%.1f"
row "proxy CPU per Connection: close request, µs ↓" close.cpu "%.1f"
row "proxy CPU per CONNECT setup, µs ↓" setups.cpu "%.1f"
row "proxy CPU per MB relayed (bulk, both ways), µs ↓" bulk.cpu "%.0f"
row "RSS idle, fresh process, KB ↓" rss.idle "%.0f"
row "RSS with $tunnels_few idle tunnels, KB ↓" rss.t$tunnels_few "%.0f"
row "KB per idle tunnel ($tunnels_few) ↓" kbper.t$tunnels_few "%.2f"
if [ "$tunnels_many" -gt "$tunnels_few" ]; then
    many_row "RSS with $tunnels_many idle tunnels, KB ↓" rss "%.0f"
    many_row "KB per idle tunnel ($tunnels_many) ↓" kbper "%.2f"
fi
row "RSS after the tunnels closed, KB" rss.after "%.0f"
row "RSS idle after the load runs, KB" rss.afterload "%.0f"
fixed_row "release binary, bytes (budget 1,800,000)" "${size_default:-?}"
fixed_row "release binary --features tls (router), bytes (budget 1,500,000)" "${size_router:-?}"
fixed_row "release binary --no-default-features, bytes (budget 700,000)" "${size_notls:-?}"
echo
echo "↑ higher is better, ↓ lower is better. Proxy CPU is user + system time of the proxy"
echo "process (all threads) during the run, divided by the work wrk or the bench client counted."
echo "tinyproxy runs one thread per connection and was configured with MaxClients 1000, so it is"
echo "measured at 1,000 tunnels only. tinyproxy closes the client connection after every"
echo "response (no client keep-alive); wrk counts each such close as a socket read error and"
echo "reconnects, so tinyproxy's \"keep-alive\" runs are in fact one connection per request."
if [ "$ats" != 0 ]; then
    echo "ATS is traffic_server alone as a plain forward proxy: no cache, no remap rules, one"
    echo "network thread (its cache AIO, task and log threads pinned to core 0 with it and counted"
    echo "in its CPU), origin sessions pooled, Via both ways, no transaction log (settings in"
    echo "scripts/bench/trafficserver.records.config.in). It stops accepting once 1.1 × its open"
    echo "connections (client and origin sockets) reach the open-file limit ($fd_limit) minus 192."
    if [ "$ats_tunnels" -lt "$tunnels_many" ]; then
        echo "Its large idle-tunnel point is therefore $ats_tunnels tunnels, the largest round hundred"
        echo "it holds; the RSS there is not compared with smolproxy's at $tunnels_many, the KB per"
        echo "tunnel is."
    fi
else
    echo "ATS was left out (BENCH_ATS=0)."
fi
if [ "$fd_capped" = yes ]; then
    echo "The open-file limit here ($fd_limit, not raisable) caps the large point at $tunnels_many tunnels."
fi
if [ ${#pin_proxy[@]} -gt 0 ]; then
    echo
    echo "### Core utilisation during the timed runs above, busy %, core 0 / core 1"
    echo
    echo "| workload | smolproxy | tinyproxy | ATS | direct |"
    echo "|---|---:|---:|---:|---:|"
    core_row "keep-alive GET 1 KB (wrk)" keepalive smolproxy tinyproxy ats direct
    core_row "Connection: close (wrk)" close smolproxy tinyproxy ats direct
    core_row "CONNECT bulk" bulk smolproxy tinyproxy ats direct
    core_row "CONNECT setups" setups smolproxy tinyproxy ats direct
    echo
    echo "Core 0 runs the proxy alone; core 1 runs wrk or the bench client and the origin (nginx or"
    echo "the bench sink). Busy is every tick of /proc/stat but idle and iowait, over each timed"
    echo "run, median of the runs; anything else on the machine counts too. Where core 1 is near"
    echo "100% the load side, not the proxy, set the pace: requests/s and MB/s there cannot"
    echo "separate the proxies, and the proxy CPU per unit of work is the comparison. Where core 0"
    echo "is near 100% the proxy was the limit."
fi
echo
echo "### Interception"
echo
echo "| workload | smolproxy | mitmdump | direct | smol ÷ mitm | smol ÷ direct |"
echo "|---|---:|---:|---:|---:|---:|"
intercept_row "intercepted keep-alive GET 1 KB, req/s ($intercept_conns sessions, ${intercept_secs}s) ↑" \
    ikeepalive.rate "%.0f"
intercept_row "intercepted keep-alive latency p50, ms ↓" ikeepalive.p50 "%.2f"
intercept_row "intercepted keep-alive latency p99, ms ↓" ikeepalive.p99 "%.2f"
intercept_row "new intercepted TLS sessions/s, 1 GET each, $sessions_inflight in flight ↑" \
    isessions.rate "%.0f"
intercept_row "intercepted session (TCP+CONNECT+TLS+GET) p99, ms ↓" isessions.p99 "%.2f"
intercept_row "proxy CPU per intercepted request (keep-alive), µs ↓" ikeepalive.cpu "%.1f"
intercept_row "proxy CPU per new intercepted TLS session, µs ↓" isessions.cpu "%.1f"
echo
echo "The bench client (rustls, ALPN http/1.1, no session resumption) CONNECTs to nginx's TLS"
echo "port through the proxy and does TLS with the proxy, trusting its CA; the proxy does TLS to"
echo "nginx (P-256 certificate) and verifies it. \"direct\" is the same client doing TLS with"
echo "nginx itself. tinyproxy cannot intercept; ATS is not set up to. smolproxy signs its"
echo "handshakes with ECDSA P-256; mitmdump with its default RSA 2048 key. smolproxy reuses"
echo "pooled origin connections across client sessions; mitmdump opens one origin connection"
echo "(and handshake) per client connection, so a new session costs it two handshakes. mitmdump"
echo "ran with connection_strategy=lazy (it dials the origin at the first request, as smolproxy"
echo "does) and -q (no flow lines)."
echo
echo "### SOCKS5"
echo
echo "| workload | smolproxy | microsocks | dante | direct | smol ÷ microsocks | smol ÷ dante | smol ÷ direct |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
socks_row "SOCKS5 bulk, MB/s each way ($((socks_bulk_bytes / 1000000)) MB each way) ↑" \
    socks.bulk.mbps "%.0f"
socks_row "SOCKS5 CONNECT setups/s, $setups_inflight in flight (${socks_secs}s) ↑" \
    socks.setups.rate "%.0f"
socks_row "SOCKS5 setup+round trip+close p99, ms ↓" socks.setups.p99 "%.2f"
socks_row "proxy CPU per SOCKS5 setup, µs ↓" socks.setups.cpu "%.1f"
socks_row "proxy CPU per MB relayed (SOCKS5 bulk, both ways), µs ↓" socks.bulk.cpu "%.0f"
socks_row "PSS idle, fresh process(es), KB ↓" socks.pss.idle "%.0f"
socks_row "PSS with $tunnels_few idle SOCKS5 tunnels, KB ↓" "socks.pss.t$tunnels_few" "%.0f"
socks_row "KB per idle SOCKS5 tunnel ($tunnels_few, PSS) ↓" "socks.kbper.t$tunnels_few" "%.2f"
echo
# tasks_with TARGET: "N threads" or "N processes, M threads" holding the idle tunnels.
tasks_with() {
    local p t
    p="$(median "socks.procs.t$tunnels_few" "$1")"
    t="$(median "socks.threads.t$tunnels_few" "$1")"
    if [ -z "$t" ]; then echo "not measured"; elif [ "${p:-1}" = 1 ]; then echo "$t threads"
    else echo "$p processes, $t threads"; fi
}
echo "Every SOCKS5 tunnel: greeting offering no authentication, CONNECT to the sink's IPv4"
echo "address, each answer awaited (as curl does), then the same work as the CONNECT rows,"
echo "except that in the setups runs the sink closes first, then the client (the CONNECT rows:"
echo "the client first), so that dante's TIME_WAITs do not use up the ephemeral ports (see the"
echo "top of scripts/bench.sh). \"direct\" is the same client without a proxy. PSS, not RSS: dante"
echo "works in child processes sharing pages, which RSS would count once per process; proxy CPU"
echo "counts dante's children."
echo "dante ran in the foreground with -N 1 (one mother process, which forks its own negotiate,"
echo "request and io children), no authentication, errors logged; microsocks as it comes (a"
echo "line per connection on stderr, to a file). With $tunnels_few idle tunnels: smolproxy"
echo "$(tasks_with smolproxy), microsocks $(tasks_with microsocks), dante $(tasks_with dante)."
if [ -s "$notes" ]; then
    echo
    echo "Notes from this run:"
    sed 's/^/- /' "$notes"
fi
echo
echo "Measured in ${bench_secs}s (SOCKS5 rows: ${socks_took}s; plus builds) by scripts/bench.sh."
