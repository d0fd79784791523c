"""Which modules of a causal LM get LoRA adapters, in every architecture's own names.

The paper adapts all attention projections: query, key, value and output. Architectures
name them differently (``q_proj/k_proj/v_proj/o_proj`` in Llama, Qwen2 and Gemma;
``q_proj/k_proj/v_proj/out_proj`` in OPT; fused ``qkv_proj`` + ``o_proj`` in Phi-3,
``c_attn`` + ``c_proj`` in GPT-2, ``query_key_value`` + ``dense`` in GPT-NeoX), so a fixed
list silently misses or fails. Instead of keeping a table by hand we ask transformers
which class is the model's attention: every model declares it in
``_can_record_outputs["attentions"]`` (the modules whose outputs ``output_attentions``
records). Every linear layer inside those modules is an attention projection. (peft's
own per-model defaults are narrower than the paper's: q and v only for Llama.)

``--lora-targets`` overrides the choice; a target that matches no module, or a module LoRA
cannot adapt, is a ``ConfigError`` naming it, and after wrapping, the modules peft adapted
must be exactly the ones the targets named. ``AdapterReport`` says what was adapted and how
many parameters train; runs print it at start and store it as ``llm.json``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D

from tca4rec.errors import ConfigError


@dataclass(frozen=True)
class LoraPlan:
    """peft's ``target_modules`` and the full names of the modules they match."""

    targets: list[str]  # as peft matches them: a module name, or a suffix after a "."
    modules: list[str]  # sorted full module names that receive adapters
    fan_in_fan_out: bool  # GPT-2 style Conv1D layers store weights transposed


def _adaptable_types() -> tuple[type, ...]:
    return nn.Linear, Conv1D


def matches(module_name: str, target: str) -> bool:
    """peft's rule for a list of target names: the whole name, or a suffix after a dot."""
    return module_name == target or module_name.endswith("." + target)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the model's attention blocks, as transformers itself declares them."""
    declared = getattr(model, "_can_record_outputs", None) or {}
    spec = declared.get("attentions")
    if spec is not None:
        cls = spec if isinstance(spec, type) else spec.target_class
        layer_name = None if isinstance(spec, type) else spec.layer_name
        found = [(name, m) for name, m in model.named_modules() if isinstance(m, cls)]
        if layer_name is not None:  # e.g. GPT-2: self-attention ".attn", not ".crossattention"
            found = [(name, m) for name, m in found if f".{layer_name.strip('.')}." in f"{name}."]
        return found
    # Older remote-code models do not declare it; their attention classes still say so by name.
    return [(name, m) for name, m in model.named_modules() if type(m).__name__.endswith("Attention")]


def _layer_suffix(name: str) -> str:
    """The part of a module name after its layer index: ``model.layers.3.self_attn.q_proj`` -> ``self_attn.q_proj``."""
    parts = name.split(".")
    numeric = [i for i, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[numeric[-1] + 1:]) if numeric and numeric[-1] < len(parts) - 1 else name


def attention_projections(model: nn.Module) -> list[str]:
    """Full names of every linear layer inside the attention blocks (q, k, v and output, fused or not)."""
    linear = _adaptable_types()
    names = {f"{attn_name}.{child}" for attn_name, attn in attention_modules(model)
             for child, module in attn.named_modules() if child and isinstance(module, linear)}
    return sorted(names)


def _plan(model: nn.Module, targets: list[str], modules: list[str]) -> LoraPlan:
    by_name = dict(model.named_modules())
    fused = all(isinstance(by_name[name], Conv1D) for name in modules)
    return LoraPlan(targets=targets, modules=sorted(modules), fan_in_fan_out=fused)


def plan_lora(model: nn.Module, requested: Sequence[str] | None, llm: str) -> LoraPlan:
    """The LoRA plan for ``model``: its attention projections, or the ``requested`` target names.

    ``llm`` only names the model in error messages.
    """
    kind = type(model).__name__
    default = attention_projections(model)
    if requested is None:
        if not default:
            raise ConfigError(f"--llm {llm}: found no attention projections in {kind}; "
                              "name the layers to adapt with --lora-targets")
        # Short, readable targets (one per projection, not per layer) when they match exactly the same modules.
        short = sorted({_layer_suffix(name) for name in default})
        names = [name for name, _ in model.named_modules()]
        same = sorted(n for n in names if any(matches(n, t) for t in short)) == default
        return _plan(model, short if same else default, default)
    if not requested:
        raise ConfigError("--lora-targets: give at least one module name")
    linear = _adaptable_types()
    chosen: set[str] = set()
    hint = ", ".join(sorted({_layer_suffix(n) for n in default})) or "none found"
    for target in requested:
        if not re.fullmatch(r"[\w.]+", target):
            raise ConfigError(f"--lora-targets {target!r}: give module names (letters, digits, _ and .)")
        found = [(n, m) for n, m in model.named_modules() if n and matches(n, target)]
        if not found:
            raise ConfigError(f"--lora-targets {target}: matches no module of {kind} ({llm}); "
                              f"its attention projections are {hint}")
        for name, module in found:
            if not isinstance(module, linear):
                raise ConfigError(f"--lora-targets {target}: matches {name}, a {type(module).__name__}; "
                                  "LoRA adapts linear layers only")
            chosen.add(name)
    return _plan(model, list(requested), sorted(chosen))


def check_adapted(peft_model, plan: LoraPlan, llm: str) -> None:
    """After ``get_peft_model``: the modules peft adapted must be exactly those the plan names."""
    adapted = sorted(peft_model.targeted_module_names)
    if adapted != plan.modules:
        extra = sorted(set(adapted) - set(plan.modules))
        missing = sorted(set(plan.modules) - set(adapted))
        raise ConfigError(f"--lora-targets {' '.join(plan.targets)}: peft adapted a different set of modules "
                          f"of {llm} than asked for (extra: {extra[:3]}, missing: {missing[:3]})")


@dataclass(frozen=True)
class AdapterReport:
    """What a run trains: stored as the run's ``llm.json`` and printed at start."""

    llm: str
    architecture: str
    dtype: str  # the frozen base weights' dtype
    lora_targets: list[str]
    lora_modules: list[str]
    trainable_parameters: int  # LoRA (and the llara projector)
    total_parameters: int

    @classmethod
    def of(cls, host, llm: str) -> "AdapterReport":
        """Read from a built host: its peft-wrapped LLM and, for llara, the projector."""
        base = host.llm.get_base_model()
        frozen = next((p for p in base.parameters() if not p.requires_grad), None)
        dtype = frozen.dtype if frozen is not None else next(base.parameters()).dtype
        return cls(llm=llm, architecture=type(base).__name__, dtype=str(dtype).removeprefix("torch."),
                   lora_targets=sorted(host.llm.peft_config["default"].target_modules),
                   lora_modules=sorted(host.llm.targeted_module_names),
                   trainable_parameters=sum(p.numel() for p in host.parameters() if p.requires_grad),
                   total_parameters=sum(p.numel() for p in host.parameters()))

    def record(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        share = self.trainable_parameters / max(self.total_parameters, 1)
        return (f"{self.architecture} ({self.dtype}): LoRA on {len(self.lora_modules)} modules "
                f"({', '.join(self.lora_targets)}); {self.trainable_parameters:,} of "
                f"{self.total_parameters:,} parameters train ({share:.2%})")
