#!/usr/bin/env bash
# On the GPU machine (a device call with carry [".gpu"]), from the repo root:
#   bash benchmarks/gpu/run.sh progression [extra progression.py args]   # the full table
#   bash benchmarks/gpu/run.sh reranker                                 # cross-encoder, judge audit, ce-denoise row
# Installs the staged wheels into /tmp/site, restores fp32 weights in /tmp/minilm, writes
# what should come back under $OUT (at most 8 files).
set -uo pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
WORK=${WORK:-/tmp/hardneg-gpu}; mkdir -p "$WORK"
python3 - <<'PY' || exit 1
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

dst = Path("/tmp/minilm")
if not (dst / "model.safetensors").is_file():
    shutil.copytree(".gpu/minilm", dst, ignore=shutil.ignore_patterns("model.safetensors"), dirs_exist_ok=True)
    w = {k: v.float() if v.is_floating_point() else v for k, v in load_file(".gpu/minilm/model.safetensors").items()}
    save_file(w, dst / "model.safetensors", metadata={"format": "pt"})
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
what=${1:-progression}; shift || true
HN="python3 -c 'from hardneg.cli import app; app()'"
case "$what" in
  progression)
    python3 benchmarks/progression.py --data .gpu/scifact --model /tmp/minilm --work "$WORK/prog" --device cuda "$@" \
      2>&1 | tee "$OUT/progression.log"
    cp "$WORK/prog/table.md" "$OUT/table.md" 2>/dev/null
    tar czf "$OUT/results.tgz" -C "$WORK/prog" results 2>/dev/null ;;
  reranker)  # the dense candidates and the default row first (a fresh machine has neither), then the cross-encoder
    python3 benchmarks/progression.py --data .gpu/scifact --model /tmp/minilm --work "$WORK/prog" --device cuda \
      --rows base,default --seeds 1 2>&1 | tee "$OUT/default.log"
    eval "$HN" train-reranker --data .gpu/scifact --candidates "$WORK/prog/candidates/dense-base.parquet" \
      --model /tmp/minilm --out "$WORK/ce" --folds 2 --epochs "${CE_EPOCHS:-10}" --max-length 256 --batch-size 32 \
      --no-progress "$@" 2>&1 | tee "$OUT/reranker.log"
    cp "$WORK/ce/hardneg_reranker.json" "$OUT/" 2>/dev/null
    eval "$HN" audit "$WORK/prog/candidates/dense-base.parquet" --data .gpu/scifact --cross-encoder "$WORK/ce" \
      --judge-sample 300 --out "$WORK/audit" 2>&1 | tee "$OUT/audit.log"
    cp "$WORK/audit/audit.json" "$OUT/" 2>/dev/null
    python3 benchmarks/progression.py --data .gpu/scifact --model /tmp/minilm --work "$WORK/prog" --device cuda \
      --rows base,default,ce-denoise,auto-judge --seeds 1 --reranker "$WORK/ce" --audit "$WORK/audit/audit.json" 2>&1 | tee "$OUT/ce-denoise.log"
    cp "$WORK/prog/table.md" "$OUT/table-ce.md" 2>/dev/null ;;
  *) echo "usage: run.sh progression|reranker [args]"; exit 2 ;;
esac
