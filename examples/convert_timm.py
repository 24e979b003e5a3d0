"""Convert a timm model to se_kernels, check it computes the same thing, and time it.

    python examples/convert_timm.py [model_name]
"""

import copy
import sys
import time

import timm
import torch

import se_kernels

name = sys.argv[1] if len(sys.argv) > 1 else "mobilenetv3_large_100"
device = "cuda" if torch.cuda.is_available() else "cpu"
model = timm.create_model(name, pretrained=False).to(device).eval()
fused = se_kernels.convert_model(copy.deepcopy(model))  # in place; deepcopy keeps the original
print(fused.se_kernels_summary)

x = torch.randn(8, 3, 224, 224, device=device)
with torch.no_grad():
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    for label, m in (("original", model), ("se_kernels", fused)):
        for _ in range(3):
            m(x)  # warm up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            m(x)
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"{label:10s} {(time.perf_counter() - start) / 10 * 1e3:7.2f} ms / batch of 8")
