"""Micro-batching on a real (tiny) model, in one process: batched rows get the answers they get alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tca4rec.errors import ConfigError, DatasetError
from tca4rec.llm.config import MAX_BETA
from tca4rec.llm.recommend import InputError, Recommender, recommend
from tca4rec.llm.recommend_file import recommend_file
from tca4rec.llm.run import load_llm_run
from tca4rec.serve.batcher import MicroBatcher

HISTORIES = [[1], [5, 9, 12], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51], [299, 3], [120, 7, 88, 250]]


def same_lists(got, expected) -> None:
    """The same items in the same order, scores equal up to float32 kernel differences between batch shapes."""
    assert [r.item_id for r in got] == [r.item_id for r in expected]
    assert [r.title for r in got] == [r.title for r in expected]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def recommender(loaded_teacher_run) -> Recommender:
    return Recommender(loaded_teacher_run, beams=10)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_rows_decoded_together_get_their_answers_alone(recommender, beta):
    together = recommender.decode(HISTORIES, k=10, beta=beta)
    assert len(together) == len(HISTORIES)
    for history, ranked in zip(HISTORIES, together):
        assert len(ranked) == 10
        same_lists(ranked, recommender.decode([history], k=10, beta=beta)[0])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_the_first_k_of_a_wider_search_are_its_top_k(recommender, teacher_run, loaded_teacher_run, synth_dataset, k):
    history = HISTORIES[1]
    wide = recommender.decode([history], k=10, beta=0.0)[0][:k]
    same_lists(wide, recommender.decode([history], k=k, beta=0.0)[0])
    titles = [synth_dataset.titles[i] for i in history]
    same_lists(wide, recommend(teacher_run, titles, k=k, beams=10, run=loaded_teacher_run))


def test_the_batcher_groups_by_beta_and_slices_k(recommender, teacher_run, loaded_teacher_run):
    """Five queued requests, two betas and three k: two decode calls, each row as if decoded alone."""
    batcher = MicroBatcher(recommender.decode, max_batch=8, max_wait_s=0.0)
    asked = [(HISTORIES[0], 2, 0.0), (HISTORIES[1], 10, 1.0), (HISTORIES[2], 5, 0.0), (HISTORIES[3], 1, 1.0),
             (HISTORIES[4], 10, 0.0)]
    futures = [batcher.submit(h, k, beta) for h, k, beta in asked]  # queued before the worker starts: one batch
    batcher.start()
    try:
        for (history, k, beta), future in zip(asked, futures):
            got = future.result(timeout=300)
            assert len(got) == k
            same_lists(got, recommend(teacher_run, history, k=k, beams=10, run=loaded_teacher_run, beta=beta))
    finally:
        batcher.stop()
    assert (batcher.stats.calls, batcher.stats.rows, batcher.stats.largest) == (2, 5, 3)


def test_the_batcher_keeps_to_max_batch_and_skips_cancelled_jobs(recommender):
    batcher = MicroBatcher(recommender.decode, max_batch=2, max_wait_s=0.0)
    futures = [batcher.submit(h, 3, 0.0) for h in HISTORIES]
    assert futures[4].cancel()  # its caller gave up before decoding began: never decoded
    batcher.start()
    batcher.stop()  # decodes what is queued, then ends
    assert all(f.done() for f in futures) and futures[4].cancelled()
    assert [len(f.result()) for f in futures[:4]] == [3, 3, 3, 3]
    assert (batcher.stats.calls, batcher.stats.rows, batcher.stats.largest) == (2, 4, 2)  # the last batch: cancelled
    with pytest.raises(RuntimeError, match="stopping"):
        batcher.submit(HISTORIES[0], 3, 0.0)


def test_a_row_that_breaks_the_model_fails_alone(short_context_run):
    """A history too long for the model's 128 positions fails (refused where the prompts are built; it was
    torch's IndexError); the rows batched with it still get answers."""
    short = Recommender(load_llm_run(short_context_run), beams=4)
    long_history = list(range(1, 11))
    with pytest.raises(ConfigError, match="the model reads at most 128"):
        short.decode([long_history], k=4, beta=0.0)
    batcher = MicroBatcher(short.decode, max_batch=8, max_wait_s=0.0)
    futures = [batcher.submit(h, 4, 0.0) for h in ([3], long_history, [77])]
    batcher.start()
    batcher.stop()
    with pytest.raises(ConfigError, match="the model reads at most 128"):
        futures[1].result()
    same_lists(futures[0].result(), short.decode([[3]], k=4, beta=0.0)[0])
    same_lists(futures[2].result(), short.decode([[77]], k=4, beta=0.0)[0])
    assert batcher.stats.failures == 1 and batcher.stats.calls == 4  # the batch, then each row alone


def test_a_history_too_long_for_the_context_is_bad_input_before_any_decoding(short_context_run, tmp_path):
    """Every path from a given history refuses it as that input's fault: the API and the CLI, and batch
    scoring, which names its row (or, with --skip-bad-rows, lists it and decodes the others)."""
    run = load_llm_run(short_context_run)
    short = Recommender(run, beams=4)
    long_history = list(range(1, 11))
    with pytest.raises(InputError, match="history too long for the model: a prompt of .* at most 128") as e:
        short.item_ids(long_history)
    assert (e.value.field, e.value.value) == ("history", 10)
    assert short.item_ids([3, 4]) == [3, 4]
    with pytest.raises(ConfigError, match="history too long for the model"):
        recommend(short_context_run, long_history, k=4, beams=4, run=run)

    histories = tmp_path / "users.jsonl"
    histories.write_text("".join(json.dumps({"user": u, "history": h}) + "\n"
                                 for u, h in (("a", [3]), ("b", long_history), ("c", [77]))))
    with pytest.raises(DatasetError, match=r"users.jsonl, row 2, field 'history': too long for the model: a prompt"):
        recommend_file(short_context_run, histories, tmp_path / "recs.jsonl", k=4, beams=4)
    assert not (tmp_path / "recs.jsonl").exists()
    summary = recommend_file(short_context_run, histories, tmp_path / "recs.jsonl", k=4, beams=4,
                             skip_bad_rows=tmp_path / "bad.jsonl")
    assert (summary["rows"], summary["bad_rows"]) == (2, 1)
    bad = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [(b["row"], b["field"]) for b in bad] == [(2, "history")] and "at most 128" in bad[0]["error"]
    lines = [json.loads(line) for line in (tmp_path / "recs.jsonl").read_text().splitlines()]
    assert [(r["row"], r["user"]) for r in lines] == [(1, "a"), (3, "c")]
    assert [r["items"] for r in lines] == [[x.item_id for x in short.decode([h], 4, 0.0)[0]] for h in ([3], [77])]


def test_every_accepted_beta_ranks_k_items_with_finite_scores_and_larger_ones_are_refused(
        recommender, teacher_run, loaded_teacher_run):
    """Beta 1e308 used to return one item scored -inf, and 1e300 ten scored NaN (issue 36)."""
    ranked = recommender.decode([HISTORIES[1]], k=10, beta=recommender.resolve_beta(MAX_BETA))[0]
    assert len(ranked) == 10 and all(math.isfinite(r.score) for r in ranked)
    for beta in (MAX_BETA * 1.01, 1e300, 1e308):
        with pytest.raises(InputError, match="beta"):  # the service's 422
            recommender.resolve_beta(beta)
        with pytest.raises(ConfigError, match="beta .*: must be a finite number in \\[0, 10,000,000\\]"):
            recommend(teacher_run, HISTORIES[1], k=10, run=loaded_teacher_run, beta=beta)  # the API and the CLI
