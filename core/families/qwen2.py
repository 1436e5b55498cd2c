"""Qwen2 / Qwen2.5 decoders: Llama's layout (pre-norm, RMSNorm gain w, the same module names), with biased
q/k/v projections, which change nothing diffbench reads."""

from dataclasses import replace

from . import register
from .llama import LLAMA

QWEN2 = register(replace(LLAMA, name="qwen2", model_types=("qwen2",)))
