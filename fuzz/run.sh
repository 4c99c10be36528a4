#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/fuzz_targets and runs each for SECONDS (default 30); fails on any
# crash, panic (a broken invariant), timeout or out-of-memory.
#
#   fuzz/run.sh            30 s per target (what `scripts/test fuzz` and CI run)
#   fuzz/run.sh 3600       an hour per target
#   FUZZ_TARGETS="route digest" fuzz/run.sh 600
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The committed seeds are
# fuzz/corpus/<target>/*.seed*; what libFuzzer finds goes to fuzz/target/corpus/<target> (kept between runs,
# never committed), a crashing input to fuzz/artifacts/<target>/ (reproduce it with
# `cd fuzz && cargo +nightly fuzz run -a <target> artifacts/<target>/crash-…`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-30}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (cargo-fuzz needs it): rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi

targets=(${FUZZ_TARGETS:-$(cargo +nightly fuzz list)})
echo "fuzz/run.sh: building ${targets[*]}"
cargo +nightly fuzz build --debug-assertions

logs=target/fuzz-logs
mkdir -p "$logs"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "corpus/$t"
  log="$logs/$t.log"
  # The first corpus directory receives new inputs; the seed directory is only read.
  if cargo +nightly fuzz run --debug-assertions "$t" "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$t")
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)" || true
  cov="$(grep -oE 'DONE[[:space:]]+cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 | sed -E 's/.*(cov: .*)/\1/')" || true
  echo "fuzz: $t: $result (${runs:-?} execs, limit ${seconds}s; ${cov:-no stats})"
  if [[ $result == FAILED ]]; then
    { grep -E -A1 'panicked at' "$log" | head -4
      grep -E 'ERROR: libFuzzer|SUMMARY|Test unit written to|==[0-9]+==ERROR' "$log" | head -10; } | sed 's/^/  /' || true
    echo "  full log: fuzz/$log"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets OK, ${seconds}s each"
