#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, preset `fuzz`) and runs each for SECONDS (default
# 60), one after another, from a copy of its checked-in corpus fuzz/corpus/<target>/ (which
# is never written to). Prints the executions per target and exits 1 if any fuzzer found a
# crash, a failed check, a leak or a hang; the input that did it is kept under
# BUILD/fuzz-artifacts/.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]      targets: item session event cli dispatcher
# Environment: KUGETSU_FUZZ_BUILD_DIR (default build/fuzz).
# Installs nothing itself: missing packages come from scripts/setup-debian.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
[ "$#" -gt 0 ] && shift
case $seconds in '' | *[!0-9]* | 0) echo "fuzz.sh: SECONDS must be a whole number above 0, not '$seconds'" >&2; exit 64 ;; esac
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(item session event cli dispatcher)
for t in "${targets[@]}"; do
    [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: no target '$t' (no fuzz/corpus/$t)" >&2; exit 64; }
done
build=${KUGETSU_FUZZ_BUILD_DIR:-build/fuzz}

bash scripts/setup-debian.sh
mkdir -p "$build"
cmake --preset fuzz -B "$build" >"$build/fuzz-configure.log" 2>&1 || { cat "$build/fuzz-configure.log" >&2; exit 1; }
cmake --build "$build" -j2 --target "${targets[@]/#/kugetsu-fuzz-}"

work=$(mktemp -d "${TMPDIR:-/tmp}/kugetsu-fuzz.XXXXXX")
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
    dict=()
    case $t in
        item | session | event) dict=(-dict=fuzz/dict/records.dict) ;;
        cli) dict=(-dict=fuzz/dict/cli.dict) ;;
    esac
    echo "fuzz.sh: $t for ${seconds}s"
    rc=0
    "$build/fuzz/kugetsu-fuzz-$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$t-" "$work/$t" >"$work/$t.log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
    inputs=$(find "$work/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "fuzz.sh: $t FAILED (exit $rc); the end of its log:" >&2
        tail -n 40 "$work/$t.log" >&2
        cp "$work/$t.log" "$artifacts/$t.log"
        summary+=("$(printf '%-11s %12s executions  FAILED (exit %d): %s' "$t" "${runs:-?}" "$rc" "$artifacts/$t.log")")
    else
        summary+=("$(printf '%-11s %12s executions in %ss, corpus %d inputs' "$t" "${runs:-?}" "$seconds" "$inputs")")
    fi
done

echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
exit "$status"
