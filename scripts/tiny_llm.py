"""Save a tiny random Llama (2 layers, width 64) with a real tokenizer as a local HF folder.

For smoke runs of the whole pipeline where only the code path matters, not what the model
learns (``scripts/gpu_study.sh --smoke``): loads in a second, never downloads anything.
usage: python scripts/tiny_llm.py OUT_DIR [--tokenizer DIR]   (default: the embedded LLM's tokenizer)
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tca4rec.llm.model import load_tokenizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("--tokenizer", help="a folder holding a Hugging Face tokenizer")
args = parser.parse_args()

tokenizer = (AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True) if args.tokenizer
             else load_tokenizer())
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
torch.manual_seed(0)
config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                     tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
LlamaForCausalLM(config).save_pretrained(args.out)
tokenizer.save_pretrained(args.out)
print(f"tiny random Llama -> {args.out}")
