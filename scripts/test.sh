#!/usr/bin/env bash
# Set up from nothing and run the test suite (GPU tests run when a GPU is present and
# skip with a reason otherwise; Triton runs on the CPU interpreter without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
python -m pytest tests -q -p no:cacheprovider "$@"
