#!/usr/bin/env bash
# Set up from nothing and run the test suite (GPU tests run when a GPU is present and
# skip with a reason otherwise; Triton runs on the CPU interpreter without a GPU), then
# the short pytest-benchmark run, whose JSON lands in benchmarks/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
python -m pytest tests -q -p no:cacheprovider "$@"
mkdir -p benchmarks/out
python -m pytest benchmarks -q -p no:cacheprovider --benchmark-json benchmarks/out/pytest-benchmark.json
