"""Fine-tune a small randomly initialised Llama-config model for a few steps with reach's
Fibonacci-dilated attention (a different alpha per layer), next to the same model with the
equivalent boolean mask through SDPA: the losses agree and both fall.

    python python/examples/finetune_llama.py [--device cuda] [--seq-len 1024] [--steps 20]

The data is a learnable toy: each sequence repeats a random 16-token phrase, so the model
can lower its loss by attending back one period (distance 16, in the window or an offset).
"""

import argparse
import copy
import time

import torch
import transformers

import reach
import reach.hf


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=2,
                        help="first steps left out of the timing (kernel loading, autotuning)")
    args = parser.parse_args()

    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=args.seq_len,
    )
    patterns = reach.hf.use_dilated_attention(config, window=args.window, alpha_min=1.0,
                                              alpha_max=3.0)
    for p in patterns:
        print(f"layer {p.layer}: alpha {p.alpha:.3f}, window {p.window_keys}, "
              f"offsets {p.offsets}")
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = transformers.LlamaForCausalLM(config).to(args.device, dtype)
    masked = copy.deepcopy(model)
    masked.config._attn_implementation = reach.hf.SDPA_IMPLEMENTATION

    phrase = torch.randint(0, 256, (args.batch, 16))
    ids = phrase.repeat(1, args.seq_len // 16).to(args.device)
    for name, m in (("reach_dilated", model), ("masked SDPA", masked)):
        optimiser = torch.optim.AdamW(m.parameters(), lr=args.lr)
        losses, seconds = [], []
        for _ in range(args.steps):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = m(ids, labels=ids).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())  # synchronizes
            seconds.append(time.perf_counter() - start)
        timed = sorted(seconds[args.warmup:] or seconds)
        print(f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {args.steps} steps, "
              f"{timed[len(timed) // 2] * 1e3:.1f} ms/step (median of the {len(timed)} steps "
              f"after {min(args.warmup, len(seconds) - 1)} warm-up)")


if __name__ == "__main__":
    main()
