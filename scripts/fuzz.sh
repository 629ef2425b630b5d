#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for a bounded time and reports executions and
# findings.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 30 seconds each, every target)
#
# cargo-fuzz needs nightly compiler features; no nightly toolchain can be fetched here, so the
# stable one is asked for them with RUSTC_BOOTSTRAP=1. No sanitizer by default (the project has
# no unsafe code, and uninstrumented runs get several times more executions); set
# FUZZ_SANITIZER=address to turn AddressSanitizer on. Debug assertions are on, so arithmetic
# overflow is a finding. New corpus entries go to fuzz/corpus/TARGET (not committed); the
# committed seeds in fuzz/seeds/TARGET are read only. A crash leaves its input in
# fuzz/artifacts/TARGET and makes this script exit 1.
set -euo pipefail

seconds="${1:-30}"
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
sanitizer="${FUZZ_SANITIZER:-none}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it from crates.io" >&2
    cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer, debug assertions on)" >&2
if ! cargo fuzz build -s "$sanitizer" -a >&2; then
    echo "fuzz: the targets do not build" >&2
    exit 2
fi
# Run the binaries just built (not `cargo fuzz run`, which would rebuild if the tree changed
# in the meantime, in the middle of a run).
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
    # A target's own dictionary (fuzz/TARGET.dict) if it has one, else the HTTP tokens.
    dict=fuzz/http.dict
    [ -f "fuzz/$t.dict" ] && dict="fuzz/$t.dict"
    before="$(find "fuzz/artifacts/$t" -type f | wc -l)"
    echo "== $t: ${seconds}s" >&2
    status=0
    # libFuzzer stops at the first crash; -timeout makes a hang (one input > 10 s) a finding.
    "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -dict="$dict" -print_final_stats=1 \
        "fuzz/corpus/$t" "${seeds[@]}" >"$logs/$t" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1 || true)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t" | tail -1 || true)"
    cov="$( (grep -o 'cov: [0-9]*' "$logs/$t" || true) | tail -1 | cut -d' ' -f2)"
    corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
    found=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        failed=1
        echo "!! $t: exit $status, $found new artifact(s); last lines of its log:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|Base64' "$logs/$t" | tail -8 >&2 || tail -5 "$logs/$t" >&2
    fi
    summary+=("$(printf '%-16s %14s %10s %6s %7s %9s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" "$found")")
done

printf '\n%-16s %14s %10s %6s %7s %9s\n' target executions execs/s cov corpus findings
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "findings: see fuzz/artifacts/ (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s $sanitizer -a TARGET FILE)"
    exit 1
fi
echo "no findings"
