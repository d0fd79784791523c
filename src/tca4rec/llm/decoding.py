"""Decode a split's rows with a built host: prompts -> trie-constrained beam search -> top-k item ids.

This is the one place where a host, its ``Signals`` and the beam search meet, so that the
trainer's model selection, ``evaluate_llm_run``, tune-beta and ``recommend`` all call down
to it: dependencies run evaluate -> llm.decoding -> llm.run -> llm.weights, never back.

CF-guided decoding (``beta > 0``): the search adds beta * log q(v | node) from the rows'
CF logits, taken from ``cf_model`` or else the run's own teacher (``signals.cf``), and
scores a partial beam by its subtree's CF share or, with ``cf_lookahead="max"``, by its most
probable title. A ranked title that several items share names the item that the ranking's
CF model (the guide, else the teacher; without one, train popularity) scores highest
(``choose_items``). The helpers below resolve the CLI/API options shared by evaluate,
recommend and tune-beta: a beta value or "auto" (the one tuned for that lookahead,
``tuned_beta_file`` in the run folder), and the CF run that guides.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD
from tca4rec.cf import load_cf_run
from tca4rec.cf.base import CFModel
from tca4rec.cf.run import cf_fingerprint
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.errors import ConfigError, RunError
from tca4rec.llm.config import MAX_BETA, check_beta
from tca4rec.llm.run import process_state
from tca4rec.validate import loads_json

TUNED_BETA_FILE = "beta_tuning.json"  # written by ``tune_beta``: the grid's table and the chosen beta
TEACHER = "teacher"  # the CF run a run was trained with (its config's ``cf``)


def evaluate_rows(host, signals, split, *, beams: int, k: int, batch_size: int, device=None,
                  desc: str = "beam search", beta: float = 0.0, length_normalize: bool = False,
                  cf_model: torch.nn.Module | None = None, progress: tqdm | bool = True,
                  cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items of every row of ``split`` by constrained beam search.

    ``progress``: a caller's bar (spanning several calls) that rows advance; True: a bar of this
    call's own (``desc``) that goes away when done; False: none.

    Returns (item ids int64 [R, k], 0 where fewer than k items were found; scores float32
    [R, k], sums of token scores, -inf where empty). Every process of a distributed
    launch must call this; each decodes its share of the rows and all get the full result.
    """
    state = process_state()
    device = torch.device(device if device is not None else next(host.parameters()).device)
    # On a GPU decode in bf16 like training (the Trainer's bf16 autocast); on the CPU in float32.
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    search = BeamSearchConfig(num_beams=beams, top_k=k, masked=host.host_config.masked, tau=host.host_config.softmax_tau,
                              beta=beta, length_normalize=length_normalize, cf_lookahead=cf_lookahead)
    guide_model = (cf_model if cf_model is not None else signals.cf) if search.beta > 0 else None
    if search.beta > 0 and guide_model is None:
        raise ConfigError(f"beta {beta:g} needs a CF run: this run has no CF teacher, so name one (--cf-run)")
    users = torch.tensor(split.users)
    histories = torch.tensor(split.histories)
    items = np.zeros((len(split), k), dtype=np.int64)
    scores = np.full((len(split), k), -np.inf, dtype=np.float32)
    was_training = host.training
    host.eval()
    shard: list[tuple[int, list[int], list[float]]] = []
    with state.split_between_processes(list(range(len(split)))) as my_rows:
        own_bar = not isinstance(progress, tqdm)
        if own_bar:
            progress = tqdm(total=len(my_rows), desc=desc, unit="row", leave=False,
                            disable=not (progress and state.is_local_main_process))
        for start in range(0, len(my_rows), batch_size):
            rows = torch.tensor(my_rows[start:start + batch_size], dtype=torch.long)
            prompt = host.prompts(histories[rows]).to(device)
            history_cf = user_cf = None
            if host.host_config.uses_cf_embeddings:
                history_cf, user_cf = signals.cf_embeddings(users[rows], histories[rows])
            # The CF model of this ranking also picks the item among same-title items (title_items.py).
            chooser = guide_model if guide_model is not None else signals.cf
            chooser_logits = item_logits(chooser, users[rows], histories[rows]) if chooser is not None else None
            cf_logits = chooser_logits if guide_model is not None else None
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                inputs = host.decode_inputs(prompt, history_cf, user_cf)
                result = constrained_beam_search(host.llm, signals.trie, prompt.attention_mask, config=search,
                                                 cf_logits=cf_logits, **inputs)
            ids = torch.where(result.items >= 0, result.items + 1, 0).cpu().numpy()  # column -> item id
            ids = choose_items(signals.dataset, ids, chooser_logits)
            shard += [(int(r), i.tolist(), s.tolist()) for r, i, s in zip(rows, ids, result.scores.cpu())]
            progress.update(len(rows) * state.num_processes)
        if own_bar:
            progress.close()
    host.train(was_training)
    gathered = gather_object(shard) if state.num_processes > 1 else shard
    for row, ids, row_scores in gathered:
        items[row], scores[row] = ids, row_scores
    return items, scores


@torch.no_grad()
def item_logits(cf_model: CFModel, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """A CF model's float32 logits over item columns [B, N] (the padding column 0 dropped), on the CPU."""
    device = cf_model.device
    return cf_model(users.to(device), histories.to(device))[:, 1:].float().cpu()


def choose_items(dataset, items: np.ndarray, cf_logits: torch.Tensor | None) -> np.ndarray:
    """The item each ranked title names (``data/title_items.py``): the best by ``cf_logits``
    [R, N] (item columns), else the most popular in the train rows."""
    if cf_logits is None:
        return dataset.same_title_items.choose(items, dataset.train_popularity)
    by_id = np.concatenate([np.full((len(items), 1), -np.inf), cf_logits.double().numpy()], axis=1)  # [R, N + 1]
    return dataset.same_title_items.choose(items, by_id)


def parse_beta(value: float | str, auto_too: bool = True) -> float:
    """A CF weight from the command line (text) or the API (a number): ``check_beta``'s rule.
    ``auto_too``: the caller also takes "auto" (handled before this), so the error offers it."""
    try:
        return check_beta(float(value) if isinstance(value, str) else value)
    except ValueError:  # float() of a word, or check_beta's ConfigError
        raise ConfigError(f"--beta {value!r}: must be a finite number in [0, {MAX_BETA:,.0f}]"
                          + (" or 'auto'" if auto_too else "")) from None


def guide_cf_model(run, cf_run: str | Path | None):
    """The CF model whose logits guide decoding: ``cf_run``'s, or the run's own teacher (or None)."""
    if cf_run is None or str(cf_run) == TEACHER:
        return run.cf

    model = load_cf_run(cf_run, run.dataset)
    if model.num_items != run.dataset.num_items:
        raise RunError(f"--cf-run {cf_run} scores {model.num_items} items, the dataset has {run.dataset.num_items}")
    return model.requires_grad_(False).eval()


def tuned_beta_file(cf_lookahead: str) -> str:
    """Where ``tune_beta`` stores its choice: a beta is tuned for one lookahead, so each has its file."""
    return TUNED_BETA_FILE if cf_lookahead == "sum" else f"beta_tuning_{cf_lookahead}.json"


def read_tuned_beta(run_dir: Path, cf_run: str | Path | None, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> float:
    """The beta ``tune_beta`` chose for this run, if it was tuned with this lookahead and this CF
    run (the run's teacher when ``cf_run`` is None, else the same model, by content)."""
    path = run_dir / tuned_beta_file(cf_lookahead)
    if not path.is_file():
        raise ConfigError(f"--beta auto: {path} does not exist; choose beta first with "
                          f"`tca4rec tune-beta --run {run_dir} --cf-lookahead {cf_lookahead}`")
    try:
        record = loads_json(path.read_text(encoding="utf-8"))
        best, tuned_with = check_beta(record["best_beta"]), str(record["cf_run"])
        tuned_lookahead = str(record.get("cf_lookahead", "sum"))  # records from before the option: sum
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} is not a tune-beta result ({e})") from None
    if tuned_lookahead != cf_lookahead:
        raise ConfigError(f"--beta auto: {path} was tuned with --cf-lookahead {tuned_lookahead}, not {cf_lookahead}")
    if record.get("split", "valid") != "valid":  # written before tune-beta refused other splits
        raise ConfigError(f"--beta auto: {path} was tuned on {record['split']} rows, not valid ones: tune again "
                          f"with `tca4rec tune-beta --run {run_dir} --cf-lookahead {cf_lookahead}`")
    if cf_run is None or str(cf_run) == TEACHER:
        if tuned_with != TEACHER:
            raise ConfigError(f"--beta auto: {path} was tuned with --cf-run {tuned_with}, not the run's own teacher")
        return best
    if tuned_with == TEACHER:
        raise ConfigError(f"--beta auto: {path} was tuned with the run's own teacher, not --cf-run {cf_run}")
    # The CF run is known by its content: the same model under another path is accepted, another
    # model under the same path is not (records without a fingerprint fall back to the path).
    fingerprint = record.get("cf_fingerprint")
    same = fingerprint == cf_fingerprint(cf_run) if fingerprint else tuned_with == str(cf_run)
    if not same:
        raise ConfigError(f"--beta auto: {path} was tuned with another CF model than {cf_run} (--cf-run "
                          f"{tuned_with} then): tune beta again with this one")
    return best
