#!/usr/bin/env bash
# Stage what the GPU machine lacks, here, before a session's device call (see README.md beside this).
#   .gpu/whl/      wheels of the packages its image lacks (py3.12, x86-64; ~9 MB)
#   .gpu/minilm/   the bundled all-MiniLM-L6-v2 with fp16 weights (~44 MB; 87 MB in fp32 exceeds one call's 64 MiB)
#   .gpu/scifact/  the SciFact copy from ../shared/data (../shared does not travel)
# .gpu/ is git-ignored (.git/info/exclude), so it travels only when a device call names it in `carry`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .gpu/whl .git/info
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
# the image has numpy, pandas, pyarrow, scipy, numba, typer, rich, matplotlib, torch,
# transformers and sentence-transformers; these are missing (ranx imports ir_datasets at import time)
WHEELS="bm25s==0.3.16 PyStemmer==3.1.0 ranx==0.3.21 datasets==5.2.0 dill multiprocess cbor2 lz4 orjson
fastparquet cramjam ir-datasets inscriptis trec-car-tools ijson unlzw3 warc3-wet zlib-state beautifulsoup4 soupsieve"
for w in $WHEELS; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .gpu/whl "$w" 2>/dev/null
done
"$PY" - <<'PY'
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hardneg.encode import default_model_path

src, dst = Path(default_model_path()), Path(".gpu/minilm")
if dst.exists():
    shutil.rmtree(dst)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino"))
weights = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(src / "model.safetensors").items()}
save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
PY
DATA=${DATA:-../shared/data/scifact}
rm -rf .gpu/scifact && cp -rL "$DATA" .gpu/scifact && chmod -R u+w .gpu/scifact
du -sh .gpu/* && du -sh .gpu
