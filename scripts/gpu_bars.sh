#!/usr/bin/env bash
# Measure the GPU bars of the tiled VAE (2D and video) and TeaCache on a lent GPU machine.
#
# The device tool's machines have PyTorch but no diffusers and no network, so carry its wheels:
#   here, once:   pip download diffusers==0.42.1 importlib_metadata zipp --no-deps -d .gpu-wheels  (git ignores it)
#   then:         run(command="bash scripts/gpu_bars.sh", carry=[".gpu-wheels"], timeout_s=600)
# Writes one JSON-lines file per benchmark (and the GPU's name) to $OUT (default out/gpu). Each
# benchmark prints ratios measured side by side in one run; see README "Benchmarks".
# Pass benchmark names to run only some (vae_2d vae_3d teacache): one per call if all three do not
# fit in the tool's 10 minutes per command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
mkdir -p "$out"
site=$(mktemp -d)
python3 -m pip install --quiet --no-deps --no-index --target "$site" .gpu-wheels/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(vae_2d vae_3d teacache)
for name in "${benches[@]}"; do
    case $name in
        vae_2d) python3 -m benchmarks.bench_vae_2d > "$out/$name.jsonl" ;;
        vae_3d) python3 -m benchmarks.bench_vae_3d > "$out/$name.jsonl" ;;
        teacache) python3 -m benchmarks.bench_teacache --device cuda > "$out/$name.jsonl" ;;
        *) echo "unknown benchmark $name (vae_2d, vae_3d, teacache)" >&2; exit 2 ;;
    esac
    cat "$out/$name.jsonl"
done
