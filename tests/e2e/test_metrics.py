"""The real server: /metrics across --workers 2 after a known load, JSON log lines, and a whole
session in which no token, signature, cookie or secret reaches a log line or an answer."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plivohook.protocol.simulator import inbound_sms_params, signed_request, status_params
from tests.backends import database_url
from tests.e2e.conftest import ADMIN, TOKEN

pytestmark = pytest.mark.e2e

READY = "plivohook ready on "


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


class Load:
    """A known mix, sent over HTTP: what /metrics must count afterwards."""

    def __init__(self, base: str):
        self.url = base + "/plivo/message"
        self.answers: list[httpx.Response] = []
        self.sent_headers: list[dict[str, str]] = []

    def post(self, client: httpx.Client, params, token=TOKEN, schemes=("v2", "v3"), **extra):
        _, headers, body = signed_request(self.url, params, token, schemes)
        headers.update(extra)
        return self.send(client, headers, body or b"")

    def send(self, client: httpx.Client, headers: dict[str, str], body: bytes) -> httpx.Response:
        self.sent_headers.append(headers)
        answer = client.post(self.url, content=body, headers=headers)
        self.answers.append(answer)
        return answer


def sms(uid: str, text: str = "hello") -> list[tuple[str, str]]:
    return inbound_sms_params(uid, text)


def run_known_load(base: str) -> tuple[Load, dict[str, int]]:
    load = Load(base)
    uids = [str(uuid.uuid4()) for _ in range(40)]
    # Several connections, so that both workers serve some of it.
    clients = [httpx.Client(timeout=10) for _ in range(4)]
    try:
        for i, uid in enumerate(uids):
            assert load.post(clients[i % 4], sms(uid), schemes=("v2",)).status_code == 200
        for i, uid in enumerate(uids[:6]):  # Plivo's retries: a new nonce, the same message
            assert load.post(clients[i % 4], sms(uid)).status_code == 200
        for i in range(4):  # replays: a captured V2 signature and nonce, another body
            _, headers, _ = signed_request(load.url, sms(uids[i]), TOKEN, ("v2",))
            assert load.send(
                clients[i % 4], headers, urlencode(sms(uids[i])).encode()
            ).status_code in (200,)
            other = urlencode(sms(str(uuid.uuid4()), "forged")).encode()
            assert load.send(clients[(i + 1) % 4], headers, other).status_code == 403
        for i in range(3):  # forgeries: another token
            answer = load.post(clients[i % 4], sms(str(uuid.uuid4())), token="f" * 24)
            assert answer.status_code == 403
        for i in range(2):  # no signature at all
            answer = clients[i % 4].post(
                load.url,
                content=urlencode(sms(str(uuid.uuid4()))).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            load.answers.append(answer)
            assert answer.status_code == 403
        for i in range(2):  # signed, but not a message: kept as rejections
            assert load.post(clients[i % 4], [("MessageUUID", f"bad-{i}")]).status_code == 400
    finally:
        for client in clients:
            client.close()
    expected = {
        "stored": 40,
        "duplicates": 6 + 4,  # the retries, and each replay's genuine first use
        "replays": 4,
        "mismatch": 3,
        "missing_signature": 2,
        "rejections": 2,
        "200": 40 + 6 + 4,
        "403": 4 + 3 + 2,
        "400": 2,
    }
    return load, expected


def scrape(base: str, token: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(base + "/metrics", headers=headers, timeout=10)


def counted(found) -> dict[str, int]:
    return {
        "stored": int(value(found, "plivohook_messages_stored_total")),
        "duplicates": int(value(found, "plivohook_duplicates_total", route="message")),
        "replays": int(value(found, "plivohook_replays_refused_total")),
        "mismatch": int(value(found, "plivohook_verification_failures_total", reason="mismatch")),
        "missing_signature": int(
            value(found, "plivohook_verification_failures_total", reason="missing_signature")
        ),
        "rejections": int(value(found, "plivohook_rejections_total")),
        **{
            status: int(value(found, "plivohook_requests_total", route="message", status=status))
            for status in ("200", "403", "400")
        },
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_metrics_across_two_workers_count_a_known_load(server_factory, tmp_path, backend):
    with database_url(backend, tmp_path) as url:
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        server = server_factory(
            url, "--workers", "2", "--log-format", "json", env={"TMPDIR": str(tmp)}
        ).start()
        [folder] = tmp.glob("plivohook-metrics-*")  # the multiprocess mode's, private
        assert folder.stat().st_mode & 0o777 == 0o700
        load, expected = run_known_load(server.url)
        # Each worker exports its counts within a second: wait for the other one's.
        deadline = time.monotonic() + 15
        while True:
            answer = scrape(server.url)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("text/plain")
            found = samples(answer.text)
            if counted(found) == expected or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert counted(found) == expected
        writes = 40 + 6 + 4 * 2 + 2  # every request that reached the store
        assert value(found, "plivohook_commit_batch_size_sum") == writes
        assert value(found, "plivohook_commit_seconds_count") >= 1
        # /metrics needs the admin token as a bearer token.
        assert scrape(server.url, token=None).status_code == 401
        assert scrape(server.url, token="w" * 24).status_code == 401

        # One JSON log line per webhook request, whichever worker served it.
        requests = len(load.answers)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [line for line in server.lines if not line.startswith(READY)]
            entries = [json.loads(line) for line in lines]  # every line is one JSON object
            per_request = [e for e in entries if "route" in e]
            if len(per_request) >= requests:
                break
            time.sleep(0.2)
        assert len(per_request) == requests
        for entry in entries:
            assert {"ts", "level", "logger", "msg"} <= set(entry), entry
        for entry in per_request:
            assert {"method", "status", "outcome", "message_uuid", "duration_ms"} <= set(entry)
        outcomes = [e["outcome"] for e in per_request]
        assert outcomes.count("stored") == 40
        assert outcomes.count("replay") == 4
        assert outcomes.count("verification_failed") == 5
        assert outcomes.count("rejected") == 2
        stored = {e["message_uuid"] for e in per_request if e["outcome"] == "stored"}
        assert len(stored) == 40
        # uvicorn's own lines follow the format too (its start-up lines, in JSON).
        assert any(e["logger"].startswith("uvicorn") for e in entries)
        server.stop()
        assert not folder.exists()  # removed at exit


def test_metrics_open_serves_without_a_token(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/open.db", "--metrics-open").start()
    answer = scrape(server.url, token=None)
    assert answer.status_code == 200
    assert "plivohook_requests_total" in answer.text or "plivohook_requests" in answer.text


FORWARD_SECRET = "whsec_" + "c2VjcmV0LWZvci1mb3J3YXJkaW5nLXRlc3RzLTAxMjM0NQ=="
COOKIE = "session=cookie-value-that-must-never-show-9f8e7d"


def test_no_secret_in_any_log_line_or_answer_of_a_whole_session(server_factory, tmp_path):
    """Messages, retries, replays, forgeries, rejections, statuses, API calls with the admin
    token and with wrong ones, scrapes: every log line at debug level, every answer, /metrics."""
    server = server_factory(
        f"sqlite:///{tmp_path}/session.db",
        "--log-level",
        "debug",
        # A secret-looking setting the server may not even use yet: it must never show either.
        env={"PLIVOHOOK_FORWARD_SECRET": FORWARD_SECRET},
    ).start()
    load, _ = run_known_load(server.url)
    cookie = {"Cookie": COOKIE}
    texts: list[str] = [a.text for a in load.answers]
    texts += [str(dict(a.headers)) for a in load.answers]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        # Statuses, a GET message, and webhooks carrying a cookie and an Authorization header.
        uid = str(uuid.uuid4())
        _, headers, body = signed_request(
            server.url + "/plivo/status", status_params(uid, "delivered"), TOKEN
        )
        load.sent_headers.append(headers)
        texts.append(client.post("/plivo/status", content=body, headers=headers).text)
        full, headers, _ = signed_request(
            server.url + "/plivo/message", sms(str(uuid.uuid4())), TOKEN, ("v2", "v3"), "GET"
        )
        load.sent_headers.append(headers)
        texts.append(client.get(full, headers={**headers, **cookie}).text)
        _, headers, body = signed_request(
            server.url + "/plivo/message", [("MessageUUID", "x")], TOKEN, ("v2", "v3")
        )
        load.sent_headers.append(headers)
        rejected = client.post(
            "/plivo/message",
            content=body,
            headers={**headers, **cookie, "Authorization": f"Bearer {ADMIN}"},
        )
        texts.append(rejected.text)
        # The API, with the admin token, a wrong one, none.
        for token in (ADMIN, "wrong-admin-token-0123456789", None):
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            for path in (
                "/api/messages",
                f"/api/messages/{uid}",
                f"/api/statuses/{uid}",
                "/api/rejections",
                "/api/messages?limit=2&cursor=bogus",
                "/metrics",
                "/healthz",
                "/openapi.json",
            ):
                answer = client.get(path, headers={**auth, **cookie})
                texts.append(answer.text)
                texts.append(str(dict(answer.headers)))
        rejections = client.get("/api/rejections", headers={"Authorization": f"Bearer {ADMIN}"})
        assert rejections.status_code == 200 and rejections.json()["rejections"]
    server.stop()  # its last lines too (shutdown, group-commit summary)
    logs = "\n".join(server.lines)
    assert "answered POST /plivo/message: 200 stored" in logs  # the request lines are there
    signatures = {
        v
        for headers in load.sent_headers
        for k, v in headers.items()
        if k.lower().startswith("x-plivo-signature") and not k.lower().endswith("nonce")
    }
    assert signatures
    secrets = {
        "auth token": TOKEN,
        "admin token": ADMIN,
        "forward secret": FORWARD_SECRET,
        "forward secret (body)": FORWARD_SECRET.removeprefix("whsec_"),
        "cookie": COOKIE.partition("=")[2],
        **{f"signature {i}": s for i, s in enumerate(sorted(signatures))},
    }
    # A V3 header may hold several signatures: each one on its own too.
    for i, joined in enumerate(sorted(signatures)):
        for j, part in enumerate(joined.split(",")):
            secrets[f"signature {i}.{j}"] = part
    everything = {"the log": logs, **{f"answer {i}": t for i, t in enumerate(texts)}}
    for where, text in everything.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} found in {where}"
