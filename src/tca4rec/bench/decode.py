"""``tca4rec bench decode``: the trie-constrained beam search against Hugging Face ``generate``.

The baseline is how earlier LLM recommenders (BIGRec, D3) decode: ``generate`` with
``prefix_allowed_tokens_fn`` over a dict trie (token prefix -> allowed next tokens), with
``length_penalty=0`` and ``early_stopping=False`` so that it ranks titles by the same plain
sum of log-probs. Same model, same prompts (the TALLRec prompt of dataset rows), same beam
width. Reported: samples/s of both, the speed-up, and how many top-k lists are identical.

More timings in the same loop, batch by batch, decoders alternating so that a change in
machine load hits all of them:
- the search with its prompt cache copied to every beam and reordered each step
  (``share_prompt_kv=False``, the path before the shared prompt KV; skipped with
  ``--no-copied``): same items, same scores to float tolerance (checked);
- CF-guided decoding (``--beta``, logits of ``--cf-run`` or, without one, seeded random
  logits: the search's cost does not depend on which model produced them; ``--cf-lookahead``
  sum or max) against beta = 0;
- two **floors**, model forwards with no search logic and no cache copies (one prefill per
  batch, then forwards of one-token sequences each extending itself in the same shared prompt
  cache; for a model that cannot share prompt KV, its cache repeated once per sequence):
  the *floor* runs the forwards the search ran, with as many tokens (forced tokens fed ahead
  let it skip forwards: ``BeamSearchConfig.lookahead``); the *step floor* runs one forward
  per search step over the search's mean live beams, the floor of a search without lookahead.
  The search's time over the floor is what its bookkeeping and per-step reordering cost.

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

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD
from tca4rec.align.trie import TitleTrie
from tca4rec.bench import write_result
from tca4rec.cf import load_cf_run
from tca4rec.data import load_dataset
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.decode.shared_kv import CONTEXT_KWARG, SharedPromptCache, shared_kv_attention
from tca4rec.errors import ConfigError
from tca4rec.llm.decoding import item_logits, parse_beta
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
def forwards_floor(model, ids: torch.Tensor, mask: torch.Tensor, forwards: int, tokens: int, shared: bool) -> None:
    """The model work of a search without its logic: prefill, then ``forwards`` forwards of ``tokens`` tokens
    in all (as many per row in each), every token extending its own sequence (no reordering, no copies)."""
    from transformers import DynamicCache

    rows = ids.shape[0]
    per_row = max(1, round(tokens / max(1, forwards) / rows))  # mean tokens per row and forward
    samples = torch.arange(rows, device=ids.device).repeat_interleave(per_row)  # [R] grouped by row
    position = mask.sum(1, keepdim=True)[samples]  # [R, 1] of the first generated token
    token = ids[samples, -1:]  # [R, 1] any token: the cost does not depend on which
    prefill = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                   use_cache=True, logits_to_keep=1)
    if not shared:
        cache = DynamicCache(config=model.config)
        model(cache=cache, **prefill)
        cache.batch_repeat_interleave(per_row)
        step_mask = mask.repeat_interleave(per_row, 0)
        for depth in range(forwards):
            step_mask = torch.cat([step_mask, step_mask.new_ones(step_mask.shape[0], 1)], dim=1)
            model(input_ids=token, attention_mask=step_mask, position_ids=position + depth, cache=cache,
                  use_cache=True, logits_to_keep=1)
        return
    cache = SharedPromptCache()
    model(cache=cache, **prefill)
    cache.start(mask)
    beams = torch.arange(samples.numel(), device=ids.device)
    parents, first = samples, torch.zeros_like(samples)  # first forward: each beam's parent is its row's prompt
    with shared_kv_attention(model):
        for depth in range(forwards):
            cache.select(parents, samples)
            cache.feed(beams, first, (position + depth)[:, 0])
            model(input_ids=token, position_ids=position + depth, cache=cache, use_cache=True, logits_to_keep=1,
                  **{CONTEXT_KWARG: cache})
            parents = beams


def run_bench(model, trie: TitleTrie, item_token_ids: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
              pad_id: int, beams: int, batch: int, beta: float = 1.0, cf_logits: torch.Tensor | None = None,
              with_hf: bool = True, with_copied: bool = True, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> dict:
    """Decode every prompt (``batch`` prompts per call) with HF (unless ``with_hf`` is False), our search at
    beta = 0 with the prompt KV shared and (unless ``with_copied`` is False) copied per beam, at ``beta``
    (CF logits [len(prompts), N]: ``cf_logits`` or seeded random ones), and the forwards floor; JSON-ready
    results."""
    eos = trie.eos_token_id
    allowed = next_tokens_by_prefix(item_token_ids, eos)
    column: dict[tuple[int, ...], int] = {}
    for j, title in enumerate(item_token_ids):
        column.setdefault(tuple(title), j)
    max_new_tokens = int(trie.lengths.max())
    batches = [left_pad(prompts[i:i + batch], pad_id) for i in range(0, len(prompts), batch)]
    model.eval()
    with torch.inference_mode():  # warm-up (threads, allocator) outside the timings
        model(input_ids=batches[0][0][:1], attention_mask=batches[0][1][:1])

    if cf_logits is None:
        cf_logits = torch.randn(len(prompts), trie.num_items, generator=torch.Generator().manual_seed(0)) * 3
    config = BeamSearchConfig(num_beams=beams, top_k=beams)
    decoders = {
        "hf": lambda ids, mask, b: hf_constrained_generate(model, ids, mask, allowed, column, eos, pad_id, beams,
                                                           max_new_tokens),
        "ours": lambda ids, mask, b: constrained_beam_search(model, trie, mask, input_ids=ids, config=config),
        "copied": lambda ids, mask, b: constrained_beam_search(
            model, trie, mask, input_ids=ids, config=BeamSearchConfig(num_beams=beams, top_k=beams,
                                                                      share_prompt_kv=False)),
        "guided": lambda ids, mask, b: constrained_beam_search(
            model, trie, mask, input_ids=ids, config=BeamSearchConfig(num_beams=beams, top_k=beams, beta=beta,
                                                                   cf_lookahead=cf_lookahead),
            cf_logits=cf_logits[b * batch:(b + 1) * batch]),
        # after "ours": the floors run the forwards of that batch's search (the forwards it ran, and
        # one per step over the live beams)
        "floor": lambda ids, mask, b: forwards_floor(model, ids, mask, outputs["ours"][-1].forwards,
                                                     outputs["ours"][-1].fed_tokens,
                                                     outputs["ours"][-1].shared_prompt_kv),
        "step_floor": lambda ids, mask, b: forwards_floor(model, ids, mask, outputs["ours"][-1].steps,
                                                          outputs["ours"][-1].beam_rows,
                                                          outputs["ours"][-1].shared_prompt_kv),
    }
    if not with_hf:
        del decoders["hf"]
    if not with_copied:
        del decoders["copied"]
    seconds = dict.fromkeys(decoders, 0.0)
    outputs: dict[str, list] = {name: [] for name in decoders}
    # The decoders alternate batch by batch, so that a change in machine load hits all of them.
    for b, (ids, mask) in enumerate(tqdm(batches, desc=f"decoding ({', '.join(decoders)})", unit="batch")):
        for name, decode in decoders.items():
            start = time.perf_counter()
            outputs[name].append(decode(ids, mask, b))
            seconds[name] += time.perf_counter() - start
    n, ours = len(prompts), outputs["ours"]
    our_items, our_scores = torch.cat([o.items for o in ours]), torch.cat([o.scores for o in ours])
    result = {"samples": n, "beams": beams, "batch": batch, "threads": torch.get_num_threads(),
              "items": trie.num_items, "trie_nodes": trie.num_nodes,
              "mean_prompt_tokens": sum(map(len, prompts)) / n, "beta": beta, "cf_lookahead": cf_lookahead,
              "shared_prompt_kv": all(o.shared_prompt_kv for o in ours),
              **{f"{name}_seconds": s for name, s in seconds.items()},
              "ours_samples_per_s": n / seconds["ours"], "guided_overhead": seconds["guided"] / seconds["ours"] - 1,
              "ours_over_floor": seconds["ours"] / seconds["floor"],
              "ours_over_step_floor": seconds["ours"] / seconds["step_floor"],
              "ours_steps_per_batch": sum(o.steps for o in ours) / len(ours),
              "ours_forwards_per_batch": sum(o.forwards for o in ours) / len(ours),
              "ours_fed_tokens_per_forward": sum(o.fed_tokens for o in ours) / max(1, sum(o.forwards for o in ours)),
              "ours_beam_rows_per_step": sum(o.beam_rows for o in ours) / max(1, sum(o.steps for o in ours)),
              "ours_items": our_items.tolist()}
    if with_copied:
        copied = outputs["copied"]
        copied_scores = torch.cat([c.scores for c in copied])
        same_items = torch.equal(torch.cat([c.items for c in copied]), our_items)
        result.update(copied_over_ours=seconds["copied"] / seconds["ours"],
                      copied_identical=same_items and bool(torch.allclose(copied_scores, our_scores,
                                                                          rtol=SCORE_TOLERANCE, atol=0)),
                      copied_max_score_difference=float((copied_scores - our_scores).nan_to_num().abs().max()))
    if not with_hf:
        return result

    hf = outputs["hf"]
    hf_items, hf_scores = torch.cat([h[0] for h in hf]), torch.cat([h[1] for h in hf])
    identical = (hf_items == our_items).all(1)
    tolerance = SCORE_TOLERANCE * (1 + hf_scores.abs())
    at_least_as_good = (our_scores >= hf_scores - tolerance).all(1)
    for row in range(n):  # every HF title above our k-th score is in our list
        above = hf_scores[row] > our_scores[row, -1] + tolerance[row]
        at_least_as_good[row] &= set(hf_items[row, above].tolist()) <= set(our_items[row].tolist())
    return {**result, "hf_samples_per_s": n / seconds["hf"], "speedup": seconds["hf"] / seconds["ours"],
            "hf_steps_per_batch": sum(h[2] for h in hf) / len(hf),
            "identical_top_k": int(identical.sum()), "ours_at_least_as_good": int(at_least_as_good.sum()),
            "hf_items": hf_items.tolist()}


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"constrained decoding, {result['beams']} beams, {result['samples']} samples "
                        f"(batch {result['batch']}, {result['threads']} thread(s); catalog {result['items']} items, "
                        f"{result['trie_nodes']} trie nodes; prompts {result['mean_prompt_tokens']:.0f} tokens)")
    for col in ("decoder", "s/sample", "time / ours (beta 0)"):
        table.add_column(col, justify="left" if col == "decoder" else "right")
    n, ours = result["samples"], result["ours_seconds"]
    rows = [("hf", "HF generate + prefix_allowed_tokens_fn"),
            ("ours", "tca4rec constrained_beam_search, beta 0" + ("" if result["shared_prompt_kv"] else
                                                                   " (this model cannot share prompt KV)")),
            ("copied", "  ... prompt KV copied per beam (share_prompt_kv=False)"),
            ("guided", f"  ... CF-guided, beta {result['beta']:g}, {result['cf_lookahead']} lookahead"),
            ("floor", "  floor: the forwards it ran, no search logic, no copies"),
            ("step_floor", "  step floor: one forward per step over the live beams")]
    for key, label in rows:
        if f"{key}_seconds" in result:
            seconds = result[f"{key}_seconds"]
            table.add_row(label, f"{seconds / n:.2f}", f"{seconds / ours:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"steps per call {result['ours_steps_per_batch']:.1f}, of which {result['ours_forwards_per_batch']:.1f} "
                  f"ran the model ({result['ours_fed_tokens_per_forward']:.1f} tokens each); live beams per step "
                  f"(HF always runs batch x {result['beams']}): {result['ours_beam_rows_per_step']:.1f}")
    console.print(f"the search is {result['ours_over_floor']:.2f}x its forwards floor and "
                  f"{result['ours_over_step_floor']:.2f}x the step floor; CF guidance costs "
                  f"{100 * result['guided_overhead']:+.1f}% per row (ratios of one process, decoders alternating "
                  f"batch by batch: robust to machine load, unlike the s/sample)")
    if "copied_seconds" in result:
        console.print(f"copying the prompt KV per beam costs {result['copied_over_ours']:.2f}x; same items and "
                      f"scores: {'yes' if result['copied_identical'] else 'NO'} (largest score difference "
                      f"{result['copied_max_score_difference']:.2g})")
    if "hf_seconds" in result:
        console.print(f"HF generate takes {result['speedup']:.2f}x as long; identical top-{result['beams']} items: "
                      f"{result['identical_top_k']}/{n} samples; ours >= HF at every rank: "
                      f"{result['ours_at_least_as_good']}/{n}")


def run(args) -> int:
    if args.samples < 1 or args.beams < 1 or args.threads < 1 or args.batch < 1:
        raise ConfigError("--samples, --beams, --batch and --threads must be at least 1")
    if not parse_beta(args.beta) > 0:  # the rule of every --beta, then above 0
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
                       beta=args.beta, cf_logits=cf_logits, with_hf=not args.no_hf, with_copied=not args.no_copied,
                       cf_lookahead=args.cf_lookahead)
    result.update(data=str(args.data), split=args.split, llm=str(args.llm or "default"))
    _print_table(result)
    if args.out:
        write_result(args.out, "decode", result)
    return 0
