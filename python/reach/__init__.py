"""reach: Fibonacci-dilated, entmax and chunk sparse attention as PyTorch ops.

    import reach
    out = reach.dilated_attention(q, k, v, window=64, offsets=reach.pattern.dilated_offsets(64, 4096))

Every op runs forward and backward on CPU and CUDA, has fake implementations for
torch.compile, and reach.hf registers Fibonacci-dilated attention with transformers.
"""

from . import _library

_library.load()

from . import _registrations  # noqa: E402,F401  (fake and autograd registrations)
from . import pattern  # noqa: E402
from .attention import (  # noqa: E402
    chunk_attention,
    dilated_attention,
    dilated_mask,
    entmax_attention,
)

__all__ = ["dilated_attention", "entmax_attention", "chunk_attention", "dilated_mask", "pattern"]
__version__ = "0.1.0"
