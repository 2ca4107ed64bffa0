#!/usr/bin/env bash
# Distributed engines with 2 CPU processes (tests/test_training_engines.py): DDP, DeepSpeed ZeRO-2 / ZeRO-3, FSDP2.
# Its own environment with the `deepspeed` extra (DeepSpeed builds from its sdist: about 2.5 min, gcc + ninja),
# DeepSpeed's CPU accelerator and gloo. DeepSpeed JIT-builds its `deepspeed_shm_comm` op on first use (1.5-5.5 min
# on 2 cores): it is built once here, into a cache inside this run, before the tests start their processes.
# Measured on the 2-core CI machine: 9.2 min with pip's wheel cache and the op built, before the example-script
# launches (ddp/zero2/zero3.yaml) and the ZeRO-3 / FSDP2 resume tests were added; those add 3.0 min (the test file
# now runs 20 tests in 7.7 min), so about 12 min warm. A cold run adds the DeepSpeed sdist build (about 2.5 min) and the JIT
# op (1.5-5.5 min, depending on load): 16-20 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
python -m venv --system-site-packages .venvs/distributed
.venvs/distributed/bin/pip install torch==2.13.0 -e ".[dev,deepspeed]"
export DS_ACCELERATOR=cpu TORCH_EXTENSIONS_DIR="$PWD/.venvs/distributed/torch_extensions" OMP_NUM_THREADS=1
echo "install: $((SECONDS - start)) s"
timeout 600 .venvs/distributed/bin/python -c \
    "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
echo "JIT op built: $((SECONDS - start)) s"
timeout 1200 .venvs/distributed/bin/python -m pytest tests/test_training_engines.py \
    -m "slow or not slow" -p no:cacheprovider -q --durations=20
echo "distributed engines: $((SECONDS - start)) s"
