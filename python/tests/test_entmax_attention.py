"""reach.entmax_attention against the float64 reference (references.py): alpha-entmax with
per-head alpha, the log-n scaling, softmax (SSMax) and ALiBi, forward and backward
(including d alpha, d delta, d beta, d gamma)."""

import pytest
import torch

import reach
import references

# float64 kernels vs the float64 reference: the threshold tau is solved to ~1e-15 by both
# (bisection + Newton in the kernel, 200 bisections + a Newton step here); 1e-8 allows the
# conditioning of tau near support changes (1/(alpha - 1) powers) with margin.
TOL64 = dict(rtol=1e-8, atol=1e-8)


def _qkv(n=24, B=2, H=3, d=8):
    return [torch.randn(B, H, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]


CASES = {
    "entmax": dict(alpha=[1.5, 1.25, 2.0]),
    "log_n": dict(alpha=[1.5, 1.3, 1.8], delta=[0.1, 0.2, 0.3], beta=[0.5, 0.7, 0.4],
                  gamma=[1.0, 0.8, 1.2]),
    "ssmax": dict(softmax=True, delta=[0.0, 0.0, 0.0], beta=[0.6, 0.5, 0.9],
                  gamma=[1.0, 1.0, 1.0]),
    "alibi": dict(alpha=[1.5, 1.5, 1.5], alibi=[0.0, 0.1, 0.3]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("window,offsets", [(4, [4, 6, 9, 15]), (64, [])])
def test_forward_backward_vs_reference(case, window, offsets):
    q, k, v = _qkv()
    params = {}
    trainable = []
    for name, value in CASES[case].items():
        if name == "softmax":
            params[name] = value
            continue
        t = torch.tensor(value, dtype=torch.float64, requires_grad=name != "alibi")
        params[name] = t
        if t.requires_grad:
            trainable.append(t)
    out = reach.entmax_attention(q, k, v, window, offsets, **params)
    ref = references.entmax_attention(q, k, v, window, offsets, **params)
    torch.testing.assert_close(out, ref, **TOL64)
    g = torch.randn_like(out)
    inputs = (q, k, v, *trainable)
    grads = torch.autograd.grad(out, inputs, g)
    ref_grads = torch.autograd.grad(ref, inputs, g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, **TOL64)


def test_per_query_beta_gamma():
    q, k, v = _qkv()
    B, H, n, _ = q.shape
    alpha = torch.tensor([1.5, 1.4, 1.6], dtype=torch.float64)
    delta = torch.tensor([0.1, 0.0, 0.2], dtype=torch.float64)
    beta = (0.5 + 0.1 * torch.rand(B, H, n, dtype=torch.float64)).requires_grad_()
    gamma = (0.9 + 0.2 * torch.rand(B, H, n, dtype=torch.float64)).requires_grad_()
    out = reach.entmax_attention(q, k, v, 4, [5, 8], alpha, delta, beta, gamma)
    ref = references.entmax_attention(q, k, v, 4, [5, 8], alpha, delta, beta, gamma)
    torch.testing.assert_close(out, ref, **TOL64)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (beta, gamma), g),
                    torch.autograd.grad(ref, (beta, gamma), g)):
        torch.testing.assert_close(a, b, **TOL64)


def test_float32_on_device(device):
    q, k, v = (t.detach().float().to(device).requires_grad_() for t in _qkv(n=40))
    alpha = torch.tensor([1.5, 1.25, 2.0], device=device, requires_grad=True)
    out = reach.entmax_attention(q, k, v, 8, [8, 13, 21], alpha)
    ref = references.entmax_attention(q.cpu(), k.cpu(), v.cpu(), 8, [8, 13, 21], alpha.cpu())
    # float32 scores and threshold: ~1e-6 relative; 1e-4 absolute on outputs ~1.
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert alpha.grad is not None and torch.isfinite(alpha.grad).all()


def test_opcheck():
    q, k, v = (torch.randn(1, 2, 16, 8, requires_grad=True) for _ in range(3))
    alpha = torch.tensor([1.5, 1.2], requires_grad=True)
    delta = torch.tensor([0.1, 0.2], requires_grad=True)
    beta = torch.tensor([0.5, 0.6], requires_grad=True)
    gamma = torch.tensor([1.0, 0.9], requires_grad=True)
    offsets = torch.tensor([4.0, 7.0], dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.reach.entmax_attention_forward,
        (q, k, v, 4, offsets, alpha, delta, beta, gamma, False, 0.35, None),
    )
    torch.library.opcheck(
        torch.ops.reach.entmax_attention_forward,
        (q, k, v, 4, offsets, None, None, None, None, True, 0.35, torch.tensor([0.0, 0.2])),
    )


def test_bad_inputs_name_the_problem():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="alpha is required"):
        reach.entmax_attention(q, k, v, 4, [5])
    with pytest.raises(RuntimeError, match="delta, beta, gamma"):
        reach.entmax_attention(q, k, v, 4, [5], torch.full((3,), 1.5, dtype=torch.float64),
                               delta=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="scale"):
        reach.entmax_attention(q, k, v, 4, [5], torch.full((3,), 1.5), scale=-1.0)
