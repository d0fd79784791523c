"""``tca4rec bench scale``: how the alignment path grows with the catalog, one process.

For each catalog size (synthetic titles, ``tca4rec data synth``'s generator): title
tokenization, trie + Collaborative Tokenizer build, soft labels per batch of random CF
logits (median, and peak tensor memory beyond the logits, as a multiple of the [B, N]
float32 logits; from logits in trie order, as training hands them over, and, for
comparison, in item order), CF full ranking of a random SASRec (time per row, peak
memory), and trie-constrained beam search with a tiny random Llama (time per decoding step). A
least-squares line through the label times gives the cost per item; ratios between sizes
on the same machine, in the same process, are what the numbers are for.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tca4rec.align import CollaborativeTokenizer
from tca4rec.bench import write_result
from tca4rec.bench.align import median_seconds, peak_tensor_bytes
from tca4rec.cf.run import topk
from tca4rec.cf.zoo import cf_model_class
from tca4rec.data.synth import SynthConfig, synthesize
from tca4rec.decode.beam import BeamSearchConfig, constrained_beam_search
from tca4rec.errors import ConfigError
from tca4rec.llm.model import load_tokenizer
from tca4rec.llm.prompts import title_token_ids


def fitted_line(items: list[int], seconds: list[float]) -> tuple[float, float, float]:
    """Least squares seconds = intercept + slope * items: (slope, intercept, largest relative residual)."""
    slope, intercept = np.polyfit(np.asarray(items, dtype=float), np.asarray(seconds, dtype=float), 1)
    fitted = intercept + slope * np.asarray(items, dtype=float)
    return float(slope), float(intercept), float(np.max(np.abs(fitted - seconds) / np.asarray(seconds)))


def tiny_llama(vocab_size: int, seed: int):
    """A 2-layer, 64-wide random Llama over the given vocabulary (built from a config, nothing downloaded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def measure_size(num_items: int, text_tokenizer, llm, batch: int, repeats: int, rows: int, seed: int) -> dict:
    """Every stage at one catalog size."""
    result: dict = {"items": num_items}
    start = time.perf_counter()
    dataset = synthesize(SynthConfig(num_items=num_items, num_users=max(rows, 100), seed=seed))
    result["synth_s"] = time.perf_counter() - start
    start = time.perf_counter()
    item_token_ids = title_token_ids(text_tokenizer, dataset.titles[1:])
    result["tokenize_titles_s"] = time.perf_counter() - start
    start = time.perf_counter()
    tokenizer = CollaborativeTokenizer(item_token_ids, text_tokenizer.eos_token_id)
    result["build_s"] = time.perf_counter() - start
    result["trie_nodes"] = tokenizer.trie.num_nodes

    gen = torch.Generator().manual_seed(seed)
    cf_logits = torch.randn(batch, num_items, generator=gen) * 3
    targets = torch.randint(0, num_items, (batch,), generator=gen)
    trie_logits = cf_logits[:, tokenizer.trie.order].contiguous()  # as training hands them over
    result["labels_item_order_s"], result["labels_s"] = median_seconds(
        [lambda: tokenizer.soft_labels(cf_logits, targets),
         lambda: tokenizer.soft_labels(trie_logits, targets, trie_order=True)], repeats)
    result["labels_peak_bytes"] = peak_tensor_bytes(lambda: tokenizer.soft_labels(trie_logits, targets,
                                                                                  trie_order=True))
    result["logits_bytes"] = cf_logits.numel() * 4
    result["labels_peak_vs_logits"] = result["labels_peak_bytes"] / result["logits_bytes"]

    cls = cf_model_class("sasrec")
    model = cls(cls.config_class(seed=seed), num_items, dataset.num_users)
    test = dataset.split("test").head(rows)
    start = time.perf_counter()
    result["ranking_peak_bytes"] = peak_tensor_bytes(lambda: topk(model, test.users, test.histories, k=10))
    result["ranking_s_per_row"] = (time.perf_counter() - start) / len(test.users)

    prompt = torch.randint(0, llm.config.vocab_size, (2, 32), generator=gen)
    start = time.perf_counter()
    found = constrained_beam_search(llm, tokenizer.trie, torch.ones_like(prompt), input_ids=prompt,
                                    config=BeamSearchConfig(num_beams=10, top_k=10))
    result["beam_s"] = time.perf_counter() - start
    result["beam_steps"] = found.steps
    result["beam_s_per_step"] = result["beam_s"] / max(1, found.steps)
    return result


def run_bench(sizes: list[int], text_tokenizer, batch: int, repeats: int, rows: int, seed: int) -> dict:
    llm = tiny_llama(len(text_tokenizer), seed)
    per_size = [measure_size(n, text_tokenizer, llm, batch, repeats, rows, seed) for n in sizes]
    out = {"batch": batch, "repeats": repeats, "rows": rows, "seed": seed, "threads": torch.get_num_threads(),
           "sizes": per_size}
    if len(sizes) >= 2:
        slope, intercept, residual = fitted_line(sizes, [r["labels_s"] for r in per_size])
        out["labels_fit"] = {"s_per_item": slope, "intercept_s": intercept, "max_relative_residual": residual,
                             "ns_per_logit": slope / batch * 1e9}
    return out


def _format(result: dict) -> str:
    mib = 1 << 20
    lines = [f"batch {result['batch']}, {result['threads']} thread(s), median of {result['repeats']}; "
             f"CF ranking of {result['rows']} rows; beam search: 2 prompts x 10 beams, tiny random Llama"]
    header = ("items", "trie nodes", "synth s", "tokenize s", "build s", "labels ms", "(item order)", "labels peak",
              "rank ms/row", "rank peak", "beam ms/step")
    lines.append(" | ".join(header))
    for r in result["sizes"]:
        lines.append(" | ".join([
            f"{r['items']:,}", f"{r['trie_nodes']:,}", f"{r['synth_s']:.1f}", f"{r['tokenize_titles_s']:.1f}",
            f"{r['build_s']:.1f}", f"{r['labels_s'] * 1e3:.1f}", f"{r['labels_item_order_s'] * 1e3:.1f}",
            f"{r['labels_peak_bytes'] / mib:.1f} MiB ({r['labels_peak_vs_logits']:.2f}x logits)",
            f"{r['ranking_s_per_row'] * 1e3:.1f}", f"{r['ranking_peak_bytes'] / mib:.0f} MiB",
            f"{r['beam_s_per_step'] * 1e3:.1f} ({r['beam_steps']} steps)"]))
    if "labels_fit" in result:
        fit = result["labels_fit"]
        lines.append(f"soft labels, fitted: {fit['s_per_item'] * 1e9:.0f} ns per item per batch "
                     f"({fit['ns_per_logit']:.2f} ns per logit) + {fit['intercept_s'] * 1e3:.1f} ms; "
                     f"largest relative residual {fit['max_relative_residual']:.0%}")
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--items must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 10:
        raise ConfigError(f"--items must list catalog sizes of at least 10, got {text!r}")
    return sizes


def run(args) -> int:
    sizes = _sizes(args.items)
    if args.batch < 1 or args.repeats < 1 or args.threads < 1 or args.rows < 1:
        raise ConfigError("--batch, --repeats, --rows and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    result = run_bench(sizes, load_tokenizer(args.llm), args.batch, args.repeats, args.rows, args.seed)
    print(_format(result))
    if args.out:
        write_result(args.out, "scale", result)
    return 0
