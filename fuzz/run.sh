#!/usr/bin/env bash
# Builds the fuzz targets once, then runs each for SECONDS (default 300), JOBS at a time
# (default 2), on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass -Z flags).
# SANITIZER (default none: the fuzzed code has no `unsafe`, and AddressSanitizer makes these
# allocation-heavy targets ~30x slower) may be set to address.
# Needs cargo-fuzz: `cargo install cargo-fuzz`.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Logs go to fuzz/logs/<target>.log (final exec counts at the end: stat::number_of_executed_units),
# new corpus entries to fuzz/corpus/<target>/, crashes to fuzz/artifacts/<target>/.
# Replay the seeds and every crash without libFuzzer: (cd fuzz && cargo test).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(viewer_stream upstream_stream playlist control_json node_api)
fi
jobs=${JOBS:-2}
export RUSTC_BOOTSTRAP=1

cargo fuzz build -s "${SANITIZER:-none}"
mkdir -p logs
bin=target/x86_64-unknown-linux-gnu/release
pids=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzzing $t for ${secs}s"
  "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -print_final_stats=1 \
    -rss_limit_mb=4096 -timeout=10 "corpus/$t" >"logs/$t.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for t in "${targets[@]}"; do
  # (|| true: a run still going, or one that died, has no stats yet; set -e would stop here)
  execs=$(grep -a 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}' || true)
  rate=$(grep -a 'stat::average_exec_per_sec' "logs/$t.log" | awk '{print $2}' || true)
  crash=$(grep -a -c 'Test unit written' "logs/$t.log" || true)
  echo "$t: ${execs:-?} execs, ${rate:-?} exec/s, crashes: $crash"
done
exit $status
