#!/usr/bin/env bash
# The GPU bars of the tiled VAE (2D and video) and TeaCache, side by side with ComfyUI and diffusers.
#
#   scripts/gpu_bars.sh [all | vae_2d | vae_3d | teacache]...     # default: all
#   scripts/gpu_bars.sh --smoke [...]                             # tiny cases on any device (a CPU too)
#
# Needs a CUDA GPU and a python3 with torch. Optional, each adding rows:
#   COMFYUI_PATH    a ComfyUI checkout: ComfyUI's own VAEs and tiled nodes, and its Qwen-Image model for
#                   TeaCache. Only comfy.* is imported (no PyAV, no torchsde); ComfyUI's other requirements
#                   (einops, transformers, psutil, scipy, torchvision, safetensors, ...) must be importable.
#   diffusers       importable: diffusers' VAEs and their own enable_tiling.
#   WHEELS          a folder of wheels (diffusers, say) installed into a temporary folder first, for a
#                   machine without network access.
#   PYTHON          the interpreter (default python3); COMFYUI_PYTHON the one for ComfyUI's runs (default $PYTHON).
#   OUT             where results go (default out/gpu).
#
# Each benchmark runs under its own time limit (seconds; LIMIT_VAE_2D_COMFY etc. override them; 435 s
# in all, so the whole run stays under 8 minutes) and writes one JSON line per run as it finishes, so
# a run cut off still leaves its rows: $OUT/<bench>_<model>.jsonl (a last line {"stopped": ...} says when and
# why it stopped early), $OUT/env.txt (GPU, driver, torch), $OUT/log.txt (what the runs printed to
# stderr). docs/benchmarks.md says what the columns mean.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
benches=()
for arg in "$@"; do
    case $arg in
        --smoke) smoke=1 ;;
        all) benches+=(vae_2d vae_3d teacache) ;;
        vae_2d | vae_3d | teacache) benches+=("$arg") ;;
        *) echo "unknown argument '$arg': use all, vae_2d, vae_3d, teacache or --smoke" >&2; exit 2 ;;
    esac
done
[ ${#benches[@]} -gt 0 ] || benches=(vae_2d vae_3d teacache)

out=${OUT:-out/gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
comfy_py=${COMFYUI_PYTHON:-$py}
export PYTHONUNBUFFERED=1

if [ -n "${WHEELS:-}" ]; then
    site=$(mktemp -d)
    "$py" -m pip install --quiet --no-deps --no-index --target "$site" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ $smoke = 0 ] && ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "no CUDA GPU visible to $py (torch.cuda.is_available() is False); use --smoke to check the script on a CPU" >&2
    exit 1
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$out/env.txt"
cat "$out/env.txt"

have_comfy=0
[ -n "${COMFYUI_PATH:-}" ] && have_comfy=1
have_diffusers=0
"$py" -c "import diffusers" 2>/dev/null && have_diffusers=1

# run NAME LIMIT PYTHON ARGS...: one benchmark under its time limit, its rows appended to $out/NAME.jsonl.
run() {
    local name=$1 limit=$2 python=$3
    shift 3
    local file="$out/$name.jsonl"
    : > "$file"
    echo "== $name (limit ${limit} s): $python $*" | tee -a "$out/log.txt"
    timeout --kill-after=15 "$limit" "$python" "$@" >> "$file" 2>> "$out/log.txt"
    local rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        echo "{\"stopped\": \"time limit of $limit s\"}" >> "$file"
    elif [ $rc != 0 ]; then
        echo "{\"stopped\": \"exit code $rc (see log.txt)\"}" >> "$file"
    fi
    cat "$file"
}

if [ $smoke = 1 ]; then
    vae_2d_args=(--cases decode:64 encode:64 --tile 32)
    vae_3d_args=(--cases decode:64x64x1 decode:64x48x5 encode:64x48x5 --tile 32)
    teacache_args=(--device cpu --heads 1 --layers 2 --size 64 --steps 4 --repeats 1)
    long=900
else
    vae_2d_args=()
    vae_3d_args=()
    teacache_args=(--device cuda --layers 12 --repeats 2)
    long=0
fi
limit() { # limit VAR DEFAULT: the time limit in seconds: $VAR if set, else DEFAULT (--smoke: long enough for a CPU)
    local value=${!1:-}
    if [ -z "$value" ]; then
        value=$2
        [ $long = 0 ] || value=$long
    fi
    echo "$value"
}

for bench in "${benches[@]}"; do
    case $bench in
        vae_2d | vae_3d)
            module=benchmarks.bench_$bench
            args_var="${bench}_args[@]"
            upper=${bench^^}
            # ComfyUI's rows first and with most of the time; diffusers' get it all when they run alone
            main=$([ "$bench" = vae_2d ] && echo 110 || echo 170)
            side=$([ "$bench" = vae_2d ] && echo 35 || echo 40)
            if [ $have_comfy = 1 ]; then
                run "${bench}_comfy" "$(limit "LIMIT_${upper}_COMFY" "$main")" "$comfy_py" \
                    -m "$module" --comfy "${!args_var}"
            else
                side=$main
            fi
            if [ $have_diffusers = 1 ]; then
                run "${bench}_diffusers" "$(limit "LIMIT_${upper}_DIFFUSERS" "$side")" "$py" \
                    -m "$module" "${!args_var}"
            fi
            if [ $have_comfy = 0 ] && [ $have_diffusers = 0 ]; then
                echo "$bench: skipped, needs COMFYUI_PATH or diffusers" | tee -a "$out/log.txt"
            fi
            ;;
        teacache)
            # 80 s: drawing the random weights of 12 full-width blocks (4 G parameters) takes ~30 s of it
            if [ $have_comfy = 1 ]; then
                run teacache_comfy "$(limit LIMIT_TEACACHE 80)" "$comfy_py" -m benchmarks.bench_teacache "${teacache_args[@]}"
            else
                run teacache_mirror "$(limit LIMIT_TEACACHE 80)" "$py" -m benchmarks.bench_teacache "${teacache_args[@]}"
            fi
            ;;
    esac
done
