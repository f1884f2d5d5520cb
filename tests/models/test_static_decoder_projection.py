"""The static-cache decoder's merged projections: a GEMM on a transposed weight copy only where it
gives ``F.linear``'s bits (probed per weight), never for large weights."""

from __future__ import annotations

import pytest
import torch

from speechsum.models import static_decoder


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("out_features", "in_features"), [(384, 128), (128, 512), (300, 64), (96, 256)])
def test_projection_with_a_transposed_weight_copy_gives_f_linears_bits(out_features, in_features, dtype):
    """The decoder's merged projections use a GEMM on a contiguous copy of Wᵀ only where a probe
    shows the library adds in F.linear's order; either way every input gives F.linear's bits."""
    generator = torch.Generator().manual_seed(out_features + in_features)
    weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
    bias = torch.randn(out_features, generator=generator).to(dtype)
    for b in (bias, None):
        project = static_decoder.transposed_if_exact(weight, b, rows=8)
        for _ in range(3):
            x = torch.randn(8, in_features, generator=generator).to(dtype)
            assert torch.equal(project(x), torch.nn.functional.linear(x, weight, b))


def test_projection_falls_back_to_f_linear_when_the_probe_differs(monkeypatch):
    weight, bias = torch.randn(16, 8), torch.randn(16)
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *args, **kwargs: addmm(*args, **kwargs) + 1e-3)  # another order
    project = static_decoder.transposed_if_exact(weight, bias, rows=4)
    assert project.func is torch.nn.functional.linear
    assert project.keywords["weight"] is weight and project.keywords["bias"] is bias


def test_projection_keeps_large_weights_untransposed(monkeypatch):
    """A weight above TRANSPOSE_LIMIT_BYTES (a large-vocabulary LM head) gets no transposed copy and
    no probe: F.linear on the weight itself. At the limit the probe runs."""
    weight, bias = torch.randn(16, 8), torch.randn(16)
    size = weight.numel() * weight.element_size()
    probes = []
    equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda *args: probes.append(1) or equal(*args))
    monkeypatch.setattr(static_decoder, "TRANSPOSE_LIMIT_BYTES", size - 1)
    project = static_decoder.transposed_if_exact(weight, bias, rows=4)
    assert probes == []
    assert project.func is torch.nn.functional.linear
    assert project.keywords["weight"] is weight and project.keywords["bias"] is bias
    monkeypatch.setattr(static_decoder, "TRANSPOSE_LIMIT_BYTES", size)
    static_decoder.transposed_if_exact(weight, bias, rows=4)
    assert probes == [1]
