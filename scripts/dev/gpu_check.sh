#!/usr/bin/env bash
# The GPU check of the torch CKKS evaluator, in one command on a machine with a CUDA GPU:
#   scripts/dev/gpu_check.sh [extra pytest arguments]
# (1) sets up the environment if there is none (scripts/dev/setup.sh; torch from PyPI is the CUDA build);
# (2) refuses to go on without a visible CUDA device, so a CPU run is never mistaken for a GPU figure;
# (3) the agreement tests with every torch tensor on CUDA (the tests pick CUDA when it is visible), the slow 2^16
#     test included, and fhe-inference with `evaluator.backend: torch`: synchronous inference AND asynchronous
#     jobs (SubmitJob through the same sandboxed workers) decrypting to the model;
# (4) the benchmark (scripts/bench/fhe_gpu.py, last line `ratio: <OpenFHE/torch LR time>`).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || scripts/dev/setup.sh
.venv/bin/python -c 'import torch, sys; ok = torch.cuda.is_available(); print("cuda:", ok, torch.cuda.get_device_name(0) if ok else "(no CUDA device visible: this is not a GPU check)"); sys.exit(0 if ok else 1)'
.venv/bin/python -m pytest tests/fhe/test_gpu.py tests/fhe/test_gpu_service.py -q -p no:cacheprovider "$@"
.venv/bin/python scripts/bench/fhe_gpu.py --device cuda
