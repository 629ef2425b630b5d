#!/usr/bin/env bash
# Soak test: N minutes of mixed traffic through a release build, watching for leaks.
#
#   scripts/soak.sh [MINUTES]        (default 2, at most 60)
#
# Starts the proxy and a local origin (nginx if installed, else a small Python server), both on
# 127.0.0.1 only, then runs, side by side until the time is up:
#   keep-alive   wrk (or curl reusing one connection for many URLs) through the proxy
#   close        curl with Connection: close, small and 1 MB responses
#   upload       curl POSTing 1 MB bodies
#   connect      curl -p: CONNECT tunnels to the origin, a request inside each
#   bad          malformed, smuggling, oversized, truncated and abandoned requests over
#                bash's /dev/tcp, including clients that vanish mid-upload and mid-download
# Every few seconds it samples the proxy's open descriptors (/proc/PID/fd) and resident memory
# (VmRSS) and prints them as a table. Both are measured at idle after a short warm-up (so the
# allocator and the origin pool have reached their working size) and again at idle after the
# soak; the script exits 1 if either stays above that idle level by more than a small margin
# (descriptors, not counting idle origin connections in the pool: two; memory: 1 MiB plus
# 10%), or if the proxy died.
set -euo pipefail

minutes="${1:-2}"
case "$minutes" in
    '' | *[!0-9]*) echo "usage: $0 [MINUTES]" >&2; exit 2 ;;
esac
if [ "$minutes" -lt 1 ] || [ "$minutes" -gt 60 ]; then
    echo "MINUTES must be 1 to 60" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# Sampling period, warm-up length, and the proxy's timeouts (short, so idle is reached soon).
readonly SAMPLE_EVERY=5
readonly WARMUP=15
readonly IDLE_TIMEOUT=5
readonly HEADER_TIMEOUT=3
# Descriptors allowed above the idle level, beyond idle origin connections in the pool.
readonly FD_SLACK=2
# Allowed growth of resident memory between the two idle points.
readonly RSS_SLACK_KB=1024

for tool in curl python3 timeout; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is required" >&2; exit 2; }
done

echo "building release..." >&2
cargo build --release --quiet
bin="$root/target/release/smolproxy"

work="$(mktemp -d)"
# The origin (nginx runs as another user for its workers) must be able to read the files.
chmod 755 "$work"
pids=()
workers=()
cleanup() {
    for p in "${workers[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- origin -------------------------------------------------------------------------------
mkdir -p "$work/www"
head -c 100 /dev/zero | tr '\0' 's' >"$work/www/small"
head -c 1048576 /dev/urandom >"$work/www/big"
cp "$work/www/big" "$work/upload.bin"
origin_port="$(free_port)"
if command -v nginx >/dev/null; then
    origin_kind=nginx
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$origin_port;
        root $work/www;
        client_max_body_size 10m;
        location /upload { client_body_buffer_size 2m; return 200 "ok\n"; }
    }
}
EOF
    nginx -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    pids+=($!)
else
    origin_kind=python
    cat >"$work/origin.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        try:
            data = open(sys.argv[2] + self.path, "rb").read()
        except OSError:
            self.send_error(404); return
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        while n > 0:
            got = self.rfile.read(min(n, 65536))
            if not got: return
            n -= len(got)
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers()
        self.wfile.write(b"ok\n")
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
    python3 "$work/origin.py" "$origin_port" "$work/www" &
    pids+=($!)
fi
for _ in $(seq 50); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$origin_port/small" && break
    sleep 0.1
done
origin="127.0.0.1:$origin_port"

# --- proxy --------------------------------------------------------------------------------
"$bin" --listen 127.0.0.1:0 --connect-ports any --idle-timeout "${IDLE_TIMEOUT}s" \
    --header-timeout "${HEADER_TIMEOUT}s" --access-log "$work/access.log" --log-format json \
    2>"$work/proxy.err" &
proxy_pid=$!
pids+=("$proxy_pid")
proxy=""
for _ in $(seq 100); do
    proxy="$(sed -n 's/^listening on //p' "$work/proxy.err" | head -1)"
    [ -n "$proxy" ] && break
    sleep 0.05
done
[ -n "$proxy" ] || { echo "soak: the proxy did not start:" >&2; cat "$work/proxy.err" >&2; exit 1; }
proxy_port="${proxy##*:}"
echo "proxy $proxy (pid $proxy_pid), origin $origin ($origin_kind), $minutes min" >&2

fds() { ls "/proc/$proxy_pid/fd" 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$proxy_pid/status" 2>/dev/null || echo 0; }
threads() { awk '/^Threads/ {print $2}' "/proc/$proxy_pid/status" 2>/dev/null || echo 0; }
clients() { ss -Htn state established "( sport = :$proxy_port )" 2>/dev/null | wc -l; }
alive() { kill -0 "$proxy_pid" 2>/dev/null; }

# --- bad input ----------------------------------------------------------------------------
bad="$work/bad"
mkdir -p "$bad"
printf 'GARBAGE\r\n\r\n' >"$bad/garbage"
printf 'GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n' >"$bad/origin-form"
printf 'POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' "$origin" "$origin" >"$bad/cl-te"
printf 'POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!' "$origin" "$origin" >"$bad/two-lengths"
printf 'POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n' "$origin" "$origin" >"$bad/bad-chunk"
printf 'POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n' "$origin" "$origin" >"$bad/chunk-overflow"
{ printf 'GET http://%s/small HTTP/1.1\r\nHost: %s\r\nX-Big: ' "$origin" "$origin"; head -c 20000 /dev/zero | tr '\0' 'a'; printf '\r\n\r\n'; } >"$bad/huge-head"
printf 'GET http://%s/small HTTP/2.0\r\nHost: %s\r\n\r\n' "$origin" "$origin" >"$bad/version"
printf 'GET ftp://%s/small HTTP/1.1\r\nHost: %s\r\n\r\n' "$origin" "$origin" >"$bad/scheme"
printf 'GET http://%s/small HTTP/1.1\r\nHost: %s\r\nX-A: b\0c\r\n\r\n' "$origin" "$origin" >"$bad/nul"
printf 'CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n' >"$bad/connect-refused"
# Clients that vanish: part of a head, or part of an upload, then close at once.
leave="$work/leave"
mkdir -p "$leave"
printf 'GET http://%s/small HTTP/1.1\r\nHo' "$origin" >"$leave/partial-head"
{ printf 'POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 10000000\r\n\r\n' "$origin" "$origin"; head -c 100000 /dev/zero; } >"$leave/partial-body"
head -c 512 /dev/urandom >"$bad/noise"
printf 'GET http://%s/big HTTP/1.1\r\nHost: %s\r\n\r\n' "$origin" "$origin" >"$work/get-big"

# Sends a file and reads the answer until the proxy closes (3 s at most).
send_bad() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && cat "$1" >&3 && cat <&3 >/dev/null' \
        "$proxy_port" "$1" 2>/dev/null || true
}
# Sends a file and closes at once.
send_and_leave() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && cat "$1" >&3' "$proxy_port" "$1" 2>/dev/null || true
}
# Starts a 1 MB download and walks away after 1 KB, leaving unread data: a reset.
abandon_download() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && cat "$1" >&3 && head -c 1024 <&3 >/dev/null' \
        "$proxy_port" "$work/get-big" 2>/dev/null || true
}
# Sends part of a head and waits past the header timeout (the proxy answers 408).
slow_head() {
    timeout $((HEADER_TIMEOUT + 3)) bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "GET http://%s/ HTTP/1.1\r\n" "$1" >&3 && cat <&3 >/dev/null' \
        "$proxy_port" "$origin" 2>/dev/null || true
}

# --- traffic ------------------------------------------------------------------------------
cx=(curl -s -o /dev/null --max-time 10 -x "http://$proxy")
count() { echo "$2" >>"$work/count.$1"; }

keepalive_worker() {
    local until=$1 n=0
    if command -v wrk >/dev/null; then
        cat >"$work/absolute.lua" <<EOF
request = function() return wrk.format("GET", "http://$origin/small") end
EOF
        local secs=$((until - $(date +%s)))
        [ "$secs" -gt 0 ] || return 0
        wrk -t1 -c8 -d"${secs}s" --timeout 5s -s "$work/absolute.lua" "http://$proxy/" >"$work/wrk.out" 2>&1 || true
        n="$(awk '/requests in/ {print $1}' "$work/wrk.out")"
    else
        local urls=()
        for _ in $(seq 50); do urls+=("http://$origin/small"); done
        while [ "$(date +%s)" -lt "$until" ]; do
            "${cx[@]}" "${urls[@]}" || true
            n=$((n + 50))
        done
    fi
    count keepalive "${n:-0}"
}
close_worker() {
    local until=$1 n=0
    while [ "$(date +%s)" -lt "$until" ]; do
        "${cx[@]}" -H 'Connection: close' "http://$origin/small" || true
        "${cx[@]}" -H 'Connection: close' "http://$origin/big" || true
        n=$((n + 2))
    done
    count close "$n"
}
upload_worker() {
    local until=$1 n=0
    while [ "$(date +%s)" -lt "$until" ]; do
        "${cx[@]}" --data-binary "@$work/upload.bin" "http://$origin/upload" || true
        n=$((n + 1))
    done
    count upload "$n"
}
connect_worker() {
    local until=$1 n=0
    while [ "$(date +%s)" -lt "$until" ]; do
        "${cx[@]}" -p "http://$origin/small" || true
        "${cx[@]}" -p "http://$origin/big" || true
        n=$((n + 2))
    done
    count connect "$n"
}
bad_worker() {
    local until=$1 n=0 round=0
    while [ "$(date +%s)" -lt "$until" ]; do
        for f in "$bad"/*; do
            send_bad "$f"
            n=$((n + 1))
        done
        for f in "$leave"/*; do
            send_and_leave "$f"
            n=$((n + 1))
        done
        abandon_download
        n=$((n + 1))
        round=$((round + 1))
        if [ $((round % 10)) -eq 1 ]; then
            slow_head &
            n=$((n + 1))
        fi
    done
    wait
    count bad "$n"
}

run_traffic() { # SECONDS
    local until=$(( $(date +%s) + $1 ))
    workers=()
    keepalive_worker "$until" &
    workers+=($!)
    close_worker "$until" &
    workers+=($!)
    upload_worker "$until" &
    workers+=($!)
    connect_worker "$until" &
    workers+=($!)
    bad_worker "$until" &
    workers+=($!)
}
# Every worker stops by itself at its deadline; each of its requests is bounded in time.
wait_workers() { wait "${workers[@]}" 2>/dev/null || true; workers=(); }

# Idle origin connections the proxy holds in its pool (established to the origin's port).
pooled() { ss -Htnp state established "( dport = :$origin_port )" 2>/dev/null | grep -c "pid=$proxy_pid," || true; }

# Waits until no client is connected, then past the idle timeout (keep-alive connections are
# closed by then; idle pooled origin connections stay up to 30 s, src/pool.rs MAX_IDLE, and are
# counted separately with `pooled`).
settle() {
    for _ in $(seq 60); do
        [ "$(clients)" -eq 0 ] && break
        sleep 0.5
    done
    sleep $((IDLE_TIMEOUT + 1))
}

rows=()
sample() { # LABEL
    rows+=("$(printf '%-6s %6s %6s %9s %8s %8s' "$1" "$(( $(date +%s) - t0 ))" "$(fds)" "$(rss)" "$(threads)" "$(clients)")")
    printf '%s\n' "${rows[-1]}" >&2
}

t0=$(date +%s)
printf '%-6s %6s %6s %9s %8s %8s\n' phase t_s fds rss_kb threads clients >&2
sample start
run_traffic "$WARMUP"
wait_workers
settle
sample idle
idle_fds=$(( $(fds) - $(pooled) ))
idle_rss=$(rss)

soak_end=$(( $(date +%s) + minutes * 60 ))
run_traffic $((minutes * 60))
while [ "$(date +%s)" -lt "$soak_end" ]; do
    sleep "$SAMPLE_EVERY"
    alive || break
    sample soak
done
wait_workers
settle
alive && sample after
end_pooled=$(pooled)
end_fds=$(( $(fds) - end_pooled ))
end_rss=$(rss)

echo
printf '%-6s %6s %6s %9s %8s %8s\n' phase t_s fds rss_kb threads clients
printf '%s\n' "${rows[@]}"
echo
echo "requests by kind (warm-up + soak):"
for kind in keepalive close upload connect bad; do
    printf '  %-10s %s\n' "$kind" "$(awk '{n += $1} END {print n + 0}' "$work/count.$kind" 2>/dev/null)"
done
echo "access log statuses:"
grep -o '"status":[0-9]*' "$work/access.log" | sort | uniq -c | sort -rn | sed 's/"status"://; s/^/  /' || true
if grep -qi 'panic' "$work/proxy.err"; then
    echo "FAIL: the proxy panicked:"; grep -i -m5 panic "$work/proxy.err"
    exit 1
fi
if ! alive; then
    echo "FAIL: the proxy died"; tail -5 "$work/proxy.err"
    exit 1
fi

fail=0
max_fds=$((idle_fds + FD_SLACK))
max_rss=$((idle_rss + RSS_SLACK_KB + idle_rss / 10))
echo
echo "descriptors, not counting idle pooled origin connections: idle $idle_fds -> after $end_fds (allowed <= $max_fds; $end_pooled pooled now)"
echo "rss (KiB):   idle $idle_rss -> after $end_rss (allowed <= $max_rss)"
if [ "$end_fds" -gt "$max_fds" ]; then
    echo "FAIL: descriptors did not return to their idle level"
    ls -l "/proc/$proxy_pid/fd" | tail -n +2 | awk '{print $NF}' | sed 's/:.*//' | sort | uniq -c
    fail=1
fi
if [ "$end_rss" -gt "$max_rss" ]; then
    echo "FAIL: resident memory did not return to its idle level"
    fail=1
fi
[ "$fail" -eq 0 ] && echo "OK: no descriptor or memory leak"
exit "$fail"
