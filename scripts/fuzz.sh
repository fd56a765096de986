#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, preset `fuzz`) and runs each for SECONDS (default
# 60), one after another, from a copy of its checked-in corpus fuzz/corpus/<target>/ (which
# is never written to). Prints the executions per target (and per second) and exits 1 if any
# fuzzer found a crash, a failed check, a leak or a hang; the input that did it is kept under
# BUILD/fuzz-artifacts/. The dispatcher's fuzzer is built for speed, without ASan: the corpus
# it grew is then run once through kugetsu-fuzz-dispatcher-asan.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#   targets: item session event slot import cli dispatcher
# Environment: KUGETSU_FUZZ_BUILD_DIR (default build/fuzz), KUGETSU_FUZZ_JOBS (build jobs,
# default 2).
# Installs nothing itself: missing packages come from scripts/setup-debian.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
[ "$#" -gt 0 ] && shift
case $seconds in '' | *[!0-9]* | 0) echo "fuzz.sh: SECONDS must be a whole number above 0, not '$seconds'" >&2; exit 64 ;; esac
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(item session event slot import cli dispatcher)
for t in "${targets[@]}"; do
    [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: no target '$t' (no fuzz/corpus/$t)" >&2; exit 64; }
done
build=${KUGETSU_FUZZ_BUILD_DIR:-build/fuzz}

bash scripts/setup-debian.sh
mkdir -p "$build"
cmake --preset fuzz -B "$build" >"$build/fuzz-configure.log" 2>&1 || { cat "$build/fuzz-configure.log" >&2; exit 1; }
build_targets=("${targets[@]/#/kugetsu-fuzz-}")
for t in "${targets[@]}"; do if [ "$t" = dispatcher ]; then build_targets+=(kugetsu-fuzz-dispatcher-asan); fi; done
cmake --build "$build" -j"${KUGETSU_FUZZ_JOBS:-2}" --target "${build_targets[@]}"

# The corpora being grown: on tmpfs when there is one (a new input is a file written).
tmp=${TMPDIR:-/tmp}
[ -n "${TMPDIR:-}" ] || { [ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm; }
work=$(mktemp -d "$tmp/kugetsu-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    cp fuzz/corpus/"$t"/* "$work/$t/"
    opts=()
    case $t in
        item | session | event | import) opts=(-dict=fuzz/dict/records.dict) ;;
        slot) opts=(-dict=fuzz/dict/slot.dict) ;;
        cli) opts=(-dict=fuzz/dict/cli.dict) ;;
        # About one operation a byte: 32 bytes are up to 29 operations and a drain (the bugs
        # it found take 8 to 13 bytes, minimised; the harness reads 80 operations at most).
        dispatcher) opts=(-max_len=32) ;;
    esac
    echo "fuzz.sh: $t for ${seconds}s"
    rc=0
    "$build/fuzz/kugetsu-fuzz-$t" "${opts[@]}" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$t-" "$work/$t" >"$work/$t.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] && [ "$t" = dispatcher ]; then
        # The corpus it grew, once each under ASan (-runs=0: no mutation).
        "$build/fuzz/kugetsu-fuzz-dispatcher-asan" -runs=0 -timeout=10 -artifact_prefix="$artifacts/$t-asan-" \
            "$work/$t" >"$work/$t-asan.log" 2>&1 || { rc=$?; cat "$work/$t-asan.log" >>"$work/$t.log"; }
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" | tail -n 1)
    inputs=$(find "$work/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "fuzz.sh: $t FAILED (exit $rc); the end of its log:" >&2
        tail -n 40 "$work/$t.log" >&2
        cp "$work/$t.log" "$artifacts/$t.log"
        summary+=("$(printf '%-11s %12s executions  FAILED (exit %d): %s' "$t" "${runs:-?}" "$rc" "$artifacts/$t.log")")
    else
        summary+=("$(printf '%-11s %12s executions in %ss (%s/s), corpus %d inputs' "$t" "${runs:-?}" "$seconds" "${rate:-?}" "$inputs")")
    fi
done

echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
exit "$status"
