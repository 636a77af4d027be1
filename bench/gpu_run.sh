#!/usr/bin/env bash
# The GPU figures and the CUDA check, in parts that each fit one 10-minute device command.
#
#   bash bench/gpu_run.sh check     # nvidia-smi, torch's view, the cuda test cases
#   bash bench/gpu_run.sh ranking   # ranking_bench.py on ml-latest-small (seed 42)
#   bash bench/gpu_run.sh scale     # ranking_scale_bench.py, ml-25m-sized, one real epoch each
#   bash bench/gpu_run.sh speed     # mf_speed_bench.py (25M ratings; every model) + serving
#
# Needs only what the GPU machine has (python3 with torch, numpy, scipy, pandas, pyarrow,
# scikit-learn, pytest): the core package runs from this checkout (PYTHONPATH), no dagster,
# mlflow or duckdb. Logs and JSON go to $OUT (the device tool's return folder) or
# bench/results/gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"

case "${1:-}" in
  check)
    nvidia-smi | tee "$OUT/nvidia_smi.txt"
    "$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))"
    "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda \
      recsys_pipeline_tests/test_every_model_on_device.py \
      recsys_pipeline_tests/training/test_loop.py recsys_pipeline_tests/ranking/test_foldin.py \
      2>&1 | tee "$OUT/cuda_tests.log"
    ;;
  ranking)
    "$PY" bench/ranking_bench.py --device cuda --seed 42 --json "$OUT/ranking_cuda_42.json" \
      2>&1 | tee "$OUT/ranking_cuda_42.log"
    ;;
  scale)
    "$PY" bench/ranking_scale_bench.py --device cuda --full-epoch \
      --json "$OUT/ranking_scale_cuda.json" 2>&1 | tee "$OUT/ranking_scale_cuda.log"
    ;;
  speed)
    "$PY" bench/mf_speed_bench.py --device cuda --json "$OUT/mf_speed_cuda.json" \
      2>&1 | tee "$OUT/mf_speed_cuda.log"
    "$PY" bench/mf_speed_bench.py --device cuda --all-models \
      --json "$OUT/all_models_cuda.json" 2>&1 | tee "$OUT/all_models_cuda.log"
    "$PY" bench/serving_bench.py --device cuda 2>&1 | tee "$OUT/serving_cuda.log"
    ;;
  *)
    echo "usage: bash bench/gpu_run.sh check|ranking|scale|speed" >&2
    exit 2
    ;;
esac
