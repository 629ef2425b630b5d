# shellcheck shell=bash
# The processes a measuring script starts (scripts/bench.sh, scripts/instructions.sh,
# scripts/memory.sh): sourced after the script has set $work (its scratch directory),
# $ready_tenths (the longest wait for a server, in tenths of a second) and die(). Every process
# started here is ended, and $work removed, when the script exits or is interrupted.
# shellcheck disable=SC2154 # $work and $ready_tenths are the sourcing script's
: "${work:?}" "${ready_tenths:?}"

started=()
cleanup() {
    local pid
    for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background with its output in $work/NAME.{out,err};
# sets $last_pid.
start() {
    local name="$1"
    shift
    # Made here, not by the child's redirection, so readers never race its creation.
    : >"$work/$name.out"
    : >"$work/$name.err"
    "$@" >>"$work/$name.out" 2>>"$work/$name.err" &
    last_pid=$!
    started+=("$last_pid")
}

# stop PID: ends one process this script started (SIGTERM) and waits for it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wait_port NAME PORT: waits until 127.0.0.1:PORT accepts.
wait_port() {
    local i
    for ((i = 0; i < ready_tenths; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    cat "$work/$1.err" "$work/$1.out" >&2 || true
    die "$1 did not start on port $2"
}

# nginx_origin PORT CONNECTIONS [EXTRA]: writes $work/nginx.conf for the measuring origin, one
# unprivileged nginx process (no master: pinned and measured as one) serving $work/www on
# 127.0.0.1:PORT with long keep-alive, and EXTRA (more server blocks) inside `http`.
nginx_origin() {
    mkdir -p "$work/www" "$work/nginx-tmp"
    [ -e "$work/www/1k" ] || head -c 1024 /dev/zero | tr '\0' 'x' >"$work/www/1k"
    chmod -R a+rX "$work/www"
    cat >"$work/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections $2; }
http {
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    client_body_temp_path $work/nginx-tmp;
    server {
        listen 127.0.0.1:$1 backlog=4096;
        root $work/www;
        location / { }
    }
${3:-}
}
CONF
}

# listening_addr NAME: waits for "listening on ADDR" in $work/NAME.err and prints ADDR.
listening_addr() {
    local i line
    for ((i = 0; i < ready_tenths; i++)); do
        line="$(sed -n 's/^listening on //p' "$work/$1.err" | head -n1)"
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        sleep 0.1
    done
    cat "$work/$1.err" >&2
    die "$1 did not start"
}

# start_sink CMD...: starts the bench sink (CMD: the pin, "$bench", sink) and sets $sink to the
# address it prints once listening.
start_sink() {
    start sink "$@"
    sink="$(listening_addr sink)"
}

# tinyproxy_conf FILE PORT: writes a tinyproxy configuration as scripts/bench.sh runs it: port
# PORT on loopback, foreground-friendly, no log noise, CONNECT allowed to the bench sink
# ($sink); its log and pid files beside FILE.
tinyproxy_conf() {
    cat >"$1" <<CONF
Port $2
Listen 127.0.0.1
Timeout 600
MaxClients 1000
LogLevel Critical
LogFile "${1%.conf}.log"
PidFile "${1%.conf}.pid"
ConnectPort ${sink##*:}
CONF
}
