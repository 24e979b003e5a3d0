"""Triton kernels for the fused SE forward (squeeze, excite) and backward.

Importing this package needs triton; ``se_kernels.ops`` imports it only when triton is
installed, so the rest of se_kernels works without it.
"""
