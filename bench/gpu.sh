#!/usr/bin/env bash
# The benchmark on a GPU machine, in under 5 minutes: floor, LitServe, the smallest Ray Serve
# app and the platform with the GPU profile (config/gpu.yaml over serve_config.yaml), more
# images and clients to fill the larger batches. Writes bench/out/gpu.json and gpu.md.
# Needs the project installed (make install) and PostgreSQL (scripts/ensure-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
bash scripts/ensure-postgres.sh
mkdir -p bench/out
"$PY" -m bench.run --overlay config/gpu.yaml --images 512 --concurrency 128 \
    --out bench/out/gpu.json | tee bench/out/gpu.md
