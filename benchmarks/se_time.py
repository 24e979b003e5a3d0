"""SE time inside a whole model (CPU), in passes over the SE layers' activations.

    python -m benchmarks.se_time --model efficientnet_b0 --batch 8 --mode train

Times every SE module inside the model with hooks (forward, and in a training step its
backward: from the gradient reaching its output to the gradient leaving its input), in
the original model and in the converted one, in interleaved rounds. Also times one
``copy_`` of every SE layer's input (a read pass and a write pass over all of them), so
each SE time is also given in *passes*: SE time / half the copy time. A two-launch fused
layer makes 3 passes forward (x twice, y) and 4-5 backward (g and x; g again, dx), so
``passes`` shows how close the converted layers are to that floor, and what a
whole-model target would ask of them. The copy runs alone and warm; inside a model a pass
costs more (inputs saved since the forward are cold, and some outputs land on freshly
mapped pages: a training step of EfficientNet-B0 at batch 8 takes 10-30K minor page
faults, original and converted alike).
Hooks add a few microseconds per module, which matters at batch 1 only. In a converted
ResNet block the SE module also does the shortcut add and the ReLU, and its backward
window can hold the shortcut's (see SEClock): for SE-ResNets the two models' SE times are
not comparable, and e2e's ablation is the measure to read.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import se_kernels
from se_kernels.adapters import is_known_se
from se_kernels.convert import FusedSE

from .e2e import build, step_fn
from .environment import metadata
from .providers import copy_call
from .timing import time_cpu


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mode", choices=["inference", "train"], default="train")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--backend", default="auto", help="se_kernels backend for the converted model")
    args = p.parse_args(argv)
    args.device, args.dtype = "cpu", "float32"
    return args


class SEClock:
    """Adds up the time spent inside a model's SE modules, forward and backward.

    Backward: from the gradient of a module's output being ready to the gradient of its
    input being ready (tensor hooks; full backward hooks would break timm blocks that add
    in place to the SE output). The autograd engine runs one node at a time on the CPU,
    so the window holds the module's backward, plus any node of a parallel branch that
    the engine orders into it (a ResNet block's downsample shortcut)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forward_s = self.backward_s = 0.0
        self.shapes: list[torch.Size] = []  # SE input shapes, recorded by the first call
        self.recording = True
        for module in model.modules():
            if is_known_se(module) or isinstance(module, FusedSE):
                module.register_forward_pre_hook(self._start)
                module.register_forward_hook(self._stop)

    def reset(self) -> None:
        self.forward_s = self.backward_s = 0.0

    def _start(self, module, inputs) -> None:
        if self.recording:
            self.shapes.append(inputs[0].shape)
        module._se_time_t0 = time.perf_counter()

    def _stop(self, module, inputs, output) -> None:
        self.forward_s += time.perf_counter() - module._se_time_t0
        x = inputs[0]
        if output.requires_grad and x.requires_grad:
            started = []
            output.register_hook(lambda grad: started.append(time.perf_counter()))
            x.register_hook(lambda grad: self._stop_backward(started))

    def _stop_backward(self, started: list) -> None:
        self.backward_s += time.perf_counter() - started[0]


def copy_ms(shapes: list[torch.Size], rounds: int) -> float:
    """Median time of one copy_ of every SE input (channels_last, fp32), all layers."""
    copies = [copy_call(torch.randn(s).contiguous(memory_format=torch.channels_last)) for s in shapes]
    timing = time_cpu({"copy": lambda: [c() for c in copies]}, rounds=rounds, round_ms=0.0)
    return timing["copy"].median_ms


def main(argv=None) -> dict:
    args = parse_args(argv)
    original = build(args.model, args).train(args.mode == "train")
    converted = se_kernels.convert_model(copy.deepcopy(original), backend=args.backend)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution).contiguous(
        memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (args.batch,))
    runs = {}
    for label, model in (("original", original), ("se_kernels", converted)):
        clock = SEClock(model)
        step = step_fn(model, args.mode, x, target)
        step()  # warm-up; records the SE input shapes
        clock.recording = False
        runs[label] = (clock, step, {"step": [], "se_forward": [], "se_backward": []})
    for _ in range(args.rounds):  # interleaved: one step of each model per round
        for clock, step, samples in runs.values():
            clock.reset()
            start = time.perf_counter()
            step()
            samples["step"].append((time.perf_counter() - start) * 1e3)
            samples["se_forward"].append(clock.forward_s * 1e3)
            samples["se_backward"].append(clock.backward_s * 1e3)
    shapes = runs["original"][0].shapes
    pass_ms = copy_ms(shapes, args.rounds) / 2
    pass_mb = sum(s.numel() for s in shapes) * 4 / 1e6
    print(f"{args.model}, {args.mode}, batch {args.batch}, fp32 channels_last, {metadata('cpu')['device']}: "
          f"{len(shapes)} SE layers, {pass_mb:.1f} MB per pass over their inputs, "
          f"{pass_ms:.2f} ms per pass (half a copy_ of them)")
    result = {"pass_ms": pass_ms, "pass_mb": pass_mb}
    for label, (_, _, samples) in runs.items():
        med = {k: statistics.median(v) for k, v in samples.items()}
        se_ms = med["se_forward"] + med["se_backward"]
        result[label] = dict(med, se_ms=se_ms, se_share=se_ms / med["step"], passes=se_ms / pass_ms)
        backward = (f", backward {med['se_backward']:.2f} ms ({med['se_backward'] / pass_ms:.1f} passes)"
                    if args.mode == "train" else "")
        print(f"  {label:10s} step {med['step']:8.2f} ms | SE layers {se_ms:7.2f} ms "
              f"({100 * se_ms / med['step']:.1f}% of the step, {se_ms / pass_ms:.1f} passes): "
              f"forward {med['se_forward']:.2f} ms ({med['se_forward'] / pass_ms:.1f} passes){backward}")
    return result


if __name__ == "__main__":
    main()
