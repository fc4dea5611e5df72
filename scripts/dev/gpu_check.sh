#!/usr/bin/env bash
# The GPU check of the torch CKKS evaluator, in one command on a machine with a CUDA GPU (after scripts/dev/setup.sh):
# the agreement tests with every torch tensor on CUDA (the tests pick CUDA when it is visible), the slow 2^16 test
# included, then the benchmark (scripts/bench/fhe_gpu.py, last line `ratio: <OpenFHE/torch LR time>`).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -c 'import torch, sys; ok = torch.cuda.is_available(); print("cuda:", ok, torch.cuda.get_device_name(0) if ok else ""); sys.exit(0 if ok else 1)'
.venv/bin/python -m pytest tests/fhe/test_gpu.py tests/fhe/test_gpu_service.py -q -p no:cacheprovider "$@"
.venv/bin/python scripts/bench/fhe_gpu.py --device cuda
