#!/usr/bin/env bash
# Builds the release binary in its three feature sets and checks each against its budget
# (SPEC.md §9): the default build (tls + tls-server: interception, `ca new`; export: `smolproxy
# export` with HAR, Postman collections with tests, environments) 1,800,000 bytes; the router
# build (`--no-default-features --features tls`, TLS as a client only, no `export`) 1,500,000;
# no features (no TLS, no `export`) 700,000. Exit 1 if any is over.
#
#   scripts/size.sh              the three builds with the profile in Cargo.toml
#   scripts/size.sh --compare    also the default and no-feature builds at opt-level "s" and
#                                "z", side by side (CARGO_PROFILE_RELEASE_OPT_LEVEL; Cargo.toml
#                                is not changed)
#
# Each feature set builds in its own target dir, so no build throws away another's artifacts;
# the opt-level comparison uses more (target/size-*).
set -euo pipefail
shopt -s inherit_errexit

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

budget_default=1800000
budget_tls=1500000
budget_notls=700000
compare=no
case "${1:-}" in
    "") ;;
    --compare) compare=yes ;;
    *) echo "usage: $0 [--compare]" >&2; exit 2 ;;
esac

# build LABEL TARGET_DIR [CARGO ARGS...]: builds quietly and prints the binary's path.
build() {
    local label="$1" dir="$2"
    shift 2
    echo "building $label ..." >&2
    cargo build --release --quiet --bin smolproxy --target-dir "$dir" "$@" >&2 || return 1
    echo "$dir/release/smolproxy"
}

size_of() { stat -c %s "$1"; }
kb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000 }'; }

over=0
# report LABEL BYTES BUDGET: one table row; remembers if over budget.
report() {
    local label="$1" bytes="$2" budget="$3" verdict=ok
    if [ "$bytes" -gt "$budget" ]; then
        verdict=OVER
        over=1
    fi
    printf '%-44s %10s bytes %9s KB   budget %9s bytes   %s\n' \
        "$label" "$bytes" "$(kb "$bytes")" "$budget" "$verdict"
}

opt="$(sed -n '/^\[profile.release\]/,/^\[/s/^opt-level *= *//p' Cargo.toml | tr -d '"' | head -n1)"
default_bin="$(build "default features (tls, tls-server, export)" target)"
router_bin="$(build "--no-default-features --features tls" target/size-router \
    --no-default-features --features tls)"
notls_bin="$(build "--no-default-features" target/size-notls --no-default-features)"
default_size="$(size_of "$default_bin")"
router_size="$(size_of "$router_bin")"
notls_size="$(size_of "$notls_bin")"

echo
echo "release binary sizes (x86_64, stripped; profile.release opt-level=\"${opt:-?}\")"
report "smolproxy (default: tls, tls-server, export)" "$default_size" "$budget_default"
report "smolproxy --features tls (router)" "$router_size" "$budget_tls"
report "smolproxy --no-default-features" "$notls_size" "$budget_notls"

if [ "$compare" = yes ]; then
    echo
    echo "opt-level comparison (CARGO_PROFILE_RELEASE_OPT_LEVEL)"
    printf '%-10s %14s %14s\n' "opt-level" "default (bytes)" "no tls (bytes)"
    for level in s z; do
        if [ "$level" = "$opt" ]; then
            # Cargo.toml's own level: the builds above are these.
            a="$default_bin" b="$notls_bin"
        else
            a="$(CARGO_PROFILE_RELEASE_OPT_LEVEL=$level build "default, opt-level $level" "target/size-$level")"
            b="$(CARGO_PROFILE_RELEASE_OPT_LEVEL=$level build "no tls, opt-level $level" \
                "target/size-notls-$level" --no-default-features)"
        fi
        printf '%-10s %14s %14s\n' "\"$level\"" "$(size_of "$a")" "$(size_of "$b")"
    done
fi

if [ "$over" -ne 0 ]; then
    echo "size: over budget" >&2
    exit 1
fi
