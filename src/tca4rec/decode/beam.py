"""Beam search constrained to the title trie, so that every output is a real item.

Hugging Face ``generate`` with a ``prefix_allowed_tokens_fn`` gives the same kind of
result but spends most of its time on work that cannot change it (DESIGN.md,
"Measured"): it prefills the prompt once per beam, scores the whole vocabulary for
every beam, and keeps going until ``num_beams`` hypotheses are finished. Here:

- the prompt is prefilled once per sample, and its keys and values are shared by that
  sample's beams without copies (``SharedPromptCache``, shared_kv.py); only the booleans
  saying which generated tokens each beam descends from are reordered per step. With
  ``share_prompt_kv=False``, or for a model whose attention cannot be redirected
  (``shared_kv_unsupported``), the prompt's cache rows are copied to the beams and
  reordered every step instead (a ``DynamicCache`` with one row per live beam);
- a title's tail is usually forced: past the tokens that tell it from its neighbours, each
  trie node has one child. Once no live beam sits where its title branches (else the next
  step runs a forward anyway), a forward runs the forced tokens after each beam's token too,
  as one chain (``lookahead``). The log-probs of every token the model ran are kept per token
  (``_ScoredTokens``), so a beam that reaches a forced token later is scored without a
  forward, and a step whose beams were all scored ahead runs none. The search itself
  (candidates, scores, pruning, step by step) is unchanged: on Office_Products a row's 24
  steps need 10 forwards at 10 beams (a batch of 8 rows: 29 steps, 14 forwards), and almost
  no token is run in vain;
- every beam carries its trie node, advanced by the chosen child (no prefix re-walk);
  the candidates of a step are the trie children of the live beams, flattened over
  beams and samples, so selection is a few sorts over a short vector;
- a candidate that reaches a leaf (its EOS) is a finished item and enters a per-sample
  pool of the best ``top_k``. Scores are sums of log-probabilities, which only
  decrease, so a live beam that does not beat the pool's k-th score never will: it is
  dropped at once. The search ends when no beam is left, that is as soon as the top-k
  are final. (With length normalization this bound does not hold; beams then run to
  their leaves.)

Token scores: unmasked, the log-softmax of the logits over the whole vocabulary (as in
``generate``); masked (the MSL host), the log-softmax of ``logits / tau`` over the
trie children only, for which the output layer is evaluated at those tokens alone.

CF-guided decoding (``beta > 0``, DESIGN.md): each token's score gains beta * log q(v | n),
the Collaborative Tokenizer's next-token probability under the row's CF logits, so
finished titles rank by log p_LLM(title) + beta * log p_CF(title) (a product of experts).
The q's telescope along a path, so a beam's CF part is beta * log share(node) from
``CFGuide`` (precomputed once per call, two gathers per candidate). ``cf_lookahead="max"``
scores a partial beam by its subtree's most probable title instead (``CFGuide.log_max``),
which keeps the beams of the titles the CF model ranks first; at a leaf both are log p_CF.
Both parts are <= 0 and never increase along a path, so the early stop still holds; a
candidate whose subtree has no CF mass is dropped.
"""

from __future__ import annotations

import math
import threading
import weakref
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicCache

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD, CFGuide, check_lookahead
from tca4rec.align.trie import ROOT, TitleTrie
from tca4rec.decode.shared_kv import CONTEXT_KWARG, SharedPromptCache, shared_kv_attention, shared_kv_unsupported
from tca4rec.errors import ConfigError


@dataclass
class BeamSearchConfig:
    num_beams: int = 10
    top_k: int = 10  # items returned per sample, <= num_beams
    length_normalize: bool = False  # rank finished titles by mean token log-prob (favors long titles)
    masked: bool = False  # MSL: softmax over the trie children only, of logits / tau
    tau: float = 1.0  # used only when masked
    beta: float = 0.0  # CF weight: token score + beta * log q(v | node); 0 = plain decoding, bit for bit
    # A partial beam's CF part: its best title ("max", the default) or its subtree's share ("sum").
    cf_lookahead: str = DEFAULT_CF_LOOKAHEAD
    # Beams share their prompt's KV (no copies); False copies it per beam, as models that cannot share do
    # (the reference the tests and ``tca4rec bench decode`` compare against).
    share_prompt_kv: bool = True
    # With shared prompt KV, once no live beam sits where its title branches, a forward also feeds the
    # forced tokens after each beam's own (the title's rest while its trie node has one child): their
    # log-probs are then known ahead, and steps whose beams were all scored ahead run no forward.
    # Same search, same scores, fewer forwards.
    lookahead: bool = True

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ConfigError(f"num_beams must be >= 1, got {self.num_beams}")
        if not 1 <= self.top_k <= self.num_beams:
            raise ConfigError(f"top_k must be in [1, num_beams={self.num_beams}], got {self.top_k}")
        if not self.tau > 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ConfigError(f"beta must be a finite number >= 0, got {self.beta}")
        check_lookahead(self.cf_lookahead)


@dataclass
class BeamSearchResult:
    items: torch.LongTensor  # [B, top_k] item columns of the trie, best first; -1 where fewer exist
    scores: torch.FloatTensor  # [B, top_k] sum (or mean) of token scores (LLM + beta * CF); -inf where items == -1
    steps: int = 0  # decoding steps run after the prefill (the cost driver, with beam_rows)
    beam_rows: int = 0  # live beams summed over the steps (dead beams cost none)
    forwards: int = 0  # model calls after the prefill (steps whose beams were all scored ahead need none)
    fed_tokens: int = 0  # tokens those calls ran (forced tokens fed ahead included)
    shared_prompt_kv: bool = False  # whether the beams shared the prompt's KV (False: copied per beam)


def segment_topk(segment: torch.Tensor, score: torch.Tensor, num_segments: int, k: int) -> torch.Tensor:
    """Indices of the k best scores of each segment: [num_segments, k], best first, -1 padded.

    Ties keep the earlier index first.
    """
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(segment[order], stable=True)]  # by segment, then score desc
    seg_sorted = segment[order]
    counts = torch.bincount(segment, minlength=num_segments)
    rank = torch.arange(order.numel()) - (torch.cumsum(counts, 0) - counts)[seg_sorted]
    keep = rank < k
    top = torch.full((num_segments, k), -1, dtype=torch.long)
    top[seg_sorted[keep], rank[keep]] = order[keep]
    return top


def segment_log_softmax(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """log_softmax of ``values`` within each segment (float64; every segment id present is normalized)."""
    values = values.double()
    peak = torch.full((num_segments,), -torch.inf, dtype=torch.float64)
    peak = peak.scatter_reduce(0, segment, values, reduce="amax")
    shifted = values - peak[segment]
    total = torch.zeros(num_segments, dtype=torch.float64).index_add_(0, segment, shifted.exp())
    return shifted - total.log()[segment]


class _NextTokenScorer:
    """Runs the model one step (on the shared cache) and scores candidate next tokens."""

    def __init__(self, model, config: BeamSearchConfig) -> None:
        self.model = model
        self.masked = config.masked
        self.tau = config.tau
        head = model.get_output_embeddings()
        if head is None or not hasattr(head, "weight"):
            raise ConfigError(f"{type(model).__name__} has no output embedding layer (lm_head)")
        self.vocab_size = int(head.weight.shape[0])
        if self.masked:
            # logits = lm_head(last hidden state): evaluated below at the allowed tokens only.
            self.backbone = model.get_decoder()
            self.head_weight = head.weight  # [V, D]
            self.head_bias = getattr(head, "bias", None)
            # Gemma 2/3 squash their logits (cap * tanh(logits / cap)) after the head: so must we.
            self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def forward(self, cache: Cache, **inputs) -> torch.Tensor:
        """Last position's logits [R, V] (unmasked) or hidden state [R, D] (masked), float32."""
        if self.masked:
            return self.backbone(cache=cache, use_cache=True, **inputs).last_hidden_state[:, -1].float()
        return self.model(cache=cache, use_cache=True, logits_to_keep=1, **inputs).logits[:, -1].float()

    def log_probs(self, out: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Float64 log-prob (on the CPU) of ``tokens[c]`` after row ``rows[c]`` of ``out``; rows lists
        each row's allowed tokens (all of them: the masked softmax normalizes over exactly these).

        ``rows`` and ``tokens`` are CPU tensors (the search's bookkeeping lives there); ``out`` is on
        the model's device, so only the [C] candidate scores cross over, once per step.
        """
        rows_d, tokens_d = rows.to(out.device), tokens.to(out.device)
        if not self.masked:
            return (out[rows_d, tokens_d] - torch.logsumexp(out, dim=-1)[rows_d]).double().cpu()
        logits = (out[rows_d] * self.head_weight[tokens_d].float()).sum(-1)  # [C]
        if self.head_bias is not None:
            logits = logits + self.head_bias[tokens_d].float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return segment_log_softmax(logits.cpu() / self.tau, rows, out.shape[0])


class _FinishedPool:
    """The best ``k`` finished titles (leaf nodes) of each sample, best first."""

    def __init__(self, num_samples: int, k: int) -> None:
        self.k = k
        self.leaves = torch.full((num_samples, k), -1, dtype=torch.long)
        self.scores = torch.full((num_samples, k), -torch.inf, dtype=torch.float64)

    def add(self, samples: torch.Tensor, leaves: torch.Tensor, scores: torch.Tensor) -> None:
        if samples.numel() == 0:
            return
        held = self.leaves >= 0
        held_samples = torch.arange(self.leaves.shape[0])[:, None].expand_as(held)[held]
        all_samples = torch.cat([held_samples, samples])
        all_leaves = torch.cat([self.leaves[held], leaves])
        all_scores = torch.cat([self.scores[held], scores])
        top = segment_topk(all_samples, all_scores, self.leaves.shape[0], self.k)
        found = top >= 0
        self.leaves = torch.where(found, all_leaves[top.clamp(min=0)], -1)
        self.scores = torch.where(found, all_scores[top.clamp(min=0)], -torch.inf)

    def kth_score(self) -> torch.Tensor:
        """[B] score a live beam must beat to still matter (-inf until k titles are finished)."""
        return self.scores[:, -1]

    def result(self, trie: TitleTrie, steps: int, beam_rows: int, forwards: int, fed_tokens: int,
               shared: bool) -> BeamSearchResult:
        found = self.leaves >= 0
        # The smallest item column of each leaf: items with equal titles sort stably by column.
        items = trie.order[trie.range_start[self.leaves.clamp(min=0)]]
        return BeamSearchResult(items=torch.where(found, items, -1), scores=self.scores.float(),
                                steps=steps, beam_rows=beam_rows, forwards=forwards, fed_tokens=fed_tokens,
                                shared_prompt_kv=shared)


class _ScoredTokens:
    """Every token the model ran in this search (the prompts' last tokens first): the log-probs of
    its trie node's children (flat, in ``trie.children`` order), and the token fed right after it
    on the same chain (-1: none). The model outputs themselves are dropped once scored."""

    def __init__(self, trie: TitleTrie, scorer: _NextTokenScorer) -> None:
        self.trie, self.scorer = trie, scorer
        self.next = torch.empty(0, dtype=torch.long)  # [T]
        self.child_start = torch.empty(0, dtype=torch.long)  # [T] offset of the node's children in child_lp
        self.child_lp = torch.empty(0, dtype=torch.float64)  # [sum of children]

    def add(self, out: torch.Tensor, nodes: torch.Tensor, continues: torch.Tensor) -> torch.Tensor:
        """Score the outputs ``out`` [F, ...] of the tokens at ``nodes`` [F] (CPU); ``continues[f]``: token
        f + 1 is f's successor on its chain. Returns the tokens' indices [F] in the table."""
        first = self.next.numel()
        index = torch.arange(first, first + nodes.numel())
        rows, kids = self.trie.children(nodes)
        counts = self.trie.num_children[nodes]
        self.child_start = torch.cat([self.child_start, self.child_lp.numel() + torch.cumsum(counts, 0) - counts])
        self.child_lp = torch.cat([self.child_lp, self.scorer.log_probs(out, rows, self.trie.token[kids])])
        self.next = torch.cat([self.next, torch.where(continues, index + 1, -1)])
        return index

    def log_probs(self, at: torch.Tensor, kids: torch.Tensor) -> torch.Tensor:
        """Log-prob [C] of each child ``kids`` after the scored token ``at`` (which sits at its parent)."""
        return self.child_lp[self.child_start[at] + kids - self.trie.first_child[self.trie.parent[kids]]]


def forced_chains(trie: TitleTrie, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain of each node [N]: itself, then its forced successors (a node's only child, unless
    that is its EOS) to the chain's end. Returns the chain nodes flat [F], grouped by chain in
    order, and each one's chain [F]."""
    chain, current = [nodes], nodes
    while True:
        child = trie.first_child[current]
        forced = (trie.num_children[current] == 1) & ~trie.is_leaf(child) & (current >= 0)
        if not bool(forced.any()):
            break
        current = torch.where(forced, child, -1)
        chain.append(current)
    table = torch.stack(chain, dim=1)  # [N, k], -1 past a chain's end
    owner, _ = (table >= 0).nonzero(as_tuple=True)
    return table[table >= 0], owner


class _CopiedKV:
    """One ``DynamicCache`` row per live beam: the parents' rows are copied to their children."""

    lookahead = False  # a row per beam holds one token per step

    def __init__(self, model, scorer: _NextTokenScorer, prompt_mask: torch.Tensor) -> None:
        self.scorer, self.prompt_mask = scorer, prompt_mask
        self.cache = DynamicCache(config=model.config)
        self.depth = 0  # tokens generated so far

    def prefill(self, **inputs) -> torch.Tensor:
        return self.scorer.forward(self.cache, attention_mask=self.prompt_mask, **inputs)

    def decoding(self) -> AbstractContextManager:
        return nullcontext()

    def select(self, parents: torch.Tensor, samples: torch.Tensor) -> None:
        self.cache.batch_select_indices(parents)
        self.samples = samples
        self.depth += 1

    def feed(self, owner: torch.Tensor, chain_index: torch.Tensor, tokens: torch.Tensor,
             positions: torch.Tensor) -> torch.Tensor:
        """Every beam's token [R, 1] at ``positions`` [R, 1] (without lookahead, every beam feeds one)."""
        mask = torch.cat([self.prompt_mask[self.samples], self.prompt_mask.new_ones(owner.numel(), self.depth)], dim=1)
        return self.scorer.forward(self.cache, input_ids=tokens, attention_mask=mask, position_ids=positions)


class _SharedKV:
    """The prompt's KV once per row, shared by its beams (``SharedPromptCache``); the tokens a
    forward feeds may be chains."""

    def __init__(self, model, scorer: _NextTokenScorer, prompt_mask: torch.Tensor, lookahead: bool) -> None:
        self.model, self.scorer, self.prompt_mask, self.lookahead = model, scorer, prompt_mask, lookahead
        self.cache = SharedPromptCache()

    def prefill(self, **inputs) -> torch.Tensor:
        out = self.scorer.forward(self.cache, attention_mask=self.prompt_mask, **inputs)
        self.cache.start(self.prompt_mask)
        return out

    def decoding(self) -> AbstractContextManager:
        return shared_kv_attention(self.model)

    def select(self, parents: torch.Tensor, samples: torch.Tensor) -> None:
        self.cache.select(parents, samples)

    def feed(self, owner: torch.Tensor, chain_index: torch.Tensor, tokens: torch.Tensor,
             positions: torch.Tensor) -> torch.Tensor:
        """Tokens [F, 1] at ``positions`` [F, 1], of the beams ``owner`` [F], ``chain_index`` [F] along their chains."""
        self.cache.feed(owner, chain_index, positions[:, 0])
        out = self.scorer.forward(self.cache, input_ids=tokens, position_ids=positions, **{CONTEXT_KWARG: self.cache})
        self.cache.check_step()
        return out


_SEARCH_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its lock
_SEARCH_LOCKS_GUARD = threading.Lock()


def _search_lock(model) -> threading.Lock:
    """One search at a time per model object: a search switches the model's attention
    implementation and its train/eval mode, which a search in another thread would see."""
    with _SEARCH_LOCKS_GUARD:
        lock = _SEARCH_LOCKS.get(model)
        if lock is None:
            lock = _SEARCH_LOCKS[model] = threading.Lock()
        return lock


def _check_inputs(attention_mask, input_ids, inputs_embeds) -> torch.Tensor:
    if (input_ids is None) == (inputs_embeds is None):
        raise ConfigError("give exactly one of input_ids and inputs_embeds")
    prompt = input_ids if input_ids is not None else inputs_embeds
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != tuple(prompt.shape[:2]):
        raise ConfigError(f"attention_mask must be [B, P] = {tuple(prompt.shape[:2])}, "
                          f"got {tuple(attention_mask.shape)}")
    mask = attention_mask.long()
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ConfigError("attention_mask must hold only 0 and 1")
    if not bool((mask[:, 1:] >= mask[:, :-1]).all()) or not bool(mask[:, -1].all()):
        raise ConfigError("prompts must be left-padded (attention_mask 0...0 1...1, every prompt non-empty)")
    return mask


@torch.inference_mode()
def constrained_beam_search(model, trie: TitleTrie, attention_mask: torch.LongTensor, *,
                            input_ids: torch.LongTensor | None = None,
                            inputs_embeds: torch.FloatTensor | None = None,
                            config: BeamSearchConfig = BeamSearchConfig(),
                            cf_logits: torch.Tensor | None = None) -> BeamSearchResult:
    """Top ``config.top_k`` distinct items of each left-padded prompt, by beam search over the trie.

    ``model`` is any Hugging Face causal LM (a peft model too); it is put in eval mode for
    the search and returned to its previous mode afterwards. Exactly one of ``input_ids``
    [B, P] and ``inputs_embeds`` [B, P, D] is the prompt. ``cf_logits`` [B, N] (item columns,
    -inf rules an item out) guide the search when ``config.beta > 0`` and are ignored at 0.
    Searches on one model object from several threads take turns.
    """
    prompt_mask = _check_inputs(attention_mask, input_ids, inputs_embeds)
    guide = None
    if config.beta > 0:
        if cf_logits is None:
            raise ConfigError(f"beta = {config.beta:g} needs the rows' CF logits (cf_logits)")
        if cf_logits.shape[0] != prompt_mask.shape[0]:
            raise ConfigError(f"cf_logits has {cf_logits.shape[0]} rows for {prompt_mask.shape[0]} prompts")
        guide = CFGuide(trie, cf_logits, lookahead=config.cf_lookahead)
    scorer = _NextTokenScorer(model, config)
    if trie.vocab_bound > scorer.vocab_size:
        raise ConfigError(f"the trie holds token ids up to {trie.vocab_bound - 1}, beyond the model's "
                          f"vocabulary of {scorer.vocab_size}: trie and model use different tokenizers")
    device = prompt_mask.device  # the model's; the trie and the search's bookkeeping stay on the CPU
    num_samples = prompt_mask.shape[0]
    prompt_len = prompt_mask.sum(1).cpu()  # [B]
    shared = config.share_prompt_kv and shared_kv_unsupported(model) is None
    kv = _SharedKV(model, scorer, prompt_mask, config.lookahead) if shared else _CopiedKV(model, scorer, prompt_mask)
    lock = _search_lock(model)
    lock.acquire()
    was_training = model.training
    try:
        model.eval()
        prompt = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
        scored = _ScoredTokens(trie, scorer)
        node = torch.full((num_samples,), ROOT, dtype=torch.long)
        # Live beams, grouped by sample; `at`: the scored token of each beam's node.
        at = scored.add(kv.prefill(position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0), **prompt), node,
                        torch.zeros(num_samples, dtype=torch.bool))
        sample = torch.arange(num_samples)
        llm_score = torch.zeros(num_samples, dtype=torch.float64)  # sum of the LLM's token log-probs
        pool = _FinishedPool(num_samples, config.top_k)
        depth = beam_rows = forwards = fed_tokens = 0  # tokens generated so far; beams, forwards, tokens run
        with kv.decoding():
            while True:
                rows, kids = trie.children(node)  # candidates: (beam row, child node) [C]
                cand_sample = sample[rows]
                cand_llm = llm_score[rows] + scored.log_probs(at[rows], kids)
                cand_score = cand_llm
                if guide is not None:
                    cf_part = config.beta * guide.log_bound(cand_sample, kids)  # at a leaf: beta * log p_CF(title)
                    viable = torch.isfinite(cf_part).nonzero().squeeze(1)  # no CF mass below: never entered
                    rows, kids, cand_sample, cand_llm = rows[viable], kids[viable], cand_sample[viable], cand_llm[viable]
                    cand_score = cand_llm + cf_part[viable]
                finished = trie.is_leaf(kids)
                leaf_score = cand_score[finished]
                if config.length_normalize:
                    leaf_score = leaf_score / (depth + 1)  # title tokens + EOS
                pool.add(cand_sample[finished], kids[finished], leaf_score)
                alive = ~finished
                if not config.length_normalize:
                    alive &= cand_score > pool.kth_score()[cand_sample]
                alive = alive.nonzero().squeeze(1)
                best = segment_topk(cand_sample[alive], cand_score[alive], num_samples, config.num_beams)
                keep = alive[best[best >= 0]]  # by sample, then score: grouped by sample
                if keep.numel() == 0:
                    break
                parent = rows[keep]
                sample, node, llm_score = cand_sample[keep], kids[keep], cand_llm[keep]
                depth += 1
                beam_rows += sample.numel()
                kv.select(parent.to(device), sample.to(device))
                # A beam whose token was fed ahead on its parent's chain is scored already; the
                # others feed their token and the forced ones after it.
                at = scored.next[at[parent]]
                new = (at < 0).nonzero().squeeze(1)
                if new.numel():
                    # While a live beam sits where its title branches, the next step runs a forward
                    # anyway: the forced tokens are fed then, for the beams still alive.
                    if kv.lookahead and not bool((trie.num_children[node] > 1).any()):
                        nodes, chain = forced_chains(trie, node[new])
                    else:
                        nodes, chain = node[new], torch.arange(new.numel())
                    owner = new[chain]
                    chain_index = torch.arange(nodes.numel()) - torch.searchsorted(chain, chain)  # 0, 1, ... per chain
                    positions = prompt_len[sample[owner]] + depth - 1 + chain_index  # [F]
                    out = kv.feed(owner.to(device), chain_index.to(device), trie.token[nodes][:, None].to(device),
                                  positions[:, None].to(device))
                    continues = torch.cat([chain[1:] == chain[:-1], torch.zeros(1, dtype=torch.bool)])
                    index = scored.add(out, nodes, continues)
                    at[new] = index[chain_index == 0]
                    forwards += 1
                    fed_tokens += nodes.numel()
        return pool.result(trie, depth, beam_rows, forwards, fed_tokens, shared)
    finally:
        model.train(was_training)
        lock.release()
