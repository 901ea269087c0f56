#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: gpu-bundle/run.sh tests|benches|sanitize|check|all
# Writes logs to ${OUT:-gpu-bundle/out}. Needs no Rust toolchain.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/out}"; mkdir -p "$out"
# Test binaries look for the CLI where cargo built it; point that path at the bundled one.
built_at=$(strings "$here/tests/cli" 2>/dev/null | grep -m1 '/target/release/attn-kernels$' || true)
if [ -n "$built_at" ] && [ ! -e "$built_at" ]; then mkdir -p "$(dirname "$built_at")" && ln -sf "$here/bin/attn-kernels" "$built_at"; fi
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $(cat "$here/COMMIT")"; date -u; } | tee "$out/machine.txt"

run_tests() {
    local status=0
    # Outputs the ops allocate start as NaN, so an element a kernel fails to write fails its check.
    export ATTN_KERNELS_POISON_OUTPUTS=1
    for t in "$here"/tests/*; do
        echo "== $(basename "$t")"
        "$t" --test-threads=4 2>&1 | tee "$out/test-$(basename "$t").log" | grep -E "^test |test result|skipped|panicked" || true
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    done
    return $status
}
run_benches() {
    for b in "$here"/benches/*; do
        echo "== $(basename "$b")"
        "$b" --bench 2>&1 | tee "$out/bench-$(basename "$b").log" | grep -vE "^(Benchmarking|Warming|Collecting|Analyzing)" || true
    done
}
run_sanitize() {
    local status=0
    for tool in memcheck racecheck initcheck synccheck; do
        for t in "$here"/tests/gpu; do
            [ -e "$t" ] || continue
            echo "== compute-sanitizer --tool $tool $(basename "$t")"
            compute-sanitizer --tool "$tool" --error-exitcode 99 "$t" --test-threads=1 >"$out/sanitize-$tool-$(basename "$t").log" 2>&1
            local rc=$?; tail -3 "$out/sanitize-$tool-$(basename "$t").log"; [ $rc -eq 0 ] || status=1
        done
    done
    return $status
}
case "${1:-all}" in
    tests) run_tests ;;
    benches) run_benches ;;
    sanitize) run_sanitize ;;
    check) "$here/bin/attn-kernels" info --ptxas | tee "$out/info.txt"; "$here/bin/attn-kernels" check | tee "$out/check.txt" ;;
    all) "$here/bin/attn-kernels" info | tee "$out/info.txt"; "$here/bin/attn-kernels" check | tee "$out/check.txt"; run_tests; run_benches ;;
    *) echo "usage: $0 tests|benches|sanitize|check|all" >&2; exit 2 ;;
esac
