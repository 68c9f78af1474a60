"""course_lib: the reference library of "Attention, from dot-product to FlashAttention".

Mask polarity in course_lib: a boolean mask is True where a key takes part in
attention (as in ``F.scaled_dot_product_attention``), except where a parameter
carries the name of ``nn.MultiheadAttention``'s masks (``key_padding_mask``, and
``attn_mask`` in ``MultiHeadAttention`` and ``packed_multihead_attention``): a
name from torch means what it means in torch, there True = ignore.
"""

__version__ = "0.1.0"

from course_lib.additive import (
    AdditiveAttention,
    AdditiveScore,
    Attention,
    AttentionOutput,
    DotScore,
    GeneralScore,
    additive_attention,
    additive_scores,
    dot_scores,
    general_scores,
    key_mask,
)
from course_lib.chunked import chunked_attention
from course_lib.decoder import DecoderStepOutput, attention_decoder_step
from course_lib.dot_product import attention_weights, scaled_dot_product_attention
from course_lib.flash import (
    FlashAttention,
    causal_tile_mask,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)
from course_lib.flash_cpu import (
    cpu_block_sizes,
    flash_attention_cpu,
    flash_attention_cpu_backward,
    flash_attention_cpu_forward,
)
from course_lib.kernel_regression import nadaraya_watson, nadaraya_watson_weights
from course_lib.kv_cache import CachedAttention, CausalSelfAttention, KVCache, cached_causal_attention, kv_cache_bytes
from course_lib.masks import causal_mask, padding_mask
from course_lib.multihead import (
    MultiHeadAttention,
    MultiheadAttentionOutput,
    merge_heads,
    multihead_attention,
    packed_multihead_attention,
    split_heads,
)
from course_lib.online_softmax import merge_softmax_states, online_softmax
from course_lib.positional import apply_rope, rope_angles, sinusoidal_encoding
from course_lib.softmax import masked_softmax, softmax
from course_lib.transformer import TinyTransformer, TransformerBlock, TransformerConfig
from course_lib.triton_attention import triton_available, triton_flash_attention, triton_flash_forward

__all__ = [
    "__version__",
    # softmax.py
    "softmax",
    "masked_softmax",
    # masks.py
    "causal_mask",
    "padding_mask",
    # dot_product.py
    "attention_weights",
    "scaled_dot_product_attention",
    # kernel_regression.py
    "nadaraya_watson",
    "nadaraya_watson_weights",
    # additive.py
    "AttentionOutput",
    "additive_scores",
    "dot_scores",
    "general_scores",
    "additive_attention",
    "key_mask",
    "AdditiveScore",
    "DotScore",
    "GeneralScore",
    "Attention",
    "AdditiveAttention",
    # decoder.py
    "DecoderStepOutput",
    "attention_decoder_step",
    # multihead.py
    "split_heads",
    "merge_heads",
    "multihead_attention",
    "packed_multihead_attention",
    "MultiheadAttentionOutput",
    "MultiHeadAttention",
    # positional.py
    "sinusoidal_encoding",
    "rope_angles",
    "apply_rope",
    # kv_cache.py
    "kv_cache_bytes",
    "KVCache",
    "CachedAttention",
    "cached_causal_attention",
    "CausalSelfAttention",
    # transformer.py
    "TransformerConfig",
    "TransformerBlock",
    "TinyTransformer",
    # online_softmax.py
    "merge_softmax_states",
    "online_softmax",
    # chunked.py
    "chunked_attention",
    # flash.py
    "causal_tile_mask",
    "flash_attention_forward",
    "flash_attention_backward",
    "FlashAttention",
    "flash_attention",
    # flash_cpu.py (the same, tuned for a CPU; what the benchmark measures)
    "cpu_block_sizes",
    "flash_attention_cpu_forward",
    "flash_attention_cpu_backward",
    "flash_attention_cpu",
    # triton_attention.py (imports triton only when a kernel first runs)
    "triton_available",
    "triton_flash_forward",
    "triton_flash_attention",
]
