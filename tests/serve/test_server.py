"""Real ``tca4rec serve`` processes on 127.0.0.1 called over HTTP: answers, bad input, failures, load, SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from tca4rec.cli import main
from tca4rec.llm.recommend import recommend

from .conftest import running_server


def post(server, body, **kwargs) -> httpx.Response:
    with server.client() as client:
        return client.post("/v1/recommend", json=body, **kwargs)


def assert_same(response_items: list[dict], expected) -> None:
    assert [i["id"] for i in response_items] == [r.item_id for r in expected]
    assert [i["title"] for i in response_items] == [r.title for r in expected]
    np.testing.assert_allclose([i["score"] for i in response_items], [r.score for r in expected], rtol=1e-5, atol=1e-4)


def concurrently(calls) -> list:
    """Run the callables at once (released together by a barrier); their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001 - returned, and checked by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture(scope="module")
def short_server(short_context_run, tmp_path_factory):
    """The GPT-2 run with a 128-token context and no CF model; a lone request waits 1 s for company."""
    with running_server(short_context_run, tmp_path_factory.mktemp("short") / "serve.log", "--beams", "4",
                        "--max-wait-ms", "1000") as server:
        yield server


def test_health_info_and_docs(teacher_server, teacher_run, serve_cf_run):
    with teacher_server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok", "in_flight": 0}
        info = client.get("/v1/info").json()
        assert client.get("/docs").status_code == 200
        assert "/v1/recommend" in client.get("/openapi.json").json()["paths"]
    assert info["model"] == "tallrec+tca(alpha=0.1)" and info["host"] == "tallrec" and info["dtype"] == "float32"
    assert info["items"] == 300 and info["teacher"] == str(serve_cf_run) and info["beta"] == 0.0
    assert (info["beams"], info["max_batch"], info["max_history"], info["history_width"]) == (10, 8, 20, 10)


@pytest.mark.parametrize("history,k,beta", [
    ("titles", 10, None), ("ids", 3, None), ("mixed", 1, None), ("titles", 5, 1.0), ("ids", 10, 2.5)])
def test_answers_are_recommends(teacher_server, teacher_run, loaded_teacher_run, synth_dataset, history, k, beta):
    ids = [4, 18, 33, 150]
    given = {"titles": [synth_dataset.titles[i] for i in ids], "ids": ids,
             "mixed": [synth_dataset.titles[4], 18, synth_dataset.titles[33], 150]}[history]
    response = post(teacher_server, {"history": given, "k": k, "beta": beta})
    assert response.status_code == 200, response.text
    body = response.json()
    read = [int(synth_dataset.title_group[i]) if isinstance(e, str) else i for i, e in zip(ids, given)]
    assert (body["k"], body["beta"], body["beams"], body["history"]) == (k, beta or 0.0, 10, read)
    expected = recommend(teacher_run, given, k=k, beams=10, run=loaded_teacher_run, beta=beta or 0.0)
    assert len(body["items"]) == k
    assert_same(body["items"], expected)


def test_concurrent_requests_are_batched_and_answered_as_alone(teacher_server, teacher_run, loaded_teacher_run):
    requests = [{"history": [h, h + 1, h + 2], "k": 3 + h % 8, "beta": [None, 1.0][h % 2]} for h in range(1, 13)]
    with teacher_server.client() as client:
        calls_before = client.get("/v1/info").json()["stats"]["calls"]
    responses = concurrently([lambda body=body: post(teacher_server, body) for body in requests])
    for body, response in zip(requests, responses):
        assert response.status_code == 200, response
        expected = recommend(teacher_run, body["history"], k=body["k"], beams=10, run=loaded_teacher_run,
                             beta=body["beta"] or 0.0)
        assert_same(response.json()["items"], expected)
    with teacher_server.client() as client:
        stats = client.get("/v1/info").json()["stats"]
    assert stats["largest"] >= 2 and stats["calls"] - calls_before < len(requests)  # rows shared decode calls
    assert stats["in_flight"] == 0 and stats["waiting"] == 0


TITLE = "Nonexistent Toy 3000"
BAD_REQUESTS = [  # (id, body or raw bytes, status, field, value)
    ("unknown title", {"history": [1, TITLE]}, 422, "history[1]", TITLE),
    ("unknown item id", {"history": [99999]}, 422, "history[0]", 99999),
    ("item id 0", {"history": [0]}, 422, "history[0]", 0),
    ("neither title nor id", {"history": [1, 2.5]}, 422, "history[1]", 2.5),
    ("boolean entry", {"history": [True]}, 422, "history[0]", True),
    ("empty history", {"history": []}, 422, "history", []),
    ("over-long history", {"history": list(range(1, 22))}, 422, "history", 21),
    ("history not a list", {"history": "Uno"}, 422, "history", "Uno"),
    ("no history", {"k": 3}, 422, "history", None),
    ("k 0", {"history": [1], "k": 0}, 422, "k", 0),
    ("k above beams", {"history": [1], "k": 11}, 422, "k", 11),
    ("k a string", {"history": [1], "k": "3"}, 422, "k", "3"),
    ("negative beta", {"history": [1], "beta": -1}, 422, "beta", -1.0),
    ("beta not a number", {"history": [1], "beta": "much"}, 422, "beta", "much"),
    ("beta a numeric string", {"history": [1], "beta": "1"}, 422, "beta", "1"),  # as strict as k
    ("beta a boolean", {"history": [1], "beta": True}, 422, "beta", True),
    ("beta auto", {"history": [1], "beta": "auto"}, 422, "beta", "auto"),  # the server's default may be; a request not
    ("beta above the bound", {"history": [1], "beta": 1e308}, 422, "beta", 1e308),
    ("beta NaN", b'{"history": [1], "beta": NaN}', 422, "beta", "nan"),  # JSON cannot carry it back: text
    ("beta Infinity", b'{"history": [1], "beta": Infinity}', 422, "beta", "inf"),
    ("beta -Infinity", b'{"history": [1], "beta": -Infinity}', 422, "beta", "-inf"),
    ("beta 1e999", b'{"history": [1], "beta": 1e999}', 422, "beta", "inf"),
    ("a lone surrogate in a title", b'{"history": ["\\ud800abc"]}', 422, "history[0]", "\\ud800abc"),
    ("unknown field", {"history": [1], "user": 7}, 422, "user", 7),
    ("a list, not an object", [1, 2], 422, "body", [1, 2]),
    ("malformed JSON", b'{"history": [1, }', 400, "body", '{"history": [1, }'),
    ("nested too deeply", b'{"history": ' + b"[" * 1500 + b"]" * 1500 + b"}", 400, "body", None),
    ("body over 4096 bytes", {"history": ["x" * 5000]}, 413, "body", None),
]


def test_every_request_counts_once_and_a_refused_one_is_also_an_error(teacher_server):
    """Requests FastAPI refused before the handler counted as errors only (49 errors of 45 requests)."""
    with teacher_server.client() as client:
        before = client.get("/v1/info").json()["stats"]
        for body in ({"history": [1], "k": "3"}, {"history": [99999]}, {"history": [1], "k": 2}):
            client.post("/v1/recommend", json=body)
        after = client.get("/v1/info").json()["stats"]
    assert (after["requests"] - before["requests"], after["errors"] - before["errors"]) == (3, 2)


@pytest.mark.parametrize("name,body,status,field,value", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_input_is_a_4xx_naming_field_and_value(teacher_server, name, body, status, field, value):
    with teacher_server.client() as client:
        if isinstance(body, bytes):
            response = client.post("/v1/recommend", content=body, headers={"content-type": "application/json"})
        else:
            response = client.post("/v1/recommend", json=body)
        assert response.status_code == status, response.text
        error = response.json()
        assert error["field"] == field and "\n" not in error["error"] and "Traceback" not in response.text
        if value is not None:
            assert error["value"] == value
        if field.startswith("history["):
            assert field in error["error"]
        if name == "unknown title":
            assert repr(TITLE) in error["error"]
        if field == "beta":  # a request's beta is a number: an error offering "auto" was wrong
            assert "or 'auto'" not in error["error"], error["error"]
        assert client.post("/v1/recommend", json={"history": [1], "k": 2}).status_code == 200  # still serving
    assert teacher_server.proc.poll() is None


def test_streamed_body_over_the_limit_is_413(teacher_server):
    chunks = [b'{"history": ["', b"y" * 3000, b"y" * 3000, b'"]}']
    with teacher_server.client() as client:
        response = client.post("/v1/recommend", content=iter(chunks), headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json()["field"] == "body"
        assert client.get("/healthz").status_code == 200


def test_form_encoded_body_is_a_400_that_says_what_to_send(teacher_server):
    with teacher_server.client() as client:
        response = client.post("/v1/recommend", content=b'{"history": [1]}',
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and "Content-Type: application/json" in response.json()["error"]


def test_beta_without_a_cf_model_is_a_422(short_server):
    response = post(short_server, {"history": [3], "k": 2, "beta": 0.5})
    assert response.status_code == 422
    assert response.json()["field"] == "beta" and "CF model" in response.json()["error"]


def test_a_history_too_long_for_the_models_context_is_a_422_and_the_server_goes_on(short_server):
    """It was a 500 ("decoding failed"), raised deep in the decoding: a client's mistake counted as the server's."""
    too_long = list(range(1, 11))  # a prompt past the model's 128 positions
    response = post(short_server, {"history": too_long, "k": 2})
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["field"], body["value"]) == ("history", 10)
    assert body["error"].startswith("history too long for the model: a prompt of") and "reads at most 128" in body["error"]
    assert "\n" not in body["error"]

    # Sent together with two good requests: those get their own answers.
    alone = [post(short_server, {"history": [h], "k": 4}).json()["items"] for h in (5, 6)]
    responses = concurrently([lambda: post(short_server, {"history": [5], "k": 4}),
                              lambda: post(short_server, {"history": too_long, "k": 4}),
                              lambda: post(short_server, {"history": [6], "k": 4})])
    assert [r.status_code for r in responses] == [200, 422, 200]
    assert [responses[0].json()["items"], responses[2].json()["items"]] == alone
    assert post(short_server, {"history": [7], "k": 4}).status_code == 200


def test_bench_serve_reports_throughput_and_latency(teacher_server, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "serve", teacher_server.url, "--requests", "6", "--concurrency", "3", "--k", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["sent"], result["ok"], result["errors"], result["concurrency"]) == (6, 6, 0, 3)
    assert result["throughput_rps"] > 0 and 0 < result["latency_p50_s"] <= result["latency_p99_s"]
    assert result["server_decode_calls"] >= 1 and result["history_len"] == 10
    assert "requests/s" in capsys.readouterr().out


def test_bench_serve_refuses_other_machines(capsys):
    assert main(["bench", "serve", "http://192.0.2.1:8000", "--requests", "1"]) == 2
    assert "on this machine" in capsys.readouterr().err


def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(short_server):
    """Ends the module's short server, so it comes last (pytest runs a file's tests in order)."""
    bodies = [{"history": [h], "k": 4} for h in (10, 11, 12)]
    answers: list = [None] * len(bodies)

    def send(i):
        answers[i] = post(short_server, bodies[i])

    with short_server.client() as client:
        before = client.get("/v1/info").json()["stats"]["requests"]
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # a bound on a broken server, not a timing assertion
    with short_server.client() as client:
        # All three must have reached the server before the signal (a request still connecting
        # when it comes is a new one, and is refused); they wait up to --max-wait-ms for a batch.
        while client.get("/v1/info").json()["stats"]["requests"] - before < len(bodies):
            assert time.monotonic() < deadline, "the requests never reached the server"
            time.sleep(0.01)
    short_server.proc.send_signal(signal.SIGTERM)
    try:
        late = post(short_server, {"history": [13], "k": 4}).status_code
    except httpx.HTTPError as e:  # the port is closed: refused
        late = type(e).__name__
    for t in threads:
        t.join()
    assert late != 200, "a request sent after SIGTERM was served"
    assert all(a is not None and a.status_code == 200 and len(a.json()["items"]) == 4 for a in answers)
    assert short_server.proc.wait(timeout=120) == 0
    log = short_server.log_text()
    assert "SIGTERM: draining" in log and "stopped after" in log
