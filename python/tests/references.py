"""Float64 references written from the definitions (docs/definitions.md,
docs/chunk_attention.md), independent of the kernels: explicit per-query key sets and
dense tensor algebra, differentiable by autograd."""

import math

import torch


def dilated_attention(q, k, v, window, offsets, scale=None):
    """Dilated attention by explicit slots: slot a < window reads row i - a; the slot of a
    real offset x reads (1 - f) row(i - floor x) + f row(i - floor x - 1), f = x - floor x,
    visible from i >= ceil x. Gradients reach q, k, v and offsets (through f)."""
    B, H, n, d = q.shape
    group = H // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scale = 1 / math.sqrt(d) if scale is None else scale
    offsets = torch.as_tensor(offsets, dtype=torch.float64)
    slots = window + offsets.numel()
    # A[i, s, j]: weight of key row j in slot s of query i; visible[i, s].
    A = torch.zeros(n, slots, n, dtype=torch.float64)
    visible = torch.zeros(n, slots, dtype=torch.bool)
    lo = torch.floor(offsets.detach())
    f = offsets - lo
    for i in range(n):
        for a in range(window):
            if i - a >= 0:
                A[i, a, i - a] = 1.0
                visible[i, a] = True
        for s in range(offsets.numel()):
            x = float(offsets[s].detach())
            if i < math.ceil(x):
                continue
            visible[i, window + s] = True
            row = i - int(lo[s])
            A = A.index_put((torch.tensor(i), torch.tensor(window + s), torch.tensor(row)),
                            1 - f[s], accumulate=True)
            if row - 1 >= 0:
                A = A.index_put((torch.tensor(i), torch.tensor(window + s), torch.tensor(row - 1)),
                                f[s], accumulate=True)
    keys = torch.einsum("isj,bhjd->bhisd", A, k.double())
    values = torch.einsum("isj,bhjd->bhisd", A, v.double())
    scores = torch.einsum("bhid,bhisd->bhis", q.double(), keys) * scale
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("bhis,bhisd->bhid", torch.softmax(scores, dim=-1), values)


def visible_mask(n, window, offsets):
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    dist = i - j
    mask = (dist >= 0) & (dist < window)
    for o in offsets:
        mask |= dist == int(o)
    return mask


def _entmax(z, alpha, mask):
    """alpha-entmax over the masked last dim; alpha broadcast [..., 1]. tau by bisection
    (detached), then one Newton step from it, which at the root carries the exact implicit
    gradient d tau / d (z, alpha)."""
    am1 = alpha - 1
    zs = torch.where(mask, z * am1, torch.full_like(z, float("-inf")))
    top = zs.max(dim=-1, keepdim=True).values
    lo, hi = (top - 1).detach(), top.detach()
    r = (1 / am1).detach()
    for _ in range(200):
        mid = (lo + hi) / 2
        total = torch.clamp(zs.detach() - mid, min=0).pow(r).sum(-1, keepdim=True)
        lo = torch.where(total >= 1, mid, lo)
        hi = torch.where(total >= 1, hi, mid)
    tau0 = lo
    part = torch.clamp(zs - tau0, min=0)
    F = part.pow(1 / am1).sum(-1, keepdim=True) - 1
    support = part > 0
    dF = -(1 / am1) * torch.where(support, part, 1).pow(1 / am1 - 1).mul(support).sum(-1, keepdim=True)
    tau = tau0 - F / dF.detach()
    return torch.clamp(zs - tau, min=0).pow(1 / am1)


def entmax_attention(q, k, v, window, offsets, alpha=None, delta=None, beta=None, gamma=None,
                     softmax=False, scale=None, alibi=None):
    B, H, n, d = q.shape
    scale = 1 / math.sqrt(d) if scale is None else scale
    mask = visible_mask(n, window, offsets)
    z = torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) * scale
    if delta is not None:
        nvis = mask.sum(-1).double()  # [n]
        logn = torch.log(nvis + 1)
        be = beta.double().view(1, H, 1) if beta.dim() == 1 else beta.double()
        ga = gamma.double().view(1, H, 1) if gamma.dim() == 1 else gamma.double()
        c = delta.double().view(1, H, 1) + be * logn.view(1, 1, n).pow(ga)
        z = z * c.unsqueeze(-1)
    if alibi is not None:
        dist = (torch.arange(n).view(n, 1) - torch.arange(n).view(1, n)).double()
        z = z - alibi.double().view(1, H, 1, 1) * dist
    if softmax:
        p = torch.softmax(z.masked_fill(~mask, float("-inf")), dim=-1)
    else:
        p = _entmax(z, alpha.double().view(1, H, 1, 1), mask)
    return p @ v.double()


def chunk_attention(q, k, v, r, landmarks, chunk_size, top_k, window=0, weighting="softmax",
                    scale=None, retrieval_scale=None):
    """Chunk attention, fixed budget: query t's candidates are the complete chunks i with
    (i + 1) S <= t (and, with a window W > 0, not i S >= t - W + 1), scored by
    retrieval_scale * r_t . l_i; the top_k (ties to the lower index) are kept, weighted by
    softmax (or stick-breaking, nearest chunk first) of their scores; each kept chunk is
    attended whole by softmax."""
    B, Hq, n, d = q.shape
    Hkv, dr = k.shape[1], r.shape[-1]
    group = Hq // Hkv
    S = chunk_size
    scale = 1 / math.sqrt(d) if scale is None else scale
    rs = 1 / math.sqrt(dr) if retrieval_scale is None else retrieval_scale
    q, k, v, r, landmarks = (t.double() for t in (q, k, v, r, landmarks))
    rows = []
    for b in range(B):
        heads = []
        for h in range(Hq):
            g = h // group
            outs = []
            for t in range(n):
                cands = [i for i in range(n // S)
                         if t >= (i + 1) * S and not (window > 0 and i * S >= t - window + 1)]
                out = torch.zeros(d, dtype=torch.float64)
                if cands:
                    scores = torch.stack([rs * (r[b, g, t] @ landmarks[b, g, i]) for i in cands])
                    order = sorted(range(len(cands)), key=lambda c: (-float(scores[c].detach()), cands[c]))
                    keep = order[:top_k]
                    sel = scores[keep]
                    chunks = [cands[c] for c in keep]
                    if weighting == "softmax":
                        w = torch.softmax(sel, 0)
                    else:
                        sig = torch.sigmoid(sel)
                        w = torch.stack([
                            sig[c] * torch.prod(torch.stack(
                                [1 - sig[j] for j in range(len(chunks)) if chunks[j] > chunks[c]]
                                + [torch.ones((), dtype=torch.float64)]))
                            for c in range(len(chunks))])
                    for c, i in enumerate(chunks):
                        kk, vv = k[b, g, i * S:(i + 1) * S], v[b, g, i * S:(i + 1) * S]
                        p = torch.softmax(scale * (kk @ q[b, h, t]), 0)
                        out = out + w[c] * (p @ vv)
                outs.append(out)
            heads.append(torch.stack(outs))
        rows.append(torch.stack(heads))
    return torch.stack(rows)
