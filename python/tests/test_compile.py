"""torch.compile traces models calling every reach op with zero graph breaks (fullgraph=True
and torch._dynamo.explain), forward and backward, and gives the eager numbers."""

import pytest
import torch

import reach


class Model(torch.nn.Module):
    """One block per op family: dilated (static and learned offsets), entmax, chunk."""

    def __init__(self, d=128, heads=2, n=32):  # head_dim 64: every CUDA kernel takes it
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.heads, self.n = heads, n
        self.window = 4
        self.register_buffer("offsets", torch.tensor(
            reach.pattern.dilated_offsets(4, n - 1), dtype=torch.float64), persistent=False)
        bases = reach.pattern.fractional_offsets(4, n - 1, 1.0)[1]
        self.register_buffer("bases", torch.tensor(bases, dtype=torch.float64), persistent=False)
        self.alpha = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.entmax_alpha = torch.nn.Parameter(torch.full((heads,), 1.5))
        self.landmarks = torch.nn.Parameter(torch.randn(1, heads, n // 4, d // heads))

    def forward(self, x):
        B, n, d = x.shape
        q, k, v = self.qkv(x).view(B, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = reach.dilated_attention(q, k, v, self.window, self.offsets)
        b = reach.dilated_attention(q, k, v, self.window, self.alpha * self.bases)
        c = reach.entmax_attention(q, k, v, self.window, self.offsets, self.entmax_alpha)
        lm = self.landmarks.expand(B, -1, -1, -1)
        e = reach.chunk_attention(q, k, v, q, lm, chunk_size=4, top_k=2)
        return (a + b + c + e).square().mean()


def _grads(model, x):
    model.zero_grad()
    loss = model(x)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_model_matches_eager_without_graph_breaks(backend, device):
    torch._dynamo.reset()
    model = Model().to(device)
    x = torch.randn(2, 32, 128, device=device)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    eager_loss, eager_grads = _grads(model, x)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    loss, grads = _grads(compiled, x)
    # Same kernels; inductor may reorder the surrounding float32 arithmetic.
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dynamic_shapes_compile():
    torch._dynamo.reset()
    offsets = torch.tensor([4.0, 7.0, 12.0], dtype=torch.float64)

    def f(q, k, v):
        return reach.dilated_attention(q, k, v, 4, offsets).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (16, 24):
        q, k, v = (torch.randn(1, 2, n, 8, requires_grad=True) for _ in range(3))
        got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
        want = torch.autograd.grad(f(q, k, v), (q, k, v))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
