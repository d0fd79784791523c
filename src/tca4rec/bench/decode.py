"""``tca4rec bench decode``: the trie-constrained beam search against Hugging Face ``generate``.

The baseline is how earlier LLM recommenders (BIGRec, D3) decode: ``generate`` with
``prefix_allowed_tokens_fn`` over a dict trie (token prefix -> allowed next tokens), with
``length_penalty=0`` and ``early_stopping=False`` so that it ranks titles by the same plain
sum of log-probs. Same model, same prompts (the TALLRec prompt of dataset rows), same beam
width. Reported: samples/s of both, the speed-up, and how many top-k lists are identical.

Two more timings in the same loop, batch by batch: CF-guided decoding (``--beta``, logits
of ``--cf-run`` or, without one, seeded random logits: the search's cost does not depend on
which model produced them; ``--cf-lookahead`` sum or max) against beta = 0, and the **floor**: the same model forwards
with no search logic (one prompt prefill per batch, its cache repeated once to the search's
mean live beams per step, then as many one-token steps as the search ran). The search's
time over the floor is what its bookkeeping and per-step cache copies cost.

Where the lists differ, HF's admission rule is the cause (see tests/decode): it drops a
finished title whose EOS candidate ranks below ``num_beams`` in its step. The column
"ours >= HF" counts the samples where our list is at least as good at every rank and keeps
every HF title that scores above our k-th; those differences are HF's misses, not ours.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from tqdm import tqdm

from tca4rec.align.trie import TitleTrie
from tca4rec.cf import load_cf_run
from tca4rec.data import load_dataset
from tca4rec.decode import BeamSearchConfig, BeamSearchResult, constrained_beam_search
from tca4rec.errors import ConfigError
from tca4rec.io import atomic_write_json
from tca4rec.llm.decoding import item_logits
from tca4rec.llm.model import load_causal_lm, load_tokenizer
from tca4rec.llm.prompts import PromptBuilder, left_pad, title_token_ids

SCORE_TOLERANCE = 1e-5  # relative: float32 sums of ~15 log-probs (totals near -100), different kernels


def next_tokens_by_prefix(item_token_ids: Sequence[Sequence[int]],
                          eos_token_id: int) -> dict[tuple[int, ...], list[int]]:
    """The baseline's dict trie: every token prefix of every title + EOS -> its allowed next tokens."""
    allowed: dict[tuple[int, ...], set[int]] = {}
    for title in item_token_ids:
        seq = list(title) + [eos_token_id]
        for k in range(len(seq)):
            allowed.setdefault(tuple(seq[:k]), set()).add(seq[k])
    return {prefix: sorted(tokens) for prefix, tokens in allowed.items()}


def hf_constrained_generate(model, ids: torch.Tensor, mask: torch.Tensor, allowed: dict, column: dict,
                            eos: int, pad: int, beams: int,
                            max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The baseline: items [B, beams] (-1 if a sequence is not a title), scores [B, beams], steps run."""
    width = ids.shape[1]
    out = model.generate(
        input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams, do_sample=False,
        prefix_allowed_tokens_fn=lambda _, seq: allowed.get(tuple(seq[width:].tolist()), [eos]),
        length_penalty=0.0, early_stopping=False, max_new_tokens=max_new_tokens,
        pad_token_id=pad, eos_token_id=eos, return_dict_in_generate=True, output_scores=True)
    items = []
    for generated in out.sequences[:, width:].tolist():
        title = generated[:generated.index(eos)] if eos in generated else generated
        items.append(column.get(tuple(title), -1))
    steps = out.sequences.shape[1] - width
    return torch.tensor(items).view(-1, beams), out.sequences_scores.view(-1, beams).float(), steps


@torch.inference_mode()
def forwards_floor(model, ids: torch.Tensor, mask: torch.Tensor, search: BeamSearchResult) -> None:
    """The model work of ``search`` without its logic: prefill, repeat the cache once, ``steps`` steps."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), cache=cache,
          use_cache=True, logits_to_keep=1)
    repeats = max(1, round(search.beam_rows / max(1, search.steps) / ids.shape[0]))
    cache.batch_repeat_interleave(repeats)
    step_mask = mask.repeat_interleave(repeats, 0)
    position = step_mask.sum(1, keepdim=True)
    token = ids[:, -1:].repeat_interleave(repeats, 0)
    for depth in range(1, search.steps + 1):
        step_mask = torch.cat([step_mask, step_mask.new_ones(step_mask.shape[0], 1)], dim=1)
        model(input_ids=token, attention_mask=step_mask, position_ids=position + depth - 1, cache=cache,
              use_cache=True, logits_to_keep=1)


def run_bench(model, trie: TitleTrie, item_token_ids: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
              pad_id: int, beams: int, batch: int, beta: float = 1.0, cf_logits: torch.Tensor | None = None,
              with_hf: bool = True, cf_lookahead: str = "sum") -> dict:
    """Decode every prompt (``batch`` prompts per call) with HF (unless ``with_hf`` is False), our search at
    beta = 0 and at ``beta`` (CF logits [len(prompts), N]: ``cf_logits`` or seeded random ones), and
    the forwards floor; JSON-ready results."""
    eos = trie.eos_token_id
    allowed = next_tokens_by_prefix(item_token_ids, eos)
    column: dict[tuple[int, ...], int] = {}
    for j, title in enumerate(item_token_ids):
        column.setdefault(tuple(title), j)
    max_new_tokens = int(trie.lengths.max())
    batches = [left_pad(prompts[i:i + batch], pad_id) for i in range(0, len(prompts), batch)]
    model.eval()
    with torch.inference_mode():  # warm-up (threads, allocator) outside both timings
        model(input_ids=batches[0][0][:1], attention_mask=batches[0][1][:1])

    if cf_logits is None:
        cf_logits = torch.randn(len(prompts), trie.num_items, generator=torch.Generator().manual_seed(0)) * 3
    # The decoders alternate batch by batch, so that a change in machine load hits all of them.
    config = BeamSearchConfig(num_beams=beams, top_k=beams)
    guided_config = BeamSearchConfig(num_beams=beams, top_k=beams, beta=beta, cf_lookahead=cf_lookahead)
    hf, ours, hf_s, ours_s, guided_s, floor_s = [], [], 0.0, 0.0, 0.0, 0.0
    for b, (ids, mask) in enumerate(tqdm(batches, desc="decoding (HF, ours, guided, floor)", unit="batch")):
        start = time.perf_counter()
        if with_hf:
            hf.append(hf_constrained_generate(model, ids, mask, allowed, column, eos, pad_id, beams, max_new_tokens))
        t1 = time.perf_counter()
        ours.append(constrained_beam_search(model, trie, mask, input_ids=ids, config=config))
        t2 = time.perf_counter()
        constrained_beam_search(model, trie, mask, input_ids=ids, config=guided_config,
                                cf_logits=cf_logits[b * batch:(b + 1) * batch])
        t3 = time.perf_counter()
        forwards_floor(model, ids, mask, ours[-1])
        t4 = time.perf_counter()
        hf_s, ours_s, guided_s, floor_s = hf_s + t1 - start, ours_s + t2 - t1, guided_s + t3 - t2, floor_s + t4 - t3
    n = len(prompts)
    timings = {"samples": n, "beams": beams, "batch": batch, "threads": torch.get_num_threads(),
               "items": trie.num_items, "trie_nodes": trie.num_nodes,
               "mean_prompt_tokens": sum(map(len, prompts)) / n, "beta": beta, "cf_lookahead": cf_lookahead,
               "ours_seconds": ours_s, "guided_seconds": guided_s, "floor_seconds": floor_s,
               "ours_samples_per_s": n / ours_s, "guided_overhead": guided_s / ours_s - 1,
               "ours_over_floor": ours_s / floor_s,
               "ours_steps_per_batch": sum(o.steps for o in ours) / len(ours),
               "ours_beam_rows_per_step": sum(o.beam_rows for o in ours) / max(1, sum(o.steps for o in ours)),
               "ours_items": torch.cat([o.items for o in ours]).tolist()}
    if not with_hf:
        return timings

    hf_items, hf_scores = torch.cat([h[0] for h in hf]), torch.cat([h[1] for h in hf])
    our_items, our_scores = torch.cat([o.items for o in ours]), torch.cat([o.scores for o in ours])
    identical = (hf_items == our_items).all(1)
    tolerance = SCORE_TOLERANCE * (1 + hf_scores.abs())
    at_least_as_good = (our_scores >= hf_scores - tolerance).all(1)
    for row in range(n):  # every HF title above our k-th score is in our list
        above = hf_scores[row] > our_scores[row, -1] + tolerance[row]
        at_least_as_good[row] &= set(hf_items[row, above].tolist()) <= set(our_items[row].tolist())
    return {**timings, "hf_seconds": hf_s, "hf_samples_per_s": n / hf_s, "speedup": hf_s / ours_s,
            "hf_steps_per_batch": sum(h[2] for h in hf) / len(hf),
            "identical_top_k": int(identical.sum()), "ours_at_least_as_good": int(at_least_as_good.sum()),
            "hf_items": hf_items.tolist()}


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"constrained decoding, {result['beams']} beams, {result['samples']} samples "
                        f"(batch {result['batch']}, {result['threads']} thread(s); catalog {result['items']} items, "
                        f"{result['trie_nodes']} trie nodes; prompts {result['mean_prompt_tokens']:.0f} tokens)")
    for col in ("decoder", "s/sample", "vs ours (beta 0)"):
        table.add_column(col, justify="left" if col == "decoder" else "right")
    n = result["samples"]
    if "hf_seconds" in result:
        table.add_row("HF generate + prefix_allowed_tokens_fn", f"{result['hf_seconds'] / n:.2f}",
                      f"{result['speedup']:.2f}x slower")
    table.add_row("tca4rec constrained_beam_search, beta 0", f"{result['ours_seconds'] / n:.2f}", "1.00x")
    table.add_row(f"  ... CF-guided, beta {result['beta']:g}, {result['cf_lookahead']} lookahead",
                  f"{result['guided_seconds'] / n:.2f}",
                  f"{1 + result['guided_overhead']:.2f}x")
    table.add_row("  floor: the same forwards, no search logic", f"{result['floor_seconds'] / n:.2f}",
                  f"{1 / result['ours_over_floor']:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"steps per call {result['ours_steps_per_batch']:.1f}; beam rows per step (ours; HF always runs "
                  f"batch x {result['beams']}): {result['ours_beam_rows_per_step']:.1f}")
    console.print(f"CF guidance costs {100 * result['guided_overhead']:+.1f}% per row; the search is "
                  f"{result['ours_over_floor']:.2f}x its forwards floor")
    if "hf_seconds" in result:
        console.print(f"identical top-{result['beams']} items: {result['identical_top_k']}/{n} samples; "
                      f"ours >= HF at every rank: {result['ours_at_least_as_good']}/{n}")


def run(args) -> int:
    if args.samples < 1 or args.beams < 1 or args.threads < 1 or args.batch < 1:
        raise ConfigError("--samples, --beams, --batch and --threads must be at least 1")
    if not args.beta > 0:
        raise ConfigError(f"--beta {args.beta}: must be > 0 (it is compared against beta = 0)")
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    split = dataset.split(args.split)
    if len(split) == 0:
        raise ConfigError(f"the {args.split} split of {args.data} has no rows")
    tokenizer = load_tokenizer(args.llm)
    model = load_causal_lm(args.llm)
    item_token_ids = title_token_ids(tokenizer, dataset.titles[1:])  # item column j = item id j + 1
    trie = TitleTrie(item_token_ids, tokenizer.eos_token_id)
    builder = PromptBuilder(tokenizer)
    rows = range(min(args.samples, len(split)))
    prompts = [builder.build([item_token_ids[i - 1] for i in split.history(r)]).ids for r in rows]
    cf_logits = None
    if args.cf_run:
        cf_logits = item_logits(load_cf_run(args.cf_run, dataset).eval(), torch.tensor(split.users[: len(rows)]),
                                torch.tensor(split.histories[: len(rows)]))
    result = run_bench(model, trie, item_token_ids, prompts, tokenizer.pad_token_id, args.beams, args.batch,
                       beta=args.beta, cf_logits=cf_logits, with_hf=not args.no_hf, cf_lookahead=args.cf_lookahead)
    result.update(data=str(args.data), split=args.split, llm=str(args.llm or "default"))
    _print_table(result)
    if args.out:
        atomic_write_json(args.out, result)
    return 0
