"""`sentitune serve` over a real socket: uvicorn on a free port of 127.0.0.1 serving the MiniLM LoRA run
trained through the CLI, real IMDb reviews sent with httpx, and the answers compared with the same run's
`Predictor.predict`. Overload and batching are made deterministic by pausing the batch worker (the app's
own hook) while requests queue, never by timing. The HTML page is driven in Debian's chromium."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import assert_one_line_error, chromium, run_cli

from sentitune.data.records import Example
from sentitune.inference import Prediction, Predictor
from sentitune.serve import Batcher, Limits, create_app, running

ROOT = Path(__file__).resolve().parents[1]
SMALL = Limits(max_batch=8, max_wait_ms=5, queue_size=16, max_texts=8, max_chars=3000, max_body_bytes=40_000)


@pytest.fixture(scope="module")
def predictor(minilm_lora_run: tuple[Path, str]) -> Predictor:
    return Predictor(minilm_lora_run[0])


@pytest.fixture(scope="module")
def reviews(imdb_slice: dict[str, list[Example]]) -> list[str]:
    """Twelve real test reviews, both classes, under SMALL.max_chars."""
    short = [e.text for e in imdb_slice["test"] if len(e.text) < 1000]
    return short[:6] + short[-6:]


@contextmanager
def serving(predictor: Predictor, limits: Limits = SMALL) -> Iterator[tuple[str, Batcher]]:
    """The run served on a free loopback port: (base URL, the app's batcher)."""
    app = create_app(predictor.path, limits=limits, predictor=predictor)
    with running(app) as url:
        yield url, app.state.batcher


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[str]:
    with serving(predictor) as (url, _):
        yield url


def post(url: str, body: Any) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=120)


def assert_same(served: dict[str, Any], expected: Prediction) -> None:
    """The API's fields for one text equal Predictor.predict's (1e-5: fp32 in another batch, as predict promises)."""
    assert served["label"] == expected.label
    assert served["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert list(served["probs"]) == list(expected.probs)
    assert served["probs"] == pytest.approx(expected.probs, abs=1e-5)
    assert served["prob_positive"] == pytest.approx(expected.prob_positive, abs=1e-5)
    assert "target" not in served  # a whole-text run: no target field, as in predict --json


def wait_for(url: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /health until `ready(health)`: requests are known to be queued before the test goes on."""
    for _ in range(6000):
        health = httpx.get(f"{url}/health").json()
        if ready(health):
            return health
        time.sleep(0.01)
    raise AssertionError(f"the server never reached the expected state: {health}")


def test_one_review_and_a_batch_equal_the_predictor(server: str, predictor: Predictor, reviews: list[str],
                                                    minilm_lora_run: tuple[Path, str]) -> None:
    single = post(server, {"text": reviews[0]})
    assert single.status_code == 200, single.text
    assert_same(single.json(), predictor.predict([reviews[0]])[0])
    batch = post(server, {"texts": reviews[:5]})
    assert batch.status_code == 200, batch.text
    served = batch.json()["predictions"]
    assert len(served) == 5
    for got, expected in zip(served, predictor.predict(reviews[:5]), strict=True):
        assert_same(got, expected)
    assert {p["label"] for p in served} <= set(predictor.labels)
    # The same fields as `sentitune predict --json` (which also echoes the text; the API does not).
    code, out, err = run_cli(["predict", str(minilm_lora_run[0]), reviews[0], "--json"])
    assert code == 0, err
    cli = json.loads(out.splitlines()[0])
    assert set(cli) - {"text"} == set(single.json())
    for key in ("probability", "prob_positive"):
        assert cli[key] == pytest.approx(single.json()[key], abs=1e-6)  # the CLI rounds to 6 decimals


@pytest.mark.parametrize(("body", "names"), [
    ({"text": ""}, ["text", "at least 1 character"]),
    ({"text": "   "}, ["text", "blank"]),
    ({"text": 5}, ["text", "valid string"]),
    ({"texts": ["a fine film", 3]}, ["texts[1]", "valid string"]),
    ({"texts": "a fine film"}, ["texts", "valid list"]),
    ({"texts": []}, ["texts", "at least 1 item"]),
    ({"texts": ["a fine film", " "]}, ["texts", "item 1"]),
    ({"txt": "a fine film"}, ["txt", "Extra inputs"]),
    ({}, ["body: give text (one review) or texts"]),
    ({"text": "a", "texts": ["b"]}, ["text or texts, not both"]),
    ({"texts": ["a", "b"], "targets": ["x"]}, ["targets has 1 items for 2 texts"]),
    ({"text": "a fine film", "target": "film"}, ["target", "not trained with targets"]),
    ([1, 2], ["body", "dictionary"]),
])
def test_wrong_requests_are_422_naming_the_field(server: str, body: Any, names: list[str]) -> None:
    r = post(server, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "\n" not in error
    for name in names:
        assert name in error, error


def test_malformed_json_and_a_missing_body(server: str) -> None:
    for raw, expect in [(b'{"text": "a fine film"', "malformed JSON at character"),
                        (b"{text: 1}", "malformed JSON at character 1"), (b"", "JSON object with text or texts")]:
        r = httpx.post(f"{server}/predict", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert expect in r.json()["error"]


def test_a_text_the_run_cannot_classify_is_422_with_the_predictors_message(server: str) -> None:
    """Valid JSON whose review is empty once cleaned: Predictor's DataError, as `sentitune predict` says it."""
    r = post(server, {"texts": ["A fine film.", "<br /><br />"]})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "review 2: empty review"


def test_limits_are_413_naming_the_limit(server: str, reviews: list[str]) -> None:
    r = post(server, {"texts": reviews[:1] * (SMALL.max_texts + 1)})
    assert r.status_code == 413 and "--max-texts" in r.json()["error"] and "9 texts" in r.json()["error"]
    r = post(server, {"texts": ["A fine film.", "x" * (SMALL.max_chars + 1)]})
    assert r.status_code == 413 and r.json()["error"].startswith("texts[1]: 3,001 characters, over --max-chars")
    big = json.dumps({"text": "x" * SMALL.max_body_bytes}).encode()
    r = httpx.post(f"{server}/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts the bytes as they arrive
        yield b'{"text": "'
        for _ in range(SMALL.max_body_bytes // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    r = httpx.post(f"{server}/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]
    assert post(server, {"text": reviews[0]}).status_code == 200  # the server is fine afterwards


def test_concurrent_clients_share_one_batch(predictor: Predictor, reviews: list[str]) -> None:
    """Six clients at once (paused worker, so all six are queued first): one Predictor call for all of
    them, and each client gets exactly its own review's prediction."""
    texts = reviews[:6]
    with serving(predictor) as (url, batcher):
        batcher.pause()
        try:
            with ThreadPoolExecutor(len(texts)) as pool:
                futures = [pool.submit(post, url, {"text": t}) for t in texts]
                queued = wait_for(url, lambda h: h["queued_requests"] == len(texts))
                assert queued["batches"] == 0 and queued["paused"]
                batcher.resume()
                responses = [f.result() for f in futures]
        finally:
            batcher.resume()
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        for r, expected in zip(responses, predictor.predict(texts), strict=True):
            assert_same(r.json(), expected)
        health = httpx.get(f"{url}/health").json()
        assert (health["batches"], health["largest_batch"], health["texts"]) == (1, len(texts), len(texts))
        assert health["mean_batch"] == len(texts) and health["requests"] == len(texts)

        # Unpaused, more clients than max_batch, several requests each: every answer is still the right one.
        jobs = [reviews[i % len(reviews)] for i in range(24)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: post(url, {"text": t}), jobs))
        expected = dict(zip(reviews, predictor.predict(reviews), strict=True))
        for text, r in zip(jobs, answers, strict=True):
            assert r.status_code == 200, r.text
            assert_same(r.json(), expected[text])
        after = httpx.get(f"{url}/health").json()
        assert after["texts"] == len(texts) + len(jobs) and after["largest_batch"] <= SMALL.max_batch


def test_a_bad_request_fails_alone_in_a_shared_batch(predictor: Predictor, reviews: list[str]) -> None:
    with serving(predictor) as (url, batcher):
        batcher.pause()
        try:
            with ThreadPoolExecutor(2) as pool:
                bad = pool.submit(post, url, {"text": "<br />"})
                good = pool.submit(post, url, {"texts": reviews[:2]})
                wait_for(url, lambda h: h["queued_requests"] == 2)
                batcher.resume()
                bad_r, good_r = bad.result(), good.result()
        finally:
            batcher.resume()
    assert bad_r.status_code == 422 and bad_r.json()["error"] == "review 1: empty review"
    assert good_r.status_code == 200
    for got, expected in zip(good_r.json()["predictions"], predictor.predict(reviews[:2]), strict=True):
        assert_same(got, expected)


def test_a_full_queue_is_503_with_retry_after(predictor: Predictor, reviews: list[str]) -> None:
    tiny = Limits(max_batch=2, max_wait_ms=0, queue_size=3, max_texts=2, max_chars=3000)
    with serving(predictor, tiny) as (url, batcher):
        batcher.pause()
        try:
            with ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(post, url, {"texts": reviews[:2]}), pool.submit(post, url, {"text": reviews[2]})]
                wait_for(url, lambda h: h["queued_texts"] == 3)
                full = post(url, {"text": reviews[3]})
                batcher.resume()
                queued = [f.result() for f in waiting]
        finally:
            batcher.resume()
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1"
        assert "queue is full" in full.json()["error"] and "--queue-size 3" in full.json()["error"]
        assert [r.status_code for r in queued] == [200, 200]  # the queued requests were still answered
        health = httpx.get(f"{url}/health").json()
        assert health["rejected"] == 1 and health["requests"] == 2
        assert post(url, {"text": reviews[3]}).status_code == 200  # room again


def test_health_metadata_and_openapi(server: str, predictor: Predictor) -> None:
    health = httpx.get(f"{server}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    meta = httpx.get(f"{server}/metadata").json()
    cfg = predictor.cfg
    assert meta["run"] == cfg.name == "cli-test" and meta["method"] == "lora"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # the hub id, not the packaged name
    assert meta["labels"] == predictor.labels and meta["max_length"] == cfg.data.max_length
    assert meta["windows"] == cfg.data.windows == 1
    assert meta["needs_target"] is False and meta["precision"] == "fp32"
    assert meta["limits"]["max_batch"] == SMALL.max_batch and meta["limits"]["max_texts"] == SMALL.max_texts
    spec = httpx.get(f"{server}/openapi.json").json()
    assert {"/predict", "/health", "/metadata"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"PredictRequest", "PredictionOut", "PredictionsOut", "ErrorOut", "MetadataOut"} <= set(schemas)
    assert {"text", "texts", "target", "targets"} == set(schemas["PredictRequest"]["properties"])
    assert {"413", "422", "503"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_the_page_classifies_a_review_in_a_browser(server: str, predictor: Predictor, reviews: list[str]) -> None:
    page_html = httpx.get(f"{server}/").text
    assert "<textarea" in page_html and "http" not in page_html.split("<script>")[1]  # nothing from a CDN
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{server}/")
            page.fill("#text", reviews[-1])
            page.click("#classify")
            page.wait_for_function("document.getElementById('label').textContent.length > 0")
            label = page.text_content("#label")
            rows = page.locator("#probs tr").count()
            page.fill("#text", "<br />")  # an error is shown, not a label
            page.click("#classify")
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            error = page.text_content("#error")
        finally:
            browser.close()
    assert label == predictor.predict([reviews[-1]])[0].label
    assert rows == len(predictor.labels)
    assert error == "review 1: empty review"


# ------------------------------------------------------------------------------------------ the command


def test_the_command_serves_until_interrupted(minilm_lora_run: tuple[Path, str], predictor: Predictor,
                                              reviews: list[str]) -> None:
    """`sentitune serve RUN --port 0` in its own process: it prints where it listens, answers, and Ctrl-C
    stops it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &`) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler in the child, so restore the default for it.
    proc = subprocess.Popen([sys.executable, "-m", "sentitune.cli", "serve", str(minilm_lora_run[0]), "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith(f"serving {minilm_lora_run[0]} at http://127.0.0.1:"), (line, proc.stderr)
        url = line.split(" at ")[1].split()[0]
        assert httpx.get(f"{url}/health", timeout=120).json()["status"] == "ok"
        r = post(url, {"text": reviews[0]})
        assert r.status_code == 200
        assert_same(r.json(), predictor.predict([reviews[0]])[0])
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_command_errors_are_one_line(tmp_path: Path, minilm_lora_run: tuple[Path, str]) -> None:
    code, _, err = run_cli(["serve", str(minilm_lora_run[0]), "--max-batch", "0"])
    assert_one_line_error(code, err, ["--max-batch must be positive, got 0"])
    code, _, err = run_cli(["serve", str(minilm_lora_run[0]), "--max-wait-ms", "-1"])
    assert_one_line_error(code, err, ["--max-wait-ms must be 0 or more, got -1"])
    code, _, err = run_cli(["serve", str(minilm_lora_run[0]), "--port", "70000"])
    assert_one_line_error(code, err, ["--port 70000: not a port number"])
    code, _, err = run_cli(["serve", str(minilm_lora_run[0]), "--max-texts", "100", "--queue-size", "50"])
    assert_one_line_error(code, err, ["--max-texts (100)", "--queue-size (50)"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(["serve", str(minilm_lora_run[0]), "--port", str(port)])
    assert_one_line_error(code, err, [f"127.0.0.1:{port}: cannot listen there", "--port"])
    code, _, err = run_cli(["serve", str(tmp_path / "no-such-run"), "--port", "0"])
    assert_one_line_error(code, err, ["no-such-run"])
