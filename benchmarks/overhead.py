"""Per-call host cost of one SE layer, from the eager module down to the raw op.

    python -m benchmarks.overhead              # MobileNetV3-Large's first SE layer, 1x72x2x2
    python -m benchmarks.overhead --threads 2 --hw 7
    python -m benchmarks.overhead --train      # forward + backward, train mode

At this size the kernels do almost no work, so each figure is the fixed cost of its
layer of the call stack: the eager timm module; the converted module (``convert_model``,
eval, ``no_grad``: its inference path); ``se_kernels.squeeze_excite``; the forward op
(``torch.ops.se_kernels.forward``, which returns the tensors backward needs), through
its Python autograd kernel (which every call passes, even under ``no_grad``) and below it
(as SEFunction calls it); and the infer op (y only) that the modules and the functional call use when no graph is built.
On a GPU the calls are queued back to back, so the figures are host time per call while
the kernels keep up. Interleaved rounds; median and 20th/80th percentiles in us.

``--train``: one forward and backward (``y.backward(g)``, the autograd engine's start
included in every row) of the eager module and of the converted module in train mode,
the input and all four parameters requiring grad; the two autograd nodes called directly
with the module's parameters (the C++ one, ``se_kernels::squeeze_excite``, which the
converted module builds on this backend, and the Python ``SEFunction``, which it built
before and still builds for Triton and under torch.compile); and, as the floor under them,
the three ops a training call runs (forward, backward, fc_grads) called directly, below
autograd.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

import se_kernels
from se_kernels.adapters import is_known_se
from se_kernels.backends import resolve_backend
from se_kernels.convert import FusedSE
from se_kernels.autograd import SEFunction
from se_kernels.fc_grads import fc_grads
from se_kernels.native_autograd import NATIVE_SIM_FLAG, native_op
from se_kernels.ops import backend_ops, call_without_autograd
from se_kernels.options import as_matrix

from .environment import metadata
from .timing import time_cpu


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hw", type=int, default=2, help="spatial size H = W")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--train", action="store_true", help="forward + backward in train mode")
    return p.parse_args(argv)


def first_se_layer() -> nn.Module:
    """MobileNetV3-Large's first SE module (C=72, R=24, ReLU, hard sigmoid), as timm builds it."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_large_100", pretrained=False)
    return next(m for m in model.modules() if is_known_se(m))


def calls(device: str, batch: int, hw: int) -> dict:
    eager = first_se_layer().to(device).eval()
    converted = se_kernels.convert_model(nn.Sequential(eager), backend="auto")[0]
    assert isinstance(converted, FusedSE), type(converted)
    channels = eager.conv_reduce.in_channels
    x = torch.randn(batch, channels, hw, hw, device=device).contiguous(memory_format=torch.channels_last)
    w1, b1 = as_matrix("w1", eager.conv_reduce.weight), eager.conv_reduce.bias
    w2, b2 = as_matrix("w2", eager.conv_expand.weight), eager.conv_expand.bias
    spec = converted.se_spec
    options = dict(pool=spec.pool, act=spec.act, gate=spec.gate)
    op_args = (x, w1, b1, w2, b2, None, spec.pool, spec.act, spec.gate, 1.0, "identity")
    ops = backend_ops(resolve_backend("auto", x))
    reference = eager(x)
    out = {
        "eager timm module": lambda: eager(x),
        "converted module": lambda: converted(x),
        "squeeze_excite": lambda: se_kernels.squeeze_excite(x, w1, b1, w2, b2, **options),
        "forward op": lambda: ops.forward(*op_args),
        "forward op, below autograd": lambda: call_without_autograd(ops.forward, *op_args),
        "infer op": lambda: ops.infer(*op_args),
    }
    for name, fn in out.items():  # every row computes the same layer
        y = fn()
        y = y[0] if isinstance(y, tuple) else y
        torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-5, msg=name)
    return out


def train_calls(device: str, batch: int, hw: int) -> dict:
    """Forward + backward of one layer per call: eager, converted, and the ops alone."""
    eager = first_se_layer().to(device).train()
    converted = se_kernels.convert_model(nn.Sequential(copy.deepcopy(eager)))[0]
    channels = eager.conv_reduce.in_channels
    x = torch.randn(batch, channels, hw, hw, device=device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn_like(x)
    spec = converted.se_spec
    name = resolve_backend("auto", x)
    ops = backend_ops(name)
    fc1, fc2 = converted.conv_reduce, converted.conv_expand
    w1, w2 = as_matrix("w1", fc1.weight.detach()), as_matrix("w2", fc2.weight.detach())
    b1, b2 = fc1.bias.detach(), fc2.bias.detach()
    options = (spec.pool, spec.act, spec.gate, 1.0, "identity")

    def ops_alone():
        xd = x.detach()
        _, pooled, pooled_max, fc1_out, fc2_out = call_without_autograd(
            ops.forward, xd, w1, b1, w2, b2, None, *options)
        _, _, grad_fc1, grad_fc2 = call_without_autograd(
            ops.backward, grad, xd, None, w1, w2, pooled_max, fc1_out, fc2_out, False, *options)
        return fc_grads(grad_fc1, grad_fc2, pooled, fc1_out, fc1.weight, b1, fc2.weight, b2,
                        spec.act)

    def step(module):
        def run():
            module(x).backward(grad)
        return run

    params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    native = native_op(name)

    def cpp_node():
        native(x, *params, None, *options, NATIVE_SIM_FLAG[name]).backward(grad)

    def python_node():
        SEFunction.apply(x, *params, None, *options, name)[0].backward(grad)

    # (the call, the module whose parameters it trains)
    calls = {"eager timm module, fwd+bwd": (step(eager), eager),
             "converted module, fwd+bwd": (step(converted), converted),
             "C++ node (se_kernels::squeeze_excite), fwd+bwd": (cpp_node, converted),
             "Python node (SEFunction), fwd+bwd": (python_node, converted)}
    if native is None:  # a backend without compiled ops (Triton)
        del calls["C++ node (se_kernels::squeeze_excite), fwd+bwd"]
    grads = []  # every row computes the same layer: the gradients agree
    for run, module in calls.values():
        x.grad = None
        module.zero_grad(set_to_none=True)
        run()
        grads.append([x.grad, *(p.grad for p in module.parameters())])
    for other in grads[1:]:
        for got, want in zip(other, grads[0]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    return {**{k: run for k, (run, _) in calls.items()}, "ops alone (fwd, bwd, fc_grads)": ops_alone}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"per-call cost on {metadata(args.device)['device']}, {args.threads} thread(s), "
          f"x {args.batch}x72x{args.hw}x{args.hw} float32 channels_last"
          + (", forward + backward" if args.train else ""))
    if args.train:
        timings = time_cpu(train_calls(args.device, args.batch, args.hw), rounds=args.rounds,
                           round_ms=20.0)
    else:
        with torch.no_grad():
            timings = time_cpu(calls(args.device, args.batch, args.hw), rounds=args.rounds,
                               round_ms=20.0)
    for name, t in timings.items():
        print(f"{name:28s} {t.median_ms * 1e3:8.1f} us  (p20 {t.p20_ms * 1e3:.1f}, "
              f"p80 {t.p80_ms * 1e3:.1f})")
    return timings


if __name__ == "__main__":
    main()
