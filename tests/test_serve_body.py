"""What reaches `sentitune serve` as a body (sentitune.serve.body): one that is not UTF-8, or JSON nested 100,000 deep,
is a 422 with the one-line `malformed JSON at character N: ...` error that docs/SERVING.md promises (FastAPI said
400 "There was an error parsing the body"), and the server goes on answering. Served over real HTTP: a tiny full
fine-tune of the packaged `gpt2-tiny-random` (conftest `full_gpt2_run`), so a 10,000-character text is no limit's
concern (tests/test_serve.py serves the MiniLM run with small limits).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="module")
def run(full_gpt2_run: Path) -> Path:
    return full_gpt2_run


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[str]:
    from sentitune.serve import create_app, running

    with running(create_app(run)) as url:
        yield url


def post_raw(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize(("body", "at"), [
    (b"\xff\xff", 0),
    (b'{"text": "\xff\xfe"}', 10),
    ('{"text": "caf\u00e9 \u2014 '.encode() + b'\xe9t\xe9"}', 17),  # characters, not bytes: \u00e9 and \u2014 before
])
def test_a_body_that_is_not_utf8_is_422_naming_where(server: str, body: bytes, at: int) -> None:
    r = post_raw(server, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith(f"malformed JSON at character {at}: not UTF-8 text"), error
    assert "\n" not in error
    assert post_raw(server, b'{"text": "A fine film."}').status_code == 200  # the server is fine afterwards


def test_json_nested_100000_deep_is_422_naming_where(server: str) -> None:
    from sentitune.serve import MAX_JSON_DEPTH

    deep = 100_000
    in_text = '{"texts": ["[[[[", "' + "{" * deep + '"], "x": '  # brackets in strings do not count
    for body, at in [("[" * deep + "]" * deep, MAX_JSON_DEPTH),  # the bracket one level too deep
                     ('{"text": ' + "[" * deep + "]" * deep + "}", len('{"text": ') + MAX_JSON_DEPTH - 1),
                     (in_text + "[" * deep, len(in_text) + MAX_JSON_DEPTH - 1)]:
        r = post_raw(server, body.encode())
        assert r.status_code == 422, r.text[:300]
        error = r.json()["error"]
        assert error == f"malformed JSON at character {at}: nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    # Brackets inside strings are text, and shallow nesting is an ordinary field error, not "too deep".
    r = post_raw(server, json.dumps({"text": "[" * 5000 + "{" * 5000}).encode())
    assert r.status_code == 200, r.text[:300]
    r = post_raw(server, json.dumps({"texts": [["a fine film"]]}).encode())
    assert r.status_code == 422 and r.json()["error"].startswith("texts[0]: Input should be a valid string"), r.text
    r = post_raw(server, b'{"text": "a fine film"')  # malformed JSON is still json's own message
    assert r.status_code == 422 and r.json()["error"].startswith("malformed JSON at character"), r.text
