"""tca4rec: LLM-based generative recommendation with token-level collaborative alignment.

The package reads top to bottom as the pipeline's layers; a module imports only its own
room and the layers below it (``tests/test_layers.py`` enforces this, and no cycles):

0. ``errors``: the exceptions users see.
1. ``io``, ``validate``: atomic file writes; type checks of settings a person wrote.
2. ``data``: datasets (release format, synthetic, import). ``align``: the title trie, the
   Collaborative Tokenizer and the soft next-token loss (the method itself).
3. ``decode``: beam search constrained to the trie, optionally CF-guided.
4. ``evaluate``: HR/NDCG, bootstrap CIs, paired tests, tables and plots (no models).
5. ``cf``: the collaborative-filtering zoo, its training and evaluation.
6. ``llm``: prompts, hosts, LoRA fine-tuning with soft labels, LLM evaluation, beta tuning,
   recommendation.
7. ``fuse``: the learned fusion, a LightGBM ranker over both experts' candidates.
8. ``study``: experiments: the grid runner and its cells, reports, the demo.
9. ``bench``, ``serve``: benchmarks and the HTTP service.
10. ``cli``: the command line, a thin layer over all of the above.
"""

from tca4rec.errors import DatasetError, TCA4RecError

__version__ = "0.1.0"
__all__ = ["DatasetError", "LAYERS", "TCA4RecError", "__version__"]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",), ("io", "validate"), ("data", "align"), ("decode",), ("evaluate",), ("cf",), ("llm",), ("fuse",),
    ("study",), ("bench", "serve"), ("cli",))
