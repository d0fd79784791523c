"""tca4rec: LLM-based generative recommendation with token-level collaborative alignment.

The package is organized by stage: ``data`` (datasets), ``cf`` (collaborative-filtering
models), ``align`` (title trie, Collaborative Tokenizer, soft next-token loss), ``llm``
(prompts, hosts, LoRA fine-tuning), ``decode`` (trie-constrained beam search),
``evaluate`` (metrics, reports, plots) and, on top, ``serve`` (the HTTP service). ``cli`` is
a thin layer over these.
"""

from tca4rec.errors import DatasetError, TCA4RecError

__version__ = "0.1.0"
__all__ = ["DatasetError", "TCA4RecError", "__version__"]
