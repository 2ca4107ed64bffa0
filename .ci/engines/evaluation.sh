#!/usr/bin/env bash
# The lmms-eval adapter and the offline tasks (tests/test_evaluation_lmms.py) in their own environment, installed
# with the command of docs/evaluation.md (lmms-eval pins av<16 and pulls torchvision; the package needs av>=18.1
# and no torchvision), plus pytest. The venv sees the main environment (torch, transformers, datasets are not
# installed again) but whatever lmms-eval changes lands in the venv only.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .venvs/evaluation
python -m venv --system-site-packages .venvs/evaluation
source .venvs/evaluation/bin/activate
# docs/evaluation.md install command (kept identical):
pip install torch==2.13.0 lmms-eval==0.7.3 && pip uninstall -y torchvision && pip install torch==2.13.0 "filelock<4" -e .
pip install torch==2.13.0 "pytest>=9.0"
timeout 900 python -m pytest tests/test_evaluation_lmms.py -p no:cacheprovider -q
