"""reach's attention in a transformers Llama-config model: the same logits as the same model
with the equivalent boolean mask through SDPA, a different pattern per layer (the alpha
schedule), training steps that lower the loss, and the clear errors."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
import reach.hf  # noqa: E402

# fp32 through 4 layers: the kernels' and SDPA's float32 sums differ in order (~1e-7
# relative per attention output); the logits (|x| ~ 1) agree to ~1e-6, checked to 2e-5.
LOGITS_TOL = dict(rtol=2e-5, atol=2e-5)


def _config():
    return transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )


def _model(implementation):
    config = _config()
    reach.hf.use_dilated_attention(config, window=4, alpha_min=1.0, alpha_max=3.0,
                                   implementation=implementation)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_patterns_follow_the_alpha_schedule():
    config = _config()
    patterns = reach.hf.use_dilated_attention(config, window=4)
    assert [p.alpha for p in patterns] == reach.pattern.layer_alphas(4, "stagger", 1.0, 1.0, 3.0)
    assert config.reach_offsets[0] == reach.pattern.dilated_offsets(4, 127, alpha=1.0)
    assert config.reach_offsets[3] == reach.pattern.dilated_offsets(4, 127, alpha=3.0)
    assert config.reach_offsets[0] != config.reach_offsets[3]


def test_logits_equal_masked_sdpa(device):
    model = _model(reach.hf.IMPLEMENTATION).to(device)
    masked = copy.deepcopy(model)
    masked.config._attn_implementation = reach.hf.SDPA_IMPLEMENTATION
    dense = copy.deepcopy(model)
    dense.config._attn_implementation = "sdpa"
    ids = torch.randint(0, 128, (2, 96), device=device)
    with torch.no_grad():
        got = model(ids).logits
        want = masked(ids).logits
        full = dense(ids).logits
    torch.testing.assert_close(got, want, **LOGITS_TOL)
    assert (got - full).abs().max() > 1e-2  # the sparse pattern is not dense attention


def test_training_lowers_the_loss(device):
    model = _model(reach.hf.IMPLEMENTATION).to(device).train()
    ids = torch.randint(0, 128, (4, 64), device=device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, labels=ids).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_unsupported_uses_are_errors():
    model = _model(reach.hf.IMPLEMENTATION)
    ids = torch.randint(0, 128, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, :3] = 0
    with pytest.raises(ValueError, match="padding"):
        model(ids, attention_mask=mask)
    config = _config()
    config._attn_implementation = reach.hf.IMPLEMENTATION
    with pytest.raises(ValueError, match="use_dilated_attention"):
        transformers.LlamaForCausalLM(config)(ids)
