"""The app in one process (FastAPI's TestClient) over a real tiny model whose decoding fails as a
model can (out of memory) for some rows: the failure is that request's one-line 500, and only its.

Input the model cannot take never gets this far (it is a 422, see test_server.py), so the
failure is injected: the real decoding, raising for histories that hold ``FAILING_ITEM``.
"""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient

from tca4rec.llm.recommend import Recommender
from tca4rec.llm.run import load_llm_run
from tca4rec.serve.app import create_app, decode_modes
from tca4rec.serve.batcher import MicroBatcher

FAILING_ITEM = 13
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB\nGPU 0 has a total capacity of 79.1 GiB"


@pytest.fixture(scope="module")
def short(short_context_run) -> Recommender:
    return Recommender(load_llm_run(short_context_run), beams=4)


def out_of_memory_for_some(recommender: Recommender):
    decode = decode_modes(recommender, None)

    def failing(histories, k, mode):
        if any(FAILING_ITEM in h for h in histories):
            raise RuntimeError(OOM)
        return decode(histories, k, mode)
    return failing


def test_a_model_failure_is_a_one_line_500_only_for_its_request(short, caplog):
    batcher = MicroBatcher(out_of_memory_for_some(short), max_batch=8, max_wait_s=0.5)
    app = create_app(short, batcher, {"model": "short", "version": "0"})
    with TestClient(app) as client, caplog.at_level(logging.WARNING, logger="tca4rec.serve"):
        response = client.post("/v1/recommend", json={"history": [FAILING_ITEM], "k": 2})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error == "decoding failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
        assert "Traceback" not in response.text
        logged = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert logged and logged[-1].exc_info is not None  # the operator gets the traceback, the client does not

        # Gathered into one batch with two good requests: the batch fails, each row is decoded alone, and
        # only the failing one is a 500; the others get the answers they get alone.
        alone = {h: [r.item_id for r in short.decode([[h]], 4, 0.0)[0]] for h in (5, 6)}
        answers: dict = {}

        def send(h):
            answers[h] = client.post("/v1/recommend", json={"history": [h], "k": 4})

        threads = [threading.Thread(target=send, args=(h,)) for h in (5, FAILING_ITEM, 6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {h: r.status_code for h, r in answers.items()} == {5: 200, FAILING_ITEM: 500, 6: 200}
        assert {h: [i["id"] for i in answers[h].json()["items"]] for h in (5, 6)} == alone
        assert batcher.stats.largest == 3  # they were one batch
        stats = client.get("/v1/info").json()["stats"]
        assert (stats["requests"], stats["errors"], stats["failures"]) == (4, 2, 2)
        assert client.post("/v1/recommend", json={"history": [7], "k": 4}).status_code == 200
