"""Hostile requests every serving profile must answer with a 4xx naming the field, and how two answers compare
(tests/test_serve_app.py, tests/test_demo.py)."""
from __future__ import annotations

import json
import threading

import httpx
import numpy as np

BIG = 2**63
#: (path, raw body, allowed status codes, text the answer must contain)
BAD_REQUESTS: list[tuple[str, bytes, set[int], str]] = [
    ("/recommend", json.dumps({"user_id": BIG, "k": 10}).encode(), {422}, "user_id"),
    ("/recommend", json.dumps({"user_id": 2**64, "k": 10}).encode(), {422}, "user_id"),
    ("/recommend", json.dumps({"user_id": -1, "k": 10}).encode(), {422}, "user_id"),
    ("/recommend", b'{"user_id": 1, "k": 5, "exclude": [99999999999999999999]}', {422}, "exclude"),
    ("/recommend", b'{"user_id": ' + b"9" * 5000 + b', "k": 5}', {400, 422}, "user_id"),
    ("/recommend", b"[" * 2000 + b"]" * 2000, {400}, "nested"),
    ("/recommend", b'{"user_id": 1, "k": 5, "as_of": NaN}', {422}, "as_of"),
    ("/recommend", b'{"user_id": 1, "k": 5, "as_of": Infinity}', {422}, "as_of"),
    ("/recommend", b'{"user_id": 1, "k": 1e400}', {422}, "k"),
    ("/recommend", b"\xff\xfe\x00garbage", {400}, "JSON"),
    ("/recommend", b"null", {422}, "object"),
    ("/rank", json.dumps({"user_id": BIG, "item_ids": [1, 2]}).encode(), {422}, "user_id"),
    ("/rank", json.dumps({"user_id": 1, "item_ids": [5, 999999, -3]}).encode(), {422}, "item_ids"),
    ("/rank", json.dumps({"user_id": 1, "item_ids": [5, BIG]}).encode(), {422}, "item_ids"),
    ("/events", json.dumps({"events": [{"user_id": -1, "item_id": 1, "timestamp": 5}]}).encode(), {422}, "user_id"),
    ("/events", json.dumps({"events": [{"user_id": 1, "item_id": BIG, "timestamp": 5}]}).encode(), {422}, "item_id"),
    ("/events", json.dumps({"user_id": 1, "item_id": 2, "timestamp": 5, "mood": "sad"}).encode(), {422}, "mood"),
    ("/events", json.dumps({"events": []}).encode(), {422}, "events"),
    ("/events", b"[]", {422}, "events"),
    ("/events", json.dumps([{"user_id": -1, "item_id": 1, "timestamp": 5}]).encode(), {422}, "user_id"),
    ("/events", b"[" * 2000 + b"]" * 2000, {400}, "nested"),
]


def check_bad_requests(client: httpx.Client, valid: dict, rounds: int = 3) -> None:
    """Every bad request gets its 4xx naming the field, while valid /recommend requests sent alongside from
    another thread all succeed; a chunked body past ``serve.max_body_bytes`` gets 413."""
    codes: list[int] = []
    stop = threading.Event()

    def valid_load():
        with httpx.Client(base_url=client.base_url, timeout=30) as c:
            while not stop.is_set() or not codes:
                codes.append(c.post("/recommend", json=valid).status_code)

    t = threading.Thread(target=valid_load)
    t.start()
    try:
        for _ in range(rounds):
            for path, body, statuses, text in BAD_REQUESTS:
                r = client.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code in statuses and text in r.text, (path, body[:60], r.status_code, r.text[:300])
        chunks = (b'{"user_id": 1, "exclude": [' + b"1, " * 20_000 for _ in range(5))
        r = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text[:300]
    finally:
        stop.set()
        t.join()
    assert codes and all(c == 200 for c in codes), codes


def answer_items(resp: dict) -> list[tuple[int, float]]:
    """(item_id, score) of a /recommend or /rank answer, in its order."""
    return [(it["item_id"], it["score"]) for it in resp["items"]]


def assert_same_answer(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """Same items in the same order, scores equal to float tolerance."""
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-5)
