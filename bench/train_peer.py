#!/usr/bin/env python3
"""The PyTorch peer of reach's training step (issue 15): the paper preset written in plain
PyTorch, trained for a few steps, printing tokens/s and MFU after warm-up.

Same model as `reach train configs/paper-stagger.toml` with the byte tokenizer: 16 pre-norm
blocks, d_model 512, 8 heads of 64, RoPE (base 10000, the two halves of a head rotated, as
model/attention/positions.cpp), LayerNorm with bias, GELU MLP 4x with biases, qkv and output
projections without bias, tied embedding / output head over 256 bytes: 50,537,472 parameters
(checked below). bf16 autocast over fp32 weights, fused AdamW (betas 0.9/0.95, weight decay 0.1
on matrices), gradient clipping at 1.0 (foreach), loss = cross-entropy of next bytes.

Variants (--variant):
  eager          dense causal attention through F.scaled_dot_product_attention, no compile
  compile-dense  the same under torch.compile (whole model)
  compile-flex   torch.compile with FlexAttention and the Fibonacci stagger block mask: query i
                 sees key j when 0 <= i - j < W or i - j is one of its layer's offsets. The
                 offsets are reach's own, read from `reach pattern` (--pattern FILE: its output;
                 or --reach-bin BIN to run it), never re-derived here.

MFU uses reach's FLOP count (train/device.cpp): 6 x (2-D parameters, the tied embedding once)
+ 12 x d_model x (mean keys a query attends, summed over layers: dense (T + 1) / 2; sparse
window min(W, i + 1) plus the offsets that fit), over the 989.4 TFLOP/s bf16 dense peak that
reach assumes for an H200.

Timing: --warmup steps (compilation included) and then --steps steps between two device
synchronizations; one line of JSON per run with --json. --wait-for FILE holds the timed steps
until FILE exists (compile in the background while something else builds, time alone).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PEAK_FLOPS = 989.4e12  # reach's figure for H100 SXM / H200 bf16 (train/device.cpp)
PAPER_PARAMETERS = 50_537_472  # reach's paper preset with vocab 256 (docs/benchmarks.md)


def parse_pattern(text):
    """Offsets per layer from `reach pattern`'s table: rows 'layer alpha K keys/q attended% [..]'."""
    offsets = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+[-0-9.]+\s+(\d+)\s+\d+\s+[0-9.]+%\s+\[([0-9, ]*)\]", line)
        if m:
            row = [int(v) for v in m.group(3).split(",") if v.strip()]
            if len(row) != int(m.group(2)):
                sys.exit(f"train_peer: pattern row for layer {m.group(1)} lists {len(row)} "
                         f"offsets but says K = {m.group(2)}")
            offsets[int(m.group(1))] = row
    if not offsets or sorted(offsets) != list(range(len(offsets))):
        sys.exit("train_peer: no per-layer offsets found in the pattern output")
    return [offsets[layer] for layer in range(len(offsets))]


def reach_offsets(args):
    if args.pattern:
        text = open(args.pattern).read()
    else:
        cmd = [args.reach_bin, "pattern", "--layers", str(args.layers), "--window",
               str(args.window), "--reach", str(args.seq_len), "--seq-len", str(args.seq_len),
               "--schedule", "stagger", "--alpha-min", "1", "--alpha-max", "3"]
        text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    offsets = parse_pattern(text)
    if len(offsets) != args.layers:
        sys.exit(f"train_peer: the pattern has {len(offsets)} layers, the model {args.layers}")
    return offsets


def mean_keys(window, offsets, n, dense):
    """Mean keys a query attends (train/device.cpp: mean_keys_per_query)."""
    if dense:
        return (n + 1) / 2
    w = min(window, n)
    keys = w * (w + 1) / 2 + (n - w) * w
    keys += sum(max(0, n - o) for o in offsets)
    return keys / n


def rope_tables(seq_len, head_dim, base, device):
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(0, half, dtype=torch.float32, device=device) / half)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, -1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, mlp_ratio * d)
        self.out = nn.Linear(mlp_ratio * d, d)

    def forward(self, x, cos, sin, attend):
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attend(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab, layers, d, heads, mlp_ratio, seq_len, rope_base, attends):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.attends = attends  # one attention function per layer
        cos, sin = rope_tables(seq_len, d // heads, rope_base, "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        # GPT-2 initialisation as model/gpt.cpp: N(0, 0.02), residual projections / sqrt(2L).
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
                elif "ln" in name:
                    p.fill_(1.0)
                else:
                    residual = name.endswith("proj.weight") or name.endswith("out.weight")
                    p.normal_(0.0, 0.02 / math.sqrt(2 * layers) if residual else 0.02)

    def forward(self, tokens, targets):
        x = self.wte(tokens)
        for block, attend in zip(self.blocks, self.attends):
            x = block(x, self.cos, self.sin, attend)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def dense_attend(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def flex_attends(offsets, window, seq_len, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention)
    attends = []
    for layer_offsets in offsets:
        allowed = torch.zeros(seq_len, dtype=torch.bool, device=device)
        allowed[:min(window, seq_len)] = True
        allowed[torch.tensor([o for o in layer_offsets if o < seq_len], dtype=torch.long,
                             device=device)] = True

        def mask_mod(b, h, q_idx, kv_idx, allowed=allowed):
            distance = q_idx - kv_idx
            return (distance >= 0) & allowed[distance.clamp(0, seq_len - 1)]

        mask = create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)
        attends.append(lambda q, k, v, mask=mask: flex(q, k, v, block_mask=mask))
    return attends


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=["eager", "compile-dense", "compile-flex"], required=True)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp-ratio", type=int, default=4)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--rope-base", type=float, default=10000.0)
    p.add_argument("--pattern", help="`reach pattern` output with this seq_len's offsets")
    p.add_argument("--reach-bin", default="build-gpu/reach", help="reach, to run `reach pattern`")
    p.add_argument("--corpus", help="a folder of text files to train on (default: random bytes)")
    p.add_argument("--json", help="append one JSON line with the result to this file")
    p.add_argument("--wait-for", help="after the warm-up (compilation), wait until this file "
                   "exists before the timed steps (so a script can compile while it builds "
                   "something else and still time the steps alone on the machine)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("train_peer: needs a CUDA device")
    if args.seq_len < 1 or args.batch < 1 or args.steps < 1 or args.warmup < 0:
        sys.exit("train_peer: --seq-len, --batch and --steps must be >= 1, --warmup >= 0")
    device = torch.device("cuda")
    torch.manual_seed(0)

    sparse = args.variant == "compile-flex"
    offsets = reach_offsets(args) if sparse else [[] for _ in range(args.layers)]
    attends = (flex_attends(offsets, args.window, args.seq_len, device) if sparse
               else [dense_attend] * args.layers)
    model = Gpt(args.vocab, args.layers, args.d_model, args.heads, args.mlp_ratio, args.seq_len,
                args.rope_base, attends).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    paper_shape = (args.vocab, args.layers, args.d_model, args.heads, args.mlp_ratio) == \
        (256, 16, 512, 8, 4)
    if paper_shape and parameters != PAPER_PARAMETERS:
        sys.exit(f"train_peer: {parameters} parameters, reach's paper preset has "
                 f"{PAPER_PARAMETERS}")
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                   {"params": others, "weight_decay": 0.0}],
                                  lr=6e-4, betas=(0.9, 0.95), fused=True)
    step_fn = torch.compile(model) if args.variant.startswith("compile") else model

    if args.corpus:
        data = b"".join(open(os.path.join(args.corpus, f), "rb").read()
                        for f in sorted(os.listdir(args.corpus)))
        stream = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device).long()
    else:
        stream = torch.randint(0, args.vocab, (max(4 * args.batch * (args.seq_len + 1), 1 << 22),),
                               device=device)
    if stream.numel() <= args.seq_len + 1:
        sys.exit("train_peer: the corpus is shorter than one sequence")
    generator = torch.Generator(device=device).manual_seed(1)

    def batch():
        starts = torch.randint(0, stream.numel() - args.seq_len - 1, (args.batch, 1),
                               device=device, generator=generator)
        rows = stream[starts + torch.arange(args.seq_len + 1, device=device)]
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def step():
        tokens, targets = batch()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        return loss.detach()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    if args.wait_for:
        print(f"peer {args.variant}: warm ({warmup_s:.0f} s), waiting for {args.wait_for}",
              flush=True)
        while not os.path.exists(args.wait_for):
            time.sleep(0.2)
        for _ in range(2):  # the GPU may have idled meanwhile: clocks back up
            step()
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    tokens = args.batch * args.seq_len * args.steps
    tokens_per_s = tokens / seconds
    matmul = 6.0 * sum(p.numel() for p in matrices)
    attention = sum(12.0 * args.d_model * mean_keys(args.window, o, args.seq_len, not sparse)
                    for o in offsets)
    mfu = (matmul + attention) * tokens_per_s / PEAK_FLOPS
    result = dict(variant=args.variant, seq_len=args.seq_len, batch=args.batch,
                  steps=args.steps, warmup=args.warmup, warmup_s=round(warmup_s, 2),
                  parameters=parameters, tokens_per_s=round(tokens_per_s),
                  step_ms=round(1e3 * seconds / args.steps, 2), mfu=round(mfu, 4),
                  flops_per_token=matmul + attention, loss=float(losses[-1]),
                  peak_mib=round(torch.cuda.max_memory_allocated() / 2**20),
                  torch=torch.__version__, gpu=torch.cuda.get_device_name())
    print(f"peer {args.variant:<14} {args.batch:>3} x {args.seq_len:<6} "
          f"{tokens_per_s:>10.0f} tok/s {result['step_ms']:>8.1f} ms/step "
          f"MFU {100 * mfu:5.1f}% (warm-up {warmup_s:.0f} s, loss {result['loss']:.3f})",
          flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
