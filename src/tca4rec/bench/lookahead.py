"""``tca4rec bench lookahead``: how many of the CF model's own top-k titles a CF-only beam search finds.

CF-guided decoding at beta -> infinity ranks titles by the CF model alone; whether a beam of
width k then returns the CF model's top-k depends only on how partial beams are scored
(``cf_lookahead``, DESIGN.md "CF-guided decoding"). This measures it without any LLM: a beam
search whose every score is ``CFGuide.log_bound`` (the same candidates, pruning and leaves as
``constrained_beam_search``), its finished titles against the exact top-k titles by
p_CF(title) (items with the same title summed). With "max" the recall is 1 up to ties; the
question is what "sum" loses. Rows come from the valid split (never test: the numbers choose
a decoding default).
"""

from __future__ import annotations

import torch

from tca4rec.align.guidance import CF_LOOKAHEADS, CFGuide
from tca4rec.align.trie import ROOT, TitleTrie
from tca4rec.bench import write_result
from tca4rec.cf import load_cf_run
from tca4rec.data import load_dataset
from tca4rec.decode.beam import segment_topk
from tca4rec.errors import ConfigError
from tca4rec.llm.decoding import item_logits
from tca4rec.llm.model import load_tokenizer
from tca4rec.llm.prompts import title_token_ids


def cf_only_beam_search(trie: TitleTrie, cf_logits: torch.Tensor, width: int, lookahead: str) -> torch.Tensor:
    """Leaves [B, width] a beam of ``width`` scored by the CF bound alone finishes with, best first; -1 padded."""
    guide = CFGuide(trie, cf_logits, lookahead=lookahead)
    num_rows = guide.num_rows
    sample, node = torch.arange(num_rows), torch.full((num_rows,), ROOT, dtype=torch.long)
    done_sample, done_leaf, done_score = [], [], []
    while node.numel():
        rows, kids = trie.children(node)  # [C]
        cand_sample = sample[rows]
        score = guide.log_bound(cand_sample, kids)
        viable = torch.isfinite(score)  # no CF mass below: never entered
        finished = viable & trie.is_leaf(kids)
        done_sample.append(cand_sample[finished])
        done_leaf.append(kids[finished])
        done_score.append(score[finished])
        # Live beams beyond the width are dropped; a bound never rises, so the dropped ones could
        # only have finished below the beams kept (the early stop changes nothing here).
        alive = (viable & ~finished).nonzero().squeeze(1)
        best = segment_topk(cand_sample[alive], score[alive], num_rows, width)
        keep = alive[best[best >= 0]]
        sample, node = cand_sample[keep], kids[keep]
    leaves = torch.cat(done_leaf)
    top = segment_topk(torch.cat(done_sample), torch.cat(done_score), num_rows, width)
    return torch.where(top >= 0, leaves[top.clamp(min=0)], -1)


def cf_top_titles(trie: TitleTrie, cf_logits: torch.Tensor, k: int) -> torch.Tensor:
    """Leaves [B, k] of the k most probable titles of each row under the CF logits (exact, float64)."""
    guide = CFGuide(trie, cf_logits, lookahead="sum")  # at a leaf both are log p_CF; sum builds no table
    leaves = trie.is_leaf(torch.arange(trie.num_nodes)).nonzero().squeeze(1)  # [F]
    rows = torch.arange(guide.num_rows).repeat_interleave(leaves.numel())
    log_p = guide.log_share(rows, leaves.repeat(guide.num_rows)).view(guide.num_rows, -1)  # [B, F]
    return leaves[log_p.topk(k, dim=1).indices]


def top_k_recall(trie: TitleTrie, cf_logits: torch.Tensor, width: int = 10, k: int = 10,
                 lookahead: str = "sum") -> torch.Tensor:
    """Per row [B]: the fraction of the CF model's own top-k titles a CF-only width-``width`` search finds."""
    if width < 1 or not 1 <= k <= width:
        raise ConfigError(f"need 1 <= k <= width, got k {k} and width {width}")
    found = cf_only_beam_search(trie, cf_logits, width, lookahead)  # [B, width]
    truth = cf_top_titles(trie, cf_logits, k)  # [B, k]
    return (truth[:, :, None] == found[:, None, :]).any(2).double().mean(1)


def run(args) -> int:
    if args.split == "test":
        raise ConfigError("--split test: the lookahead is chosen on valid rows, never on test rows")
    if args.rows < 1:
        raise ConfigError(f"--rows {args.rows}: must be >= 1")
    dataset = load_dataset(args.data)
    rows = dataset.split(args.split).head(args.rows)
    tokenizer = load_tokenizer(args.llm)
    trie = TitleTrie(title_token_ids(tokenizer, dataset.titles[1:]), tokenizer.eos_token_id)
    z = item_logits(load_cf_run(args.cf_run, dataset), torch.tensor(rows.users), torch.tensor(rows.histories))
    result = {"data": str(args.data), "cf_run": str(args.cf_run), "split": args.split, "rows": len(rows),
              "width": args.width, "k": args.k}
    for lookahead in CF_LOOKAHEADS:
        recall = top_k_recall(trie, z, args.width, args.k, lookahead)
        result[lookahead] = {"mean_recall": float(recall.mean()), "per_row": recall.tolist()}
        print(f"{lookahead:>3} lookahead: a CF-only beam of width {args.width} finds {recall.mean():.1%} of the "
              f"CF model's own top-{args.k} titles ({len(rows)} {args.split} rows, min {recall.min():.0%})")
    if args.out:
        write_result(args.out, "lookahead", result)
    return 0
