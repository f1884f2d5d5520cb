#!/usr/bin/env bash
# A few bf16 training steps of SFT, on-policy KD and DPO on one NVIDIA GPU with a random-init
# ~0.5B composed speech LLM (nothing downloaded); prints throughput and peak memory per stage.
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --batch-size 8 --json gpu.json]
# Record the figures in benchmarks/RESULTS.md. CPU smoke test: python benchmarks/gpu_check.py --tiny --accelerator cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU found (nvidia-smi missing or failing); this check needs one GPU." >&2
  exit 2
fi
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: nvidia-smi sees a GPU but this torch ($("$PYTHON" -c 'import torch; print(torch.__version__)')) has no CUDA; install a CUDA build of torch." >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
exec "$PYTHON" benchmarks/gpu_check.py "$@"
