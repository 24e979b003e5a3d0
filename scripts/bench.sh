#!/usr/bin/env bash
# Set up from nothing, build, and benchmark fused vs unfused SE on the device present:
# the per-layer sweep (quick: one SE layer per network) and a whole-model comparison.
# Pass --full for the full sweep. Results: benchmarks/out/<device>/ (CSV, JSON, PNG).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
quick="--quick"
if [ "${1:-}" = "--full" ]; then quick=""; shift; fi
python -m benchmarks.se_layer $quick "$@"
python -m benchmarks.e2e $quick
