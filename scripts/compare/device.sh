#!/usr/bin/env bash
# The comparison's one command on the GPU machine (repository root; carry .whl and gpu-carry):
#     bash scripts/compare/device.sh [--quick] [--sections a,b] [--out DIR] [other run.py options]
# Installs the carried wheels (fla-core) into /tmp/site, then runs scripts/compare/run.py with our
# bundled binary, writing into $OUT/compare unless --out is given.
set -uo pipefail
cd "$(dirname "$0")/../.."
# The bundle travels packed (scripts/gpu-bundle writes gpu-carry/gpu-bundle.tar.xz).
if [ ! -x gpu-bundle/bin/attn-kernels ] && [ -f gpu-carry/gpu-bundle.tar.xz ]; then
    tar -xJf gpu-carry/gpu-bundle.tar.xz || { echo "cannot unpack gpu-carry/gpu-bundle.tar.xz" >&2; exit 1; }
fi

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "note: no .whl/ carried: the linear-recurrence section will skip flash-linear-attention" >&2
fi
export PYTHONUNBUFFERED=1

out_given=0
for a in "$@"; do [ "$a" = "--out" ] && out_given=1; done
extra=()
if [ $out_given -eq 0 ]; then
    extra=(--out "${OUT:-/tmp}/compare")
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu \
    --format=csv 2>/dev/null || true
exec python3 scripts/compare/run.py --bin gpu-bundle/bin/attn-kernels "${extra[@]}" "$@"
