#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds each (default 20),
# after building them all once. Fails when a target finds a crash, a panic, a leak or
# a hang, and says where libFuzzer wrote the input (fuzz/artifacts/TARGET/…).
#
#   bash scripts/fuzz.sh                     # every target, 20 s each
#   FUZZ_SECONDS=180 bash scripts/fuzz.sh    # longer
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
        request_head | websocket_frames | templates | conditions) echo 4096 ;;
        *) echo 2048 ;;
    esac
}

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
echo "fuzz.sh: building the targets"
cargo +nightly fuzz build

mkdir -p fuzz/target/logs
failed=()
summary=()
for t in $targets; do
    work=fuzz/target/corpus/$t
    log=fuzz/target/logs/$t.log
    mkdir -p "$work"
    echo "fuzz.sh: $t for ${seconds}s"
    status=0
    cargo +nightly fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "fuzz.sh: FAILED: $t (exit $status); input: ${artifact:-see $log}" >&2
        echo "fuzz.sh: reproduce with: cargo +nightly fuzz run $t ${artifact:-<input>}" >&2
        failed+=("$t")
        summary+=("$t: FAILED after ${runs:-?} runs; input ${artifact:-?}")
    else
        summary+=("$t: ok, ${runs:-?} runs in ${seconds}s")
    fi
done

echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
