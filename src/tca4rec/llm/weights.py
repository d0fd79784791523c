"""A run's trained weights: the LoRA adapter (``adapter/``) and the llara projector, safetensors only.

Training writes them (checkpoints and the final run folder) and ``load_llm_run`` reads them,
so they live below both: neither the run loader nor the evaluator depends on the trainer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from peft import set_peft_model_state_dict

from tca4rec.errors import RunError
from tca4rec.io import atomic_dir, atomic_save_tensors, load_tensors
from tca4rec.llm.hosts import Host


def save_weights(host: Host, folder: Path) -> None:
    """The trained weights only: LoRA adapter (``adapter/``) and llara projector."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "adapter").exists():
        shutil.rmtree(folder / "adapter")
    # peft records the base model's path in the adapter's config and model card: keep only its
    # name, so a run folder names no path of the machine it was trained on (runs are committed).
    # Rewritten after saving: peft itself must see the real folder (else it asks the Hub about it).
    paths = {str(c.base_model_name_or_path) for c in host.llm.peft_config.values() if c.base_model_name_or_path}
    paths.add(str(host.llm.get_base_model().config.name_or_path))
    with atomic_dir(folder / "adapter") as tmp:
        host.llm.save_pretrained(tmp, safe_serialization=True)
        for record in (tmp / "adapter_config.json", tmp / "README.md"):
            if record.is_file():
                text = record.read_text(encoding="utf-8")
                for path in sorted(paths, key=len, reverse=True):  # a longer path before any path inside it
                    text = text.replace(path, Path(path).name)
                record.write_text(text, encoding="utf-8")
    if host.projector is not None:
        atomic_save_tensors(folder / "projector.safetensors", host.projector.state_dict())


def load_weights(host: Host, folder: Path) -> None:
    """Load what ``save_weights`` wrote into an already built host (safetensors only; a file cut short
    is a RunError naming it)."""
    adapter = folder / "adapter" / "adapter_model.safetensors"
    if not adapter.is_file():
        raise RunError(f"{folder}: no adapter weights (adapter/adapter_model.safetensors)")
    result = set_peft_model_state_dict(host.llm, load_tensors(adapter))
    if getattr(result, "unexpected_keys", None):
        raise RunError(f"{adapter}: unexpected weights {result.unexpected_keys[:3]} (another LLM or LoRA config?)")
    if host.projector is not None:
        projector = folder / "projector.safetensors"
        if not projector.is_file():
            raise RunError(f"{folder}: the llara host needs projector.safetensors")
        host.projector.load_state_dict(load_tensors(projector))
