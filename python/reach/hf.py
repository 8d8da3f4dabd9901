"""reach's attention inside Hugging Face transformers models.

    import reach.hf
    config = LlamaConfig(...)
    reach.hf.use_dilated_attention(config, window=64)      # alpha schedule across layers
    model = LlamaForCausalLM(config)                       # runs reach.dilated_attention

use_dilated_attention stores each layer's window and offsets (reach.pattern.layer_patterns:
Fibonacci offsets, alpha from a schedule across depth, reach or paper convention) on the
config and selects the attention implementation "reach_dilated", registered here in
transformers' AttentionInterface. "reach_dilated_sdpa" computes the same attention through
torch's scaled_dot_product_attention with the equivalent boolean mask (the reference; and
the baseline to time against).

Limits: causal self-attention over the whole sequence, without padding (a 2-D attention mask
with zeros is an error) and without a KV cache (generate with use_cache=False); no attention
dropout.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .attention import dilated_attention, dilated_mask
from .pattern import LayerPattern, layer_patterns

IMPLEMENTATION = "reach_dilated"
SDPA_IMPLEMENTATION = "reach_dilated_sdpa"


def use_dilated_attention(
    config,
    window: int,
    reach: Optional[int] = None,
    schedule: str = "stagger",
    base: str = "fibonacci",
    alpha: float = 1.0,
    alpha_min: float = 1.0,
    alpha_max: float = 3.0,
    convention: str = "reach",
    seq_len: Optional[int] = None,
    implementation: str = IMPLEMENTATION,
) -> List[LayerPattern]:
    """Give every layer of a transformers config (num_hidden_layers) its dilated pattern and
    select reach's attention. reach defaults to config.max_position_embeddings - 1 (and the
    paper convention's seq_len to max_position_embeddings). Returns the layers' patterns."""
    if implementation not in (IMPLEMENTATION, SDPA_IMPLEMENTATION):
        raise ValueError(f"implementation must be {IMPLEMENTATION!r} or {SDPA_IMPLEMENTATION!r}")
    positions = config.max_position_embeddings
    patterns = layer_patterns(
        config.num_hidden_layers, window, reach=reach or positions - 1,
        seq_len=seq_len or positions, schedule=schedule, base=base, alpha=alpha,
        alpha_min=alpha_min, alpha_max=alpha_max, convention=convention,
    )
    config.reach_window_keys = [p.window_keys for p in patterns]
    config.reach_offsets = [list(p.offsets) for p in patterns]
    config._attn_implementation = implementation
    return patterns


def _layer_pattern(module):
    config = module.config
    if not hasattr(config, "reach_offsets"):
        raise ValueError(
            f"{IMPLEMENTATION}: the config has no reach pattern; call "
            "reach.hf.use_dilated_attention(config, window=...) before building the model"
        )
    layer = module.layer_idx
    return config.reach_window_keys[layer], config.reach_offsets[layer]


def _check(query, key, dropout, kwargs):
    if query.shape[2] != key.shape[2]:
        raise ValueError(
            f"{IMPLEMENTATION}: queries ({query.shape[2]}) and keys ({key.shape[2]}) differ in "
            "length: generation with a KV cache is not supported (use_cache=False)"
        )
    if dropout:
        raise ValueError(f"{IMPLEMENTATION}: attention dropout is not supported, got {dropout}")
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError(f"{IMPLEMENTATION}: softcap and sliding_window are not supported")


def dilated_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                              scaling=None, **kwargs):
    """The AttentionInterface function: query [B, H, n, d], key and value [B, Hkv, n, d];
    returns ([B, n, H, d], None)."""
    _check(query, key, dropout, kwargs)
    window, offsets = _layer_pattern(module)
    offsets_tensor = torch.tensor([float(o) for o in offsets], dtype=torch.float64)
    out = dilated_attention(query, key, value, window, offsets_tensor, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def dilated_sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                         **kwargs):
    """The same attention through scaled_dot_product_attention and the boolean mask."""
    _check(query, key, dropout, kwargs)
    window, offsets = _layer_pattern(module)
    group = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(group, dim=1)
    value = value.repeat_interleave(group, dim=1)
    mask = dilated_mask(query.shape[2], window, offsets, device=query.device)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _no_padding_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0,
                     mask_function=None, attention_mask=None, **kwargs):
    """The mask function of both implementations: the pattern is built in, so no mask is made;
    padding (zeros in a 2-D attention_mask) is refused rather than ignored."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(
            f"{IMPLEMENTATION}: padding is not supported (the attention mask has zeros); "
            "pack sequences to one length"
        )
    return None


AttentionInterface.register(IMPLEMENTATION, dilated_attention_forward)
AttentionInterface.register(SDPA_IMPLEMENTATION, dilated_sdpa_forward)
AttentionMaskInterface.register(IMPLEMENTATION, _no_padding_mask)
AttentionMaskInterface.register(SDPA_IMPLEMENTATION, _no_padding_mask)
