#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null || { echo "node (20+) is required for the JS interop tests" >&2; exit 1; }
# JS client packages pinned by tests/js/package-lock.json.
if [ -f tests/js/package-lock.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The binary is used by the tests that kill and restart a real server process.
cargo build --locked -p driftless-server --bin driftless
log=$(mktemp)
trap 'rm -f "$log"' EXIT
DRIFTLESS_REQUIRE_NODE=1 cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log"
# Fuzzing (scripts/fuzz.sh): in CI (CI is set) or when DRIFTLESS_FUZZ_SECONDS asks for it; skipped in
# quick local runs.
if [ -n "${DRIFTLESS_FUZZ_SECONDS:-}" ] || [ -n "${CI:-}" ]; then
  scripts/fuzz.sh "${DRIFTLESS_FUZZ_SECONDS:-20}"
fi

# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test
# binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
