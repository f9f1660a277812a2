#!/usr/bin/env bash
# The GPU benchmarks in one script (run on a lent GPU machine from the repository root):
# extraction of a 7B Llama-shaped model against the reference protocol, checkpoint load time,
# and the batched probes and nHSIC at 7B sizes. Each script's table goes to $OUT (or ./bench/out).
set -uo pipefail
out="${OUT:-bench/out}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TRUSTTRACE_DATA="${TRUSTTRACE_DATA:-$PWD/.benchdata}"
export BENCH_TMP="${BENCH_TMP:-/tmp}"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
# Extraction first: its targets (30x the reference, 40 % of bf16 peak, a 10 s load) are the open ones.
python3 bench/extract.py --shape llama-7b --device cuda --vocab 32000 --reference-rows 100 --repeat 3 --load-test --diagnose 4096 16384 65536 --spreads 0.05 0.1 0.3 2>&1 \
  | grep -v -E "Loading weights|Writing model" | tee "$out/extract.txt"
python3 bench/probes.py --layers 32 --rows 1561 --hidden 4096 --device cuda 2>&1 | tee "$out/probes.txt"
python3 bench/mi.py --layers 32 --rows 1952 --hidden 4096 --device cuda 2>&1 | tee "$out/mi.txt"
