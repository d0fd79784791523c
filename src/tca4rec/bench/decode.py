"""``tca4rec bench decode``: the trie-constrained beam search against Hugging Face ``generate``.

The baseline is how earlier LLM recommenders (BIGRec, D3) decode: ``generate`` with
``prefix_allowed_tokens_fn`` over a dict trie (token prefix -> allowed next tokens), with
``length_penalty=0`` and ``early_stopping=False`` so that it ranks titles by the same plain
sum of log-probs. Same model, same prompts (the TALLRec prompt of dataset rows), same beam
width. Reported: samples/s of both, the speed-up, and how many top-k lists are identical.

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
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.errors import ConfigError
from tca4rec.llm.prompts import left_pad

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


def run_bench(model, trie: TitleTrie, item_token_ids: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
              pad_id: int, beams: int, batch: int) -> dict:
    """Decode every prompt with both methods (``batch`` prompts per call); JSON-ready results."""
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

    # The two decoders alternate batch by batch, so that a change in machine load hits both.
    config = BeamSearchConfig(num_beams=beams, top_k=beams)
    hf, ours, hf_s, ours_s = [], [], 0.0, 0.0
    for ids, mask in tqdm(batches, desc="decoding (HF, then ours)", unit="batch"):
        start = time.perf_counter()
        hf.append(hf_constrained_generate(model, ids, mask, allowed, column, eos, pad_id, beams, max_new_tokens))
        middle = time.perf_counter()
        ours.append(constrained_beam_search(model, trie, mask, input_ids=ids, config=config))
        hf_s, ours_s = hf_s + middle - start, ours_s + time.perf_counter() - middle

    hf_items, hf_scores = torch.cat([h[0] for h in hf]), torch.cat([h[1] for h in hf])
    our_items, our_scores = torch.cat([o.items for o in ours]), torch.cat([o.scores for o in ours])
    identical = (hf_items == our_items).all(1)
    tolerance = SCORE_TOLERANCE * (1 + hf_scores.abs())
    at_least_as_good = (our_scores >= hf_scores - tolerance).all(1)
    for row in range(len(prompts)):  # every HF title above our k-th score is in our list
        above = hf_scores[row] > our_scores[row, -1] + tolerance[row]
        at_least_as_good[row] &= set(hf_items[row, above].tolist()) <= set(our_items[row].tolist())
    n = len(prompts)
    return {
        "samples": n, "beams": beams, "batch": batch, "threads": torch.get_num_threads(),
        "items": trie.num_items, "trie_nodes": trie.num_nodes,
        "mean_prompt_tokens": sum(map(len, prompts)) / n,
        "hf_seconds": hf_s, "ours_seconds": ours_s,
        "hf_samples_per_s": n / hf_s, "ours_samples_per_s": n / ours_s, "speedup": hf_s / ours_s,
        "hf_steps_per_batch": sum(h[2] for h in hf) / len(hf),
        "ours_steps_per_batch": sum(o.steps for o in ours) / len(ours),
        "ours_beam_rows_per_step": sum(o.beam_rows for o in ours) / max(1, sum(o.steps for o in ours)),
        "identical_top_k": int(identical.sum()), "ours_at_least_as_good": int(at_least_as_good.sum()),
        "hf_items": hf_items.tolist(), "ours_items": our_items.tolist(),
    }


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"constrained decoding, {result['beams']} beams, {result['samples']} samples "
                        f"(batch {result['batch']}, {result['threads']} thread(s); catalog {result['items']} items, "
                        f"{result['trie_nodes']} trie nodes; prompts {result['mean_prompt_tokens']:.0f} tokens)")
    for col in ("decoder", "samples/s", "s/sample", "steps/call", "speed-up"):
        table.add_column(col, justify="left" if col == "decoder" else "right")
    table.add_row("HF generate + prefix_allowed_tokens_fn", f"{result['hf_samples_per_s']:.3f}",
                  f"{1 / result['hf_samples_per_s']:.2f}", f"{result['hf_steps_per_batch']:.1f}", "1.0x")
    table.add_row("tca4rec constrained_beam_search", f"{result['ours_samples_per_s']:.3f}",
                  f"{1 / result['ours_samples_per_s']:.2f}", f"{result['ours_steps_per_batch']:.1f}",
                  f"{result['speedup']:.1f}x")
    console = Console()
    console.print(table)
    console.print(f"beam rows per step (ours; HF always runs batch x {result['beams']}): "
                  f"{result['ours_beam_rows_per_step']:.1f}")
    console.print(f"identical top-{result['beams']} items: {result['identical_top_k']}/{result['samples']} samples; "
                  f"ours >= HF at every rank: {result['ours_at_least_as_good']}/{result['samples']}")


def run(args) -> int:
    from tca4rec.data import load_dataset
    from tca4rec.llm.model import load_causal_lm, load_tokenizer
    from tca4rec.llm.prompts import PromptBuilder, title_token_ids

    if args.samples < 1 or args.beams < 1 or args.threads < 1 or args.batch < 1:
        raise ConfigError("--samples, --beams, --batch and --threads must be at least 1")
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
    result = run_bench(model, trie, item_token_ids, prompts, tokenizer.pad_token_id, args.beams, args.batch)
    result.update(data=str(args.data), split=args.split, llm=str(args.llm or "default"))
    _print_table(result)
    if args.out:
        from tca4rec.io import atomic_write_json

        atomic_write_json(args.out, result)
    return 0


def register(group) -> None:
    from tca4rec.cli import add_command

    p = add_command(group, "decode", run,
                    "trie-constrained beam search vs HF generate with prefix_allowed_tokens_fn: speed and equality",
                    ("tca4rec bench decode --data ../shared/data/amazon2018/Toys_and_Games --samples 8",
                     "tca4rec bench decode --data data/synth --llm path/to/hf_model --beams 5 --out bench_decode.json"))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--llm", default=None, help="local Hugging Face model folder (default: SmolLM2-135M, base weights)")
    p.add_argument("--samples", type=int, default=8, help="rows decoded, from the first (default 8)")
    p.add_argument("--beams", type=int, default=10, help="beam width = items returned (default 10)")
    p.add_argument("--batch", type=int, default=1, help="prompts per decoding call, both methods (default 1)")
    p.add_argument("--split", default="test", help="split whose rows give the prompts (default test)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    p.add_argument("--out", default=None, help="also write the results as JSON here (atomic)")
