#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 30) on the stable toolchain, without a
# sanitizer (Rust code is memory safe; we hunt panics, aborts and hangs). For AddressSanitizer:
#   RUSTC_BOOTSTRAP=1 FUZZ_SANITIZER=address scripts/fuzz.sh 60
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script. Keep it: copy it into
# client-protocol/tests/fuzz-regressions/<target>/ and fuzz/seeds/<target>/, and add a test
# (see client-protocol/tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${DRIFTLESS_FUZZ_SECONDS:-30}}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=(frame_decode receive_sync engine_sequence)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cd fuzz
cargo fuzz build --sanitizer "$sanitizer"
for target in "${targets[@]}"; do
  # corpus/ (ignored by git) grows across local runs; seeds/ holds committed real frames and crashers.
  mkdir -p "corpus/$target" "seeds/$target"
  echo "fuzzing $target for ${seconds}s" >&2
  cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
