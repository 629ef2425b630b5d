#!/usr/bin/env bash
# The one check everyone runs before asking for a merge (STYLE.md, habit 11):
#
#   1. cargo fmt --check
#   2. cargo clippy --all-targets -- -D warnings
#   3. scripts/test.sh [ARGS...]        (installs test peers, builds, runs every test)
#   4. cargo build --no-default-features  (the build without TLS must keep building)
#   5. no import cycle between the files of src/ (STYLE.md, habit 1a; tests/imports.rs)
#
#   scripts/check.sh [CARGO TEST ARGS...]
#
# Every step runs even when an earlier one fails, so one run shows everything to fix; the
# summary at the end names the failed steps and the exit status is 1 if any failed.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1

failed=()
run() {
    local name="$1"
    shift
    printf '\n==> check: %s\n' "$name"
    if "$@"; then
        echo "--> $name: ok"
    else
        echo "--> $name: FAILED"
        failed+=("$name")
    fi
}

run "cargo fmt --check" cargo fmt --check
run "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
run "scripts/test.sh" bash scripts/test.sh "$@"
run "cargo build --no-default-features" cargo build --no-default-features
run "no import cycle in src/" cargo test --quiet --test imports

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "check: all 5 steps passed"
    exit 0
fi
printf 'check: %d of 5 steps failed:\n' "${#failed[@]}"
printf '  - %s\n' "${failed[@]}"
exit 1
