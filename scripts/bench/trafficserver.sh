#!/usr/bin/env bash
# Runs Apache Traffic Server 9.2 (Debian's trafficserver package) in the foreground as a plain
# forward proxy on 127.0.0.1:PORT, for scripts/bench.sh to set beside smolproxy:
#
#   scripts/bench/trafficserver.sh PORT DIR
#
# traffic_server itself, without traffic_manager: this script execs it, so the caller's PID is
# the proxy's and a plain kill (SIGTERM) ends it. Its configuration is
# trafficserver.records.config.in (next to this script) over a copy of /etc/trafficserver, so the
# package's own files are never touched; the copy, runtime files, logs and a small sparse cache
# span all go under DIR. Pin it like any other proxy under test: `taskset -c 0 trafficserver.sh …`.
#
# What it took (the comments in the records.config template say the rest):
# - ATS binds its network thread with hwloc whatever proxy.config.exec_thread.affinity says
#   (even 0, "no affinity", means the whole machine), which undoes the caller's taskset pin.
#   A synthetic hwloc topology (HWLOC_SYNTHETIC) is "not this system" to hwloc, so its binding
#   calls do nothing and every thread keeps the pin it inherited.
# - PROXY_CONFIG_CONFIG_DIR points it at the copy of the config directory; no runroot is needed.
# - The cache subsystem opens its span (storage.config) even with HTTP caching off, and the
#   span file must exist before start: 128 MB, sparse, so it takes no disk.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 PORT DIR" >&2; exit 2; }
port="$1"
dir="$2"
here="$(cd "$(dirname "$0")" && pwd)"

mkdir -p "$dir/etc" "$dir/run" "$dir/log" "$dir/cache"
# The stock files (ip_allow.yaml, logging.yaml, …), then ours over records.config.
cp -r /etc/trafficserver/. "$dir/etc/"
sed "s#@PORT@#$port#g; s#@RUN@#$dir#g" "$here/trafficserver.records.config.in" \
    >"$dir/etc/records.config"
# No remap rules: with remap_required 0 it forwards absolute-form requests as they come.
: >"$dir/etc/remap.config"
truncate -s 128M "$dir/cache/cache.db"
echo "$dir/cache/cache.db 128M" >"$dir/etc/storage.config"

export PROXY_CONFIG_CONFIG_DIR="$dir/etc"
# nproc counts the CPUs this process may run on (the pin), so the synthetic topology has as
# many processing units as ATS would use anyway.
HWLOC_SYNTHETIC="pu:$(nproc)"
export HWLOC_SYNTHETIC
exec traffic_server
