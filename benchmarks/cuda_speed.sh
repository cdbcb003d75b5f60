#!/usr/bin/env bash
# Issue 12's CUDA cases in one go, for a short lease on a GPU machine: the `kitchen` preset's full CMIL
# update replayed as a CUDA graph (`cuda_graph`) with the projected wall time of the paper's 200K-step run
# (updates + env steps with rendering), the graph replay's agreement with eager updates (a test), the
# same update eager, CMIL at `paper` / `default` and VMAIL graphed, then the older cases (compiled
# imagination, VMAIL/DAC/BC eager). Sections run most important first, each under its own time limit, so
# that a lease that ends early still returns the first ones.
#
#   bash benchmarks/cuda_speed.sh OUTDIR        # JSON per section + cuda_speed.log in OUTDIR
#   SECTIONS="kitchen_graphed graph_test" bash benchmarks/cuda_speed.sh OUTDIR   # only those
#
# Needs python3 with a CUDA build of torch and cmil's packages (PYTHON picks another interpreter);
# rendering uses MuJoCo's EGL backend (MUJOCO_GL=egl), so the machine needs libEGL and a GPU driver.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} MUJOCO_GL=egl PYTHONUNBUFFERED=1
log="$out/cuda_speed.log"

section() {  # section NAME SECONDS update_speed.py-arguments...
  local name=$1 limit=$2
  shift 2
  [[ -z ${SECTIONS:-} || " $SECTIONS " == *" $name "* ]] || return 0  # SECTIONS="a b" runs only those
  echo "== $name ($(date +%T))" | tee -a "$log"
  timeout "$limit" "$py" benchmarks/update_speed.py --device cuda "$@" \
    --out "$out/update_speed_cuda_$name.json" 2>&1 | grep -v Warning | tee -a "$log"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  "$py" -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(), os.cpu_count(), 'cpus')"
} 2>&1 | tee -a "$log"
section kitchen_graphed 150 --methods cmil --presets kitchen --precision bf16 --cuda-graph --updates 20 --warmup 3 \
  --no-flops --project
if [[ -z ${SECTIONS:-} || " $SECTIONS " == *" graph_test "* ]]; then
  echo "== graph_test ($(date +%T))" | tee -a "$log"
  timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py 2>&1 | tail -25 | tee -a "$log"
fi
section kitchen_eager 100 --methods cmil --presets kitchen --precision bf16 --updates 10 --warmup 3 --no-flops
section others_graphed 120 --methods cmil vmail --presets paper default --precision bf16 --cuda-graph --updates 10 \
  --warmup 3 --no-flops
section kitchen_compiled 200 --methods cmil --presets kitchen --precision bf16 --compile --updates 10 --warmup 3 \
  --no-flops --project
section kitchen_methods 90 --methods vmail dac bc --presets kitchen --precision bf16 --updates 10 --warmup 3
echo "== done ($(date +%T))" | tee -a "$log"
