"""Llama-style decoders (SmolLM2 is one): pre-norm blocks, RMSNorm gain w, attention + gated MLP."""

from . import Family, register

LLAMA = register(Family(
    name="llama",
    model_types=("llama",),
    lora_targets=("q_proj", "v_proj", "o_proj", "down_proj"),
    blocks=lambda m: m.model.layers,
    final_norm=lambda m: m.model.norm,
    mlp_input_norm="post_attention_layernorm",
))
