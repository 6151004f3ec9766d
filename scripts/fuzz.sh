#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds each (default 20),
# after building them all once. Fails when a target finds a crash, a panic, a leak or
# a hang, and says where libFuzzer wrote the input (fuzz/artifacts/TARGET/…).
#
#   bash scripts/fuzz.sh                     # every target, 20 s each, one per core
#   FUZZ_SECONDS=180 FUZZ_BUILD="--release -s address" bash scripts/fuzz.sh   # longer
#   FUZZ_TARGETS="jwt config" bash scripts/fuzz.sh
#
# Needs cargo-fuzz (installed here if missing) and a nightly toolchain (installed with
# rustup if missing; the script stops if that fails). New inputs that libFuzzer finds
# go to fuzz/target/corpus/TARGET (not committed); the seeds in fuzz/corpus/TARGET
# are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# Targets fuzzed at once (each on a core of its own).
jobs=${FUZZ_JOBS:-$(nproc)}
# How the targets are built: by default unoptimised and without a sanitizer, which
# builds in a third of the time (the CI budget) — the code is safe Rust, and a panic,
# an overflow or a hang is what the targets look for. FUZZ_BUILD="--release -s address"
# (cargo-fuzz's own default) for long runs.
read -r -a build_flags <<<"${FUZZ_BUILD:---dev -s none}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain; installing it (rustup toolchain install nightly --profile minimal)"
    if ! rustup toolchain install nightly --profile minimal; then
        echo "fuzz.sh: FAILED: cargo-fuzz needs a nightly toolchain, and rustup could not install one" >&2
        exit 1
    fi
fi

# Inputs longer than this are cut: long enough for every seed, short enough to stay fast.
max_len() {
    case "$1" in
        config | import) echo 16384 ;;
        request_head | websocket_frames | templates | conditions | proxy_header) echo 4096 ;;
        *) echo 2048 ;;
    esac
}

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
echo "fuzz.sh: building the targets (${build_flags[*]})"
cargo +nightly fuzz build "${build_flags[@]}"

mkdir -p fuzz/target/logs
# One target: fuzzes it for $seconds and writes its one-line outcome to its .result.
run_one() {
    local t=$1 work=fuzz/target/corpus/$1 log=fuzz/target/logs/$1.log status=0
    mkdir -p "$work"
    cargo +nightly fuzz run "${build_flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    local runs artifact
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "FAILED after ${runs:-?} runs (exit $status); input ${artifact:-see $log}; reproduce with: cargo +nightly fuzz run ${build_flags[*]} $t ${artifact:-<input>}" >"$log.result"
    else
        echo "ok, ${runs:-?} runs in ${seconds}s" >"$log.result"
    fi
}

echo "fuzz.sh: every target for ${seconds}s, $jobs at a time"
running=0
for t in $targets; do
    rm -f "fuzz/target/logs/$t.log.result"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

failed=()
summary=()
for t in $targets; do
    result=$(cat "fuzz/target/logs/$t.log.result" 2>/dev/null || echo "FAILED: no result (see fuzz/target/logs/$t.log)")
    summary+=("$t: $result")
    if [[ "$result" != ok* ]]; then
        tail -n 40 "fuzz/target/logs/$t.log" >&2 || true
        failed+=("$t")
    fi
done

echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
