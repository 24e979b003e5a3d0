"""SE time inside a whole model (CPU), in passes over the SE layers' activations.

    python -m benchmarks.se_time --model efficientnet_b0 --batch 8 --mode train

Times every SE module inside the model with hooks (forward, and in a training step its
backward: from the gradient reaching its output to the gradient leaving its input), in
the original model and in the converted one, in interleaved rounds. Each round also
times one ``copy_`` of a tensor of every SE input's shape (a read pass and a write pass
over all of them), so each SE time is also given in *passes*: SE time / half the copy
time. A two-launch fused layer makes 3 passes forward (x twice, y) and 4 backward (g and
x; g again, dx), so ``passes`` shows how close the converted layers are to that floor, and
what a whole-model target would ask of them.
Hooks add a few microseconds per module, which matters at batch 1 only. In a converted
ResNet block the SE module also does the shortcut add and the ReLU, and its backward
window can hold the shortcut's (see SEClock): for SE-ResNets the two models' SE times are
not comparable, and e2e's ablation is the measure to read.

Two more figures put a whole-model target next to the SE layers:
- ``--target 1.10``: the SE time the converted layers may take for the step to be that
  much faster than the original's, ``SE_original - step_original * (1 - 1 / target)``
  (the steps differ by their SE times: the rest of the two models is the same code);
- *alone*: the converted SE modules run by themselves at the recorded shapes, all
  forwards in model order then all backwards in reverse, as in a step (so each layer's
  saved input is as cold as in the model), with their Python and autograd work but none
  of the rest of the model: what the in-model time would be without the model around it.
The copy yardstick runs in the same interleaved rounds as the steps, so the VM's drift
(10-30% within minutes) hits both alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

import se_kernels
from se_kernels.adapters import is_known_se
from se_kernels.convert import FusedSE

from .e2e import build, step_fn
from .environment import metadata
from .providers import copy_call


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mode", choices=["inference", "train"], default="train")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--backend", default="auto", help="se_kernels backend for the converted model")
    p.add_argument("--target", type=float, help="whole-model speedup to size the SE time for (e.g. 1.10)")
    p.add_argument("--out", type=Path, help="folder for se_time-<model>-<mode>-b<batch>.json")
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
        # (module, input shape, residual shape or None, out_act) per SE call, recorded by
        # the first step: what ``se_call`` and ``run_alone`` replay.
        self.calls: list[tuple] = []
        self.recording = True
        for module in model.modules():
            if is_known_se(module) or isinstance(module, FusedSE):
                module.register_forward_pre_hook(self._start, with_kwargs=True)
                module.register_forward_hook(self._stop)

    @property
    def shapes(self) -> list[torch.Size]:
        return [shape for _, shape, _, _ in self.calls]

    def reset(self) -> None:
        self.forward_s = self.backward_s = 0.0

    def _start(self, module, inputs, kwargs) -> None:
        if self.recording:  # a converted ResNet block passes its shortcut by keyword
            residual = kwargs.get("residual")
            self.calls.append((module, inputs[0].shape, None if residual is None else residual.shape,
                               kwargs.get("out_act", "identity")))
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


def channels_last(shape: torch.Size, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)


def se_call(module, shape, residual_shape, out_act, train: bool) -> tuple:
    """(call, leaf inputs, output shape) running one recorded SE call on fresh inputs."""
    x = channels_last(shape, train)
    kwargs, leaves = {"out_act": out_act}, [x]
    if residual_shape is not None:
        kwargs["residual"] = channels_last(residual_shape, train)
        leaves.append(kwargs["residual"])
    return (lambda: module(x, **kwargs)), leaves, shape


def epilogue_call(shape, residual_shape, train: bool) -> tuple:
    """The eager shortcut add and ReLU that a converted ResNet block fuses into its SE call
    (timm: ``x += shortcut; x = act3(x)``, ReLU in place)."""
    x, residual = channels_last(shape, train), channels_last(residual_shape, train)
    return (lambda: (x + residual).relu_()), [x, residual], shape


def run_alone(calls: list[tuple], params: list[torch.Tensor], train: bool) -> Callable[[], tuple[float, float]]:
    """A function running the given calls by themselves as a step does: every forward in
    model order, then (training) every backward in reverse order, so each call's saved
    input is as cold as in the model; it returns (forward ms, backward ms). Gradients are
    set to None between runs, untimed, as the step's ``zero_grad(set_to_none=True)`` does."""
    grads = [channels_last(shape) for _, _, shape in calls] if train else []
    leaves = [t for _, inputs, _ in calls for t in inputs] + params

    def run() -> tuple[float, float]:
        for t in leaves:
            t.grad = None
        start = time.perf_counter()
        if not train:  # each output freed at once, as in the model (kept, each would be fresh memory)
            with torch.no_grad():
                for call, _, _ in calls:
                    call()
            return (time.perf_counter() - start) * 1e3, 0.0
        outputs = [call() for call, _, _ in calls]
        forward_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        for y, grad in zip(reversed(outputs), reversed(grads)):
            y.backward(grad)
        return forward_ms, (time.perf_counter() - start) * 1e3

    return run


def main(argv=None) -> dict:
    args = parse_args(argv)
    train = args.mode == "train"
    original = build(args.model, args).train(train)
    converted = se_kernels.convert_model(copy.deepcopy(original), backend=args.backend)
    x = channels_last((args.batch, 3, args.resolution, args.resolution))
    target = torch.randint(0, 1000, (args.batch,))
    runs = {}
    for label, model in (("original", original), ("se_kernels", converted)):
        clock = SEClock(model)
        step = step_fn(model, args.mode, x, target)
        step()  # warm-up; records the SE calls
        clock.recording = False
        runs[label] = (clock, step, {"step": [], "se_forward": [], "se_backward": []})
    calls = runs["se_kernels"][0].calls
    modules = {id(module): module for module, *_ in calls}.values()
    alone = {"alone": run_alone([se_call(*c, train) for c in calls],
                                [q for m in modules for q in m.parameters()], train)}
    fused = [(shape, residual) for _, shape, residual, _ in calls if residual is not None]
    if fused:  # what the fused modules replace besides the SE layers
        alone["epilogue"] = run_alone([epilogue_call(*f, train) for f in fused], [], train)
    for run in alone.values():
        run()
    shapes = runs["original"][0].shapes
    copies = [copy_call(channels_last(shape)) for shape in shapes]
    copy_ms: list[float] = []
    alone_ms: dict[str, list[tuple[float, float]]] = {key: [] for key in alone}  # (forward, backward)
    for _ in range(args.rounds):  # interleaved: one step of each model per round, then the rest
        for clock, step, samples in runs.values():
            clock.reset()
            start = time.perf_counter()
            step()
            samples["step"].append((time.perf_counter() - start) * 1e3)
            samples["se_forward"].append(clock.forward_s * 1e3)
            samples["se_backward"].append(clock.backward_s * 1e3)
        start = time.perf_counter()
        for c in copies:
            c()
        copy_ms.append((time.perf_counter() - start) * 1e3)
        for key, run in alone.items():
            alone_ms[key].append(run())
    pass_ms = statistics.median(copy_ms) / 2
    pass_mb = sum(s.numel() for s in shapes) * 4 / 1e6
    meta = metadata("cpu")
    print(f"{args.model}, {args.mode}, batch {args.batch}, fp32 channels_last, {meta['device']}: "
          f"{len(shapes)} SE layers, {pass_mb:.1f} MB per pass over their inputs, "
          f"{pass_ms:.2f} ms per pass (half a copy_ of them)")

    def describe(forward_ms: float, backward_ms: float) -> str:
        total = forward_ms + backward_ms
        text = f"{total:7.2f} ms ({total / pass_ms:.1f} passes): forward {forward_ms:.2f} ms ({forward_ms / pass_ms:.1f} passes)"
        return text + (f", backward {backward_ms:.2f} ms ({backward_ms / pass_ms:.1f} passes)" if train else "")

    result = {"pass_ms": pass_ms, "pass_mb": pass_mb}
    for label, (_, _, samples) in runs.items():
        med = {k: statistics.median(v) for k, v in samples.items()}
        se_ms = med["se_forward"] + med["se_backward"]
        result[label] = dict(med, se_ms=se_ms, se_share=se_ms / med["step"], passes=se_ms / pass_ms)
        print(f"  {label:10s} step {med['step']:8.2f} ms | SE layers "
              f"{describe(med['se_forward'], med['se_backward'])}, {100 * se_ms / med['step']:.1f}% of the step")
    labels = {"alone": "converted SE layers alone (no model around them)",
              "epilogue": "the eager shortcut add + ReLU they fuse, alone"}
    for key, samples in alone_ms.items():
        forward_ms, backward_ms = (statistics.median(column) for column in zip(*samples))
        result[key] = dict(se_forward=forward_ms, se_backward=backward_ms, se_ms=forward_ms + backward_ms)
        print(f"  {labels[key]}: {describe(forward_ms, backward_ms)}")
    if args.target:
        orig = result["original"]
        allowed = orig["se_ms"] - orig["step"] * (1 - 1 / args.target)
        if fused:  # the converted modules also take over the eager add + ReLU
            allowed += result["epilogue"]["se_ms"]
        result["allowed_ms"] = allowed
        print(f"  a {args.target:.2f}x step needs the converted SE layers at <= {allowed:.2f} ms "
              f"({allowed / pass_ms:.1f} passes)"
              + (" (the SE time it saves plus the add + ReLU alone; compare with the layers alone:"
                 " the in-model backward windows hold shortcut nodes)" if fused else ""))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"se_time-{args.model}-{args.mode}-b{args.batch}.json"
        args_out = {k: str(v) for k, v in vars(args).items()}
        path.write_text(json.dumps({"metadata": meta, "args": args_out, **result}, indent=1))
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
