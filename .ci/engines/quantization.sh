#!/usr/bin/env bash
# Quantized loading (tests/test_quantization.py) in its own environment: the `quantization` extra (torchao,
# bitsandbytes) on top of the main environment's packages, so `import transformers` elsewhere stays torchao-free.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m venv --system-site-packages .venvs/quantization
.venvs/quantization/bin/pip install torch==2.13.0 -e ".[quantization]"
TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 timeout 900 .venvs/quantization/bin/python -m pytest tests/test_quantization.py -p no:cacheprovider -q
