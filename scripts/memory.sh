#!/usr/bin/env bash
# Memory of one smolproxy through the bench's kinds of load, small and quick (about 90 s at
# the defaults), for before/after comparisons of memory work; scripts/bench.sh is the real
# bench. Prints VmRSS and smaps_rollup's Anonymous of the proxy: fresh and idle, right after
# the load runs (as bench.sh records "RSS idle after the load runs"), after MEM_IDLE seconds
# more of idle, then, on a second fresh proxy as bench.sh does, KB per idle tunnel at 1,000
# and at MEM_TUNNELS (lowered to fit ulimit -n).
#   MEM_SMOLPROXY [target/release/smolproxy]  binary to measure
#   MEM_SECS [3]       length of each wrk and setups run
#   MEM_REPS [2]       repetitions of the load runs
#   MEM_KINDS [keepalive close bulk setups]  the load runs, in order
#   MEM_IDLE [35]      idle seconds before the second after-load figure (the janitor frees
#                      spare buffers unused for one of its 15 s rounds)
#   MEM_TUNNELS [9900] idle tunnels for the large point (0: skip it)
#   MEM_SMAPS          set: also print the mappings with the most resident memory
#   MEM_MALLOC_STATS   set: also print glibc's malloc_stats() of the proxy (through gdb)
#   MEM_HEAPWALK       set: also walk the proxy's heap: where in it the bytes in use are
# Needs wrk and nginx (nginx-light), as bench.sh does; every process started is ended on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/sbin:/sbin"
secs="${MEM_SECS:-3}" reps="${MEM_REPS:-2}" idle="${MEM_IDLE:-35}" many="${MEM_TUNNELS:-9900}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fit=$((($(ulimit -n) - 64) / 2 / 100 * 100))
[ "$many" -le "$fit" ] || many=$fit
[ -n "${MEM_SMOLPROXY:-}" ] || cargo build --release --quiet --bin smolproxy
smolproxy="$(realpath "${MEM_SMOLPROXY:-target/release/smolproxy}")"
cargo build --release --quiet --example bench
bench="$root/target/release/examples/bench"
pin_proxy=() pin_load=()
if [ "$(nproc)" -ge 2 ]; then pin_proxy=(taskset -c 0) pin_load=(taskset -c 1); fi

work="$(mktemp -d /tmp/smolproxy-mem.XXXXXX)"
chmod 755 "$work"
ready_tenths=300
die() { printf 'memory: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/bench/procs.sh
. "$root/scripts/bench/procs.sh"
# wait_line NAME FILE PATTERN: waits up to 30 s for PATTERN in $work/NAME.FILE, prints it.
wait_line() {
    for _ in $(seq 300); do
        if grep -q "$3" "$work/$1.$2"; then grep -m1 "$3" "$work/$1.$2"; return; fi
        sleep 0.1
    done
    cat "$work/$1.err" >&2
    exit 1
}
# mem LABEL: one line of the proxy's memory.
mem() {
    printf '%-28s VmRSS %6s KB  Anonymous %6s KB  Private_Dirty %6s KB\n' "$1" \
        "$(awk '/^VmRSS:/ { print $2 }' "/proc/$proxy/status")" \
        "$(awk '/^Anonymous:/ { print $2 }' "/proc/$proxy/smaps_rollup")" \
        "$(awk '/^Private_Dirty:/ { print $2 }' "/proc/$proxy/smaps_rollup")"
    if [ -n "${MEM_MALLOC_STATS:-}" ]; then
        # glibc's own account, printed on the proxy's stderr: in use against held from the OS.
        local err="/proc/$proxy/fd/2" before
        before="$(wc -l <"$err")"
        gdb -p "$proxy" -batch -ex 'call ((void (*)(void)) malloc_stats)()' >/dev/null 2>&1
        tail -n +"$((before + 1))" "$err" | sed 's/^/    /'
    fi
    if [ -n "${MEM_HEAPWALK:-}" ]; then
        # Walks glibc's main heap chunk by chunk (through /proc/PID/mem): bytes in use and
        # free per 128 KB of heap, and the commonest in-use chunk sizes. A freed chunk still
        # in a tcache counts as in use (its first 16 bytes: a pointer and glibc's tcache key).
        python3 - "$proxy" <<'PY'
import collections, struct, sys
pid = sys.argv[1]
for line in open(f"/proc/{pid}/maps"):
    if line.rstrip().endswith("[heap]"):
        a, b = (int(x, 16) for x in line.split()[0].split("-"))
with open(f"/proc/{pid}/mem", "rb") as mem:
    mem.seek(a)
    data = mem.read(b - a)
chunks, off = [], 0
while off + 16 <= len(data):
    size = struct.unpack_from("<Q", data, off + 8)[0] & ~7
    if size == 0 or off + size + 16 > len(data):
        break
    used = struct.unpack_from("<Q", data, off + size + 8)[0] & 1
    chunks.append((off, size, used))
    off += size
print(f"    heap {len(data) // 1024} KB")
band = 128 * 1024
for start in range(0, len(data), band):
    part = [(sz, u) for o, sz, u in chunks if start <= o < start + band]
    used = sum(sz for sz, u in part if u) // 1024
    free = sum(sz for sz, u in part if not u) // 1024
    print(f"      at {start // 1024:5} KB: in use {used:5} KB, free {free:5} KB")
sizes = collections.Counter(sz for o, sz, u in chunks if u)
for sz, n in sorted(sizes.items(), key=lambda kv: -kv[0] * kv[1])[:10]:
    print(f"      {n:6} x {sz:6} bytes = {n * sz // 1024} KB")
PY
    fi
    if [ -n "${MEM_SMAPS:-}" ]; then
        python3 - "/proc/$proxy/smaps" <<'PY'
import re, sys
rows, name = [], None
for line in open(sys.argv[1]):
    m = re.match(r"([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)", line)
    if m:
        size = (int(m[2], 16) - int(m[1], 16)) // 1024
        name = f"{m[3] or '[anon]'} ({size} KB mapped)"
    elif line.startswith("Rss:") and int(line.split()[1]) > 0:
        rows.append((int(line.split()[1]), name))
for kb, name in sorted(rows, reverse=True)[:12]:
    print(f"    {kb:6} KB  {name}")
PY
    fi
}

port="$("$bench" freeport)"
nginx_origin "$port" 4096
start nginx "${pin_load[@]}" nginx -p "$work" -c "$work/nginx.conf"
start sink "${pin_load[@]}" "$bench" sink
sink="$(wait_line sink err 'listening on' | sed 's/^listening on //')"
# start_proxy NAME: a fresh proxy on core 0; sets $proxy and $addr.
start_proxy() {
    start "$1" "${pin_proxy[@]}" "$smolproxy" --listen 127.0.0.1:0 --connect-ports any --quiet \
        --max-connections 20000
    proxy=$last_pid
    addr="$(wait_line "$1" err 'listening on' | sed 's/^listening on //')"
}
start_proxy proxy
printf 'wrk.path = "http://127.0.0.1:%s/1k"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' \
    "$port" "$port" >"$work/proxied.lua"
sleep 1
mem "fresh, idle"
# load KIND: one run of one of the bench's kinds of load.
load() {
    case "$1" in
        keepalive) "${pin_load[@]}" wrk -t1 -c50 -d"${secs}s" -s "$work/proxied.lua" \
            "http://$addr/" >/dev/null ;;
        close) "${pin_load[@]}" wrk -t1 -c50 -d"${secs}s" -s "$work/proxied.lua" \
            -H "Connection: close" "http://$addr/" >/dev/null ;;
        bulk) "${pin_load[@]}" "$bench" bulk "$addr" "$sink" 268435456 >/dev/null ;;
        setups) "${pin_load[@]}" "$bench" setups "$addr" "$sink" 32 "$secs" client >/dev/null ;;
    esac
}
for ((rep = 1; rep <= reps; rep++)); do
    for kind in ${MEM_KINDS:-keepalive close bulk setups}; do load "$kind"; done
done
mem "after the load runs"
sleep "$idle"
mem "after $idle s more idle"
# Idle tunnels on a fresh proxy, as bench.sh measures them.
kill "$proxy"
start_proxy proxy-hold
sleep 1
mem "fresh, idle (second)"
base="$(awk '/^VmRSS:/ { print $2 }' "/proc/$proxy/status")"
for n in 1000 $many; do
    [ "$n" -gt 0 ] || continue
    start "hold$n" "${pin_load[@]}" "$bench" hold "$addr" "$sink" "$n" 120
    holder=$last_pid
    held="$(wait_line "hold$n" out '^ready' | sed 's/^ready held=\([0-9]*\).*/\1/')"
    sleep 1
    kb="$(awk '/^VmRSS:/ { print $2 }' "/proc/$proxy/status")"
    mem "$held idle tunnels"
    awk -v r="$kb" -v b="$base" -v n="$held" \
        'BEGIN { printf "    KB per idle tunnel (%d): %.2f\n", n, (r - b) / n }'
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    sleep 1
done
mem "after the tunnels closed"
