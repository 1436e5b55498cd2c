"""Gemma 3 text decoders: RMSNorm scales by 1 + w, and the MLP reads through its own pre-feedforward norm
(each block has four norms: input, post-attention, pre-feedforward, post-feedforward)."""

from . import Family, register

GEMMA3 = register(Family(
    name="gemma3",
    model_types=("gemma3_text", "gemma3"),
    lora_targets=("q_proj", "v_proj", "o_proj", "down_proj"),
    blocks=lambda m: m.model.layers,
    final_norm=lambda m: m.model.norm,
    mlp_input_norm="pre_feedforward_layernorm",
    norm_offset=1.0,
))
