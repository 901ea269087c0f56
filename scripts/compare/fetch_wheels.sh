#!/usr/bin/env bash
# Download the wheels the comparison needs on the GPU machine into .whl/ (git-ignored), to be
# carried there: fla-core (flash-linear-attention's Triton kernels, pure Python).
#
# The GPU image already has torch 2.11 (cu130), triton 3.6, einops, safetensors, numpy and
# matplotlib (device README, KINDS.md), so only fla-core travels. fla-core 0.6.0 needs
# torch>=2.7, triton>=3.3 (extra "cuda") and einops.
#
# Usage (in the repository root, on a machine with PyPI):
#     bash scripts/compare/fetch_wheels.sh
# Then on the GPU machine, first thing in the command (with .whl carried):
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
set -euo pipefail

FLA_VERSION="${FLA_VERSION:-0.6.0}"
root="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
cd "$root"

# .whl/ must stay out of git (the repo's .gitignore lists /.whl; keep the exclude as a second guard).
if [ -d .git ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
    mkdir -p .git/info && echo '/.whl/' >> .git/info/exclude
fi
mkdir -p .whl

PY="${PYTHON:-python3}"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "fla-core==${FLA_VERSION}"

# Keep exactly one version of each package: two stop the whole install on the GPU machine.
for pkg in fla_core; do
    n=$(ls .whl/${pkg}-*.whl 2>/dev/null | wc -l)
    if [ "$n" -ne 1 ]; then
        echo "error: .whl holds $n wheels of $pkg; remove all but ${pkg}-${FLA_VERSION}" >&2
        ls .whl >&2
        exit 1
    fi
done

echo "requirements of the downloaded wheels (all but einops, torch, triton must be carried too):"
for w in .whl/*.whl; do
    echo "  $w"
    unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^/    /' || true
done
du -sh .whl
