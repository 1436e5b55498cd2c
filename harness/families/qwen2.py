"""Qwen2 / Qwen2.5 decoders: Llama's layout (pre-norm, RMSNorm gain w) with biased q/k/v projections."""

from . import Family, register

QWEN2 = register(Family(
    name="qwen2",
    model_types=("qwen2",),
    lora_targets=("q_proj", "v_proj", "o_proj", "down_proj"),
    blocks=lambda m: m.model.layers,
    final_norm=lambda m: m.model.norm,
    mlp_input_norm="post_attention_layernorm",
))
