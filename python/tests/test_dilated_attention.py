"""reach.dilated_attention against the float64 reference (references.py) and masked SDPA,
forward and backward, integer and learned (real) offsets, grouped-query attention."""

import pytest
import torch
import torch.nn.functional as F

import reach
import references

# float64 kernels vs the float64 reference: both exact up to summation order over <= n keys
# (|values| ~ 1), so 1e-10 leaves ~5 orders of margin over the rounding of ~1e-15 per term.
TOL64 = dict(rtol=1e-10, atol=1e-10)
# float32 kernels vs float64: ~1e-7 relative rounding per term over <= 32 keys.
TOL32 = dict(rtol=1e-5, atol=1e-5)


def _inputs(device, dtype, B=2, H=4, Hkv=4, n=40, d=16, grad=True):
    make = lambda h: torch.randn(B, h, n, d, dtype=dtype, device=device, requires_grad=grad)
    return make(H), make(Hkv), make(Hkv)


@pytest.mark.parametrize("Hkv", [4, 2])
def test_integer_offsets_forward_backward_float64(device, Hkv):
    q, k, v = _inputs(device, torch.float64, Hkv=Hkv)
    if device == "cuda":
        pytest.skip("float64 runs on the CPU kernels only")
    offsets = reach.pattern.dilated_offsets(window=4, reach=39, alpha=1.0)
    out = reach.dilated_attention(q, k, v, 4, offsets)
    ref = references.dilated_attention(q, k, v, 4, offsets)
    torch.testing.assert_close(out, ref, **TOL64)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, **TOL64)


def test_float32_matches_masked_sdpa(device):
    q, k, v = _inputs(device, torch.float32)
    window, offsets = 3, reach.pattern.dilated_offsets(3, 39, alpha=2.0)
    out = reach.dilated_attention(q, k, v, window, offsets)
    mask = reach.dilated_mask(q.shape[2], window, offsets, device=device)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, sdpa, **TOL32)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref = torch.autograd.grad(sdpa, (q, k, v), g)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, **TOL32)


def test_learned_offsets_gradient_reaches_alpha():
    q, k, v = _inputs("cpu", torch.float64, n=48)
    window, reach_ = 4, 47
    alpha = torch.tensor(1.37, dtype=torch.float64)
    distances, bases = reach.pattern.fractional_offsets(window, reach_, alpha.item())
    base_values = torch.tensor(bases, dtype=torch.float64)
    alpha.requires_grad_()
    offsets = alpha * base_values  # real distances; d offsets / d alpha = b
    out = reach.dilated_attention(q, k, v, window, offsets)
    ref_offsets = alpha * base_values
    ref = references.dilated_attention(q, k, v, window, ref_offsets)
    torch.testing.assert_close(out, ref, **TOL64)
    torch.testing.assert_close(offsets.detach(), torch.tensor(distances, dtype=torch.float64))
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v, alpha), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v, alpha), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, **TOL64)
    assert grads[3].abs() > 0


def test_gradcheck_offsets_finite_differences():
    q, k, v = _inputs("cpu", torch.float64, B=1, H=2, Hkv=1, n=12, d=4)
    offsets = torch.tensor([2.3, 4.6, 7.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, o: reach.dilated_attention(q, k, v, 2, o), (q, k, v, offsets)
    )


def test_opcheck():
    q, k, v = _inputs("cpu", torch.float32, B=1, H=2, Hkv=1, n=24, d=8)
    offsets = torch.tensor([4.0, 6.0, 10.0], dtype=torch.float64)
    torch.library.opcheck(torch.ops.reach.dilated_attention_forward, (q, k, v, 4, offsets, None))
    learned = torch.tensor([4.5, 7.25, 11.0], dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.reach.dilated_attention_forward, (q, k, v, 4, learned, 0.3))


def test_bad_inputs_name_the_problem():
    q, k, v = _inputs("cpu", torch.float32, grad=False)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        reach.dilated_attention(q, k, v, 0, [4])
    with pytest.raises(RuntimeError, match="offset"):
        reach.dilated_attention(q, k, v, 8, [4, 9])  # an offset inside the window
    with pytest.raises(RuntimeError, match="rank 4"):
        reach.dilated_attention(q[0], k[0], v[0], 4, [5])
