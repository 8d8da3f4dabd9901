"""reach.chunk_attention against the float64 reference (references.py), forward and backward
(gradients to q, k, v, r and the landmarks), softmax and stick-breaking weights, GQA."""

import pytest
import torch

import reach
import references

# float64 kernel vs float64 reference, sums of <= top_k * S terms of size ~1.
TOL64 = dict(rtol=1e-10, atol=1e-10)


def _inputs(B=1, Hq=2, Hkv=1, n=32, d=8, dr=4, S=4, dtype=torch.float64, device="cpu"):
    make = lambda *shape: torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)
    return (make(B, Hq, n, d), make(B, Hkv, n, d), make(B, Hkv, n, d), make(B, Hkv, n, dr),
            make(B, Hkv, n // S, dr))


@pytest.mark.parametrize("weighting", ["softmax", "stick_breaking"])
@pytest.mark.parametrize("window", [0, 6])
def test_forward_backward_vs_reference(weighting, window):
    q, k, v, r, lm = _inputs()
    out = reach.chunk_attention(q, k, v, r, lm, chunk_size=4, top_k=3, window=window,
                                weighting=weighting)
    ref = references.chunk_attention(q, k, v, r, lm, 4, 3, window, weighting)
    torch.testing.assert_close(out, ref, **TOL64)
    g = torch.randn_like(out)
    inputs = (q, k, v, r, lm)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(a, b, **TOL64)


def test_float32_on_device(device):
    # d = 64: the CUDA kernels take head_dim 64 or 128.
    q, k, v, r, lm = (t.detach().float().to(device).requires_grad_() for t in _inputs(n=64, d=64))
    out = reach.chunk_attention(q, k, v, r, lm, chunk_size=4, top_k=2)
    ref = references.chunk_attention(*(t.cpu() for t in (q, k, v, r, lm)), 4, 2)
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert all(t.grad is not None for t in (q, k, v, r, lm))


def test_opcheck():
    q, k, v, r, lm = (t.detach().float().requires_grad_() for t in _inputs())
    torch.library.opcheck(
        torch.ops.reach.chunk_attention_forward,
        (q, k, v, r, lm, 4, 3, 0, "fixed", 1.0, 1, "softmax", 0.35, 0.5),
    )


def test_bad_landmarks_name_the_problem():
    q, k, v, r, lm = _inputs()
    with pytest.raises(ValueError, match="landmarks must be"):
        reach.chunk_attention(q, k, v, r, lm[:, :, :-1], chunk_size=4, top_k=2)
    with pytest.raises(RuntimeError, match="budget"):
        reach.chunk_attention(q, k, v, r, lm, chunk_size=4, top_k=2, budget="most")
