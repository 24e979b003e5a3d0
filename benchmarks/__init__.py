"""se_kernels benchmark suite: fused vs unfused SE layers and whole models.

    python -m benchmarks.se_layer --quick     # per-layer sweep (see README.md here)
    python -m benchmarks.e2e --quick          # whole-model throughput
"""
