"""Fixtures for the decoder tests: a tiny LM with peaked logits, toy catalogs, and the slow
reference scorer (teacher forcing of every title, one sequence at a time)."""

from __future__ import annotations

import itertools

import pytest
import torch

from tca4rec.bench.decode import next_tokens_by_prefix

TOY_TITLES = [
    "LEGO City Fire Truck",
    "LEGO City Fire Truck 60002",
    "LEGO City",  # its tokens are a prefix of the two above
    "LEGO City Police Car",
    "LEGO Star Wars X-Wing Fighter",
    "LEGO Star Wars TIE Fighter",
    "Melissa & Doug Wooden Puzzle",
    "Melissa & Doug Wooden Puzzle",  # duplicate title: one leaf, the smaller column wins
    "Melissa & Doug Magnetic Dress-Up",
    "Hot Wheels 20 Car Gift Pack",
    "Hot Wheels Track Builder",
    "Hot Wheels",
    "Play-Doh Modeling Compound 10-Pack",
    "Play-Doh Kitchen Creations",
    "Nerf N-Strike Elite Disruptor",
    "Nerf N-Strike Elite",
    "Crayola Washable Markers",
    "Crayola Washable Markers",
    "UNO Card Game",
    "Rubik's Cube",
]

PROMPTS = [
    "### Instruction:\nRecommend the next toy.\n### Input:\nHistory: \"LEGO City Police Car\"\n### Response:\n",
    "History: \"Hot Wheels\", \"UNO Card Game\"\n### Response:\n",
    "### Input:\nUser. History: \"Rubik's Cube\", \"Crayola Washable Markers\", \"Nerf N-Strike Elite\", "
    "\"Play-Doh Kitchen Creations\"\n### Response:\n",
]


@pytest.fixture(scope="session")
def tiny_lm(tiny_llm_dir):
    """The tiny random Llama with its final norm scaled up, so that logits are peaked and
    different titles get clearly different scores (no near-ties to flip on rounding)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_lm_own_attention(tiny_llm_dir):
    """``tiny_lm``'s weights in a class that declares no support for transformers' attention
    interface (as a model with hand-written attention does): the search cannot share prompt KV."""
    from transformers import LlamaForCausalLM

    class OwnAttention(LlamaForCausalLM):
        _supports_attention_backend = False

    model = OwnAttention.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="session")
def toy_title_ids(tokenizer) -> list[list[int]]:
    from tca4rec.llm.prompts import title_token_ids

    return title_token_ids(tokenizer, TOY_TITLES)


@pytest.fixture(scope="session")
def big_title_ids(tokenizer) -> list[list[int]]:
    """36 titles sharing brand and product prefixes (enough for 10 beams to stay full)."""
    from tca4rec.llm.prompts import title_token_ids

    brands = ["LEGO", "Hot Wheels", "Melissa & Doug", "Nerf", "Play-Doh", "Crayola"]
    things = ["Fire Truck", "Race Car", "Puzzle", "Puzzle Set", "Art Kit", "Board Game"]
    return title_token_ids(tokenizer, [f"{b} {t}" for b, t in itertools.product(brands, things)])


@pytest.fixture(scope="session")
def prompt_ids(tokenizer) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]


class TeacherForcing:
    """The slow, obviously-correct reference: for each title, one unpadded forward pass of
    prompt + title + EOS, and the sum of the log-probs of those tokens. Unmasked: log_softmax
    over the whole vocabulary; masked: log_softmax of logits / tau over the dict trie's allowed
    tokens. The per-token pieces are memoized per (model, prompt, catalog), so each test mode
    reuses one set of forward passes."""

    def __init__(self) -> None:
        self._memo: dict[tuple, list[list[tuple[float, torch.Tensor, int]]]] = {}

    @torch.no_grad()
    def _tokens(self, model, prompt_embeds: torch.Tensor, title_ids: list[list[int]], eos: int):
        allowed = next_tokens_by_prefix(title_ids, eos)
        embed = model.get_input_embeddings()
        per_title = []
        for title in title_ids:
            seq = list(title) + [eos]
            embeds = torch.cat([prompt_embeds, embed(torch.tensor(seq))])[None]
            # The logits that predict seq[k] sit at position P - 1 + k: the last len(seq) + 1 but one.
            logits = model(inputs_embeds=embeds, logits_to_keep=len(seq) + 1).logits[0, :-1].double()
            steps = []
            for k, tok in enumerate(seq):
                options = allowed[tuple(seq[:k])]
                steps.append((float(torch.log_softmax(logits[k], 0)[tok]), logits[k, options], options.index(tok)))
            per_title.append(steps)
        return per_title

    def __call__(self, model, prompt_embeds: torch.Tensor, title_ids: list[list[int]], eos: int,
                 masked: bool = False, tau: float = 1.0) -> list[float]:
        # The model itself (not its id, which a later model may reuse) keys the memo.
        key = (model, prompt_embeds.numpy().tobytes(), tuple(map(tuple, title_ids)), eos)
        if key not in self._memo:
            self._memo[key] = self._tokens(model, prompt_embeds, title_ids, eos)
        if not masked:
            return [sum(full for full, _, _ in steps) for steps in self._memo[key]]
        return [sum(float(torch.log_softmax(options / tau, 0)[at]) for _, options, at in steps)
                for steps in self._memo[key]]


@pytest.fixture(scope="session")
def reference_scores():
    return TeacherForcing()
