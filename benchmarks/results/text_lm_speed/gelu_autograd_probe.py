"""The tanh GELU as one autograd function computed in float32 (x · sigmoid(2z) forward, the tanh form's
derivative backward) against torch's kernel, forward + backward on the teacher's fc1 output shape
(16, 250, 1024), one thread (RESULTS.md, 2026-12-07: slower, not used).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/text_lm_speed/gelu_autograd_probe.py
"""

import math
import time

import torch

C = math.sqrt(2 / math.pi)


class Float32Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        xf = x.float()
        z = (xf * xf).mul_(0.044715).add_(1.0).mul_(xf).mul_(2 * C)
        return (xf * torch.sigmoid(z)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        xf = x.float()
        squared = xf * xf
        t = torch.tanh(squared.mul(0.044715).add_(1.0).mul_(xf).mul_(C))
        slope = (1 - t * t).mul_(squared.mul_(3 * 0.044715).add_(1.0)).mul_(xf).mul_(0.5 * C)
        return (grad.float() * slope.add_(t.add_(1.0).mul_(0.5))).to(grad.dtype)


def milliseconds(function, x, repeats: int = 10) -> float:
    for _ in range(2):
        function(x).backward(torch.ones_like(x))
    started = time.perf_counter()
    for _ in range(repeats):
        function(x).backward(torch.ones_like(x))
    return (time.perf_counter() - started) / repeats * 1e3


if __name__ == "__main__":
    torch.set_num_threads(1)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(16, 250, 1024, dtype=dtype, requires_grad=True)
        kernel = lambda v: torch.nn.functional.gelu(v, approximate="tanh")  # noqa: E731
        print(dtype, f"torch {milliseconds(kernel, x):.1f} ms, float32 function {milliseconds(Float32Gelu.apply, x):.1f} ms")
