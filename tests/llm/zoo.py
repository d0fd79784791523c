"""Tiny random causal LMs of seven architectures, saved as local HF folders with tokenizers
that carry the quirks real ones have (built here: nothing is downloaded).

Tokenizers:
- ``bpe``: the default LLM's byte-level BPE (pad token set, a chat template);
- ``bpe_bare``: the same without pad token and without chat template (GPT-2 style);
- ``bpe_bos``: the same, but it prepends BOS by itself (OPT style);
- ``sp``: a SentencePiece-style BPE with leading-space markers (``▁``) trained here on the
  synthetic titles, BOS prepended automatically, no pad token (Llama style);
- ``sp_chat``: the same with a pad token and a chat template (Gemma style).
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"

# architecture -> (tokenizer kind, the modules LoRA must adapt by default in layer 0)
ARCHITECTURES = {
    "llama": ("sp", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
    "qwen2": ("bpe", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
    "gemma": ("sp_chat", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
    "phi3": ("bpe", {"self_attn.qkv_proj", "self_attn.o_proj"}),
    "gpt2": ("bpe_bare", {"attn.c_attn", "attn.c_proj"}),
    "gpt_neox": ("bpe_bare", {"attention.query_key_value", "attention.dense"}),
    "opt": ("bpe_bos", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}),
}


def _wrap(backend, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def sentencepiece_style(corpus: list[str], pad: bool, chat: bool):
    """A small Metaspace BPE (``▁`` marks a leading space) that prepends ``<s>`` by itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if pad else [])
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                                            show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", backend.token_to_id("<s>"))])
    pad_token = {"pad_token": "<pad>"} if pad else {}
    tok = _wrap(backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **pad_token)
    tok.chat_template = CHAT_TEMPLATE if chat else None
    return tok


def byte_level(default, pad: bool, chat: bool, prepend_bos: bool):
    """The default LLM's byte-level BPE, with or without pad token / chat template / automatic BOS."""
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_str(default.backend_tokenizer.to_str())
    bos = default.bos_token
    if prepend_bos:
        backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                               special_tokens=[(bos, default.bos_token_id)])
    special = {"bos_token": bos, "eos_token": default.eos_token, "unk_token": default.unk_token}
    tok = _wrap(backend, **special, **({"pad_token": default.eos_token} if pad else {}))
    tok.chat_template = default.chat_template if chat else None
    return tok


def build_tokenizer(kind: str, default, corpus: list[str]):
    if kind.startswith("sp"):
        return sentencepiece_style(corpus, pad=kind == "sp_chat", chat=kind == "sp_chat")
    return byte_level(default, pad=kind == "bpe", chat=kind == "bpe", prepend_bos=kind == "bpe_bos")


def tiny_config(arch: str, tok):
    """A 2-layer, width-32 config of ``arch`` over ``tok``'s vocabulary."""
    from transformers import GemmaConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Phi3Config, Qwen2Config

    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    width = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=1024)
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, **ids)
    if arch == "opt":
        return OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         word_embed_proj_dim=32, max_position_embeddings=1024, **ids)
    if arch == "gpt_neox":
        return GPTNeoXConfig(**width, **ids)
    if arch == "phi3":
        return Phi3Config(**width, num_key_value_heads=4, **ids)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma": GemmaConfig}[arch]
    extra = {"head_dim": 8} if arch == "gemma" else {}
    return cls(**width, num_key_value_heads=2, **extra, **ids)


def save_tiny_model(arch: str, out: Path, default_tokenizer, corpus: list[str]) -> Path:
    """Random weights (seeded) of ``arch`` and its quirky tokenizer, saved in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(ARCHITECTURES[arch][0], default_tokenizer, corpus)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config(arch, tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out
