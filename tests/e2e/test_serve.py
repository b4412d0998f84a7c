"""The real server over HTTP: load with duplicates and replays, SIGKILL, the CLI around it."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from urllib.parse import urlencode

import httpx
import plivo.utils
import pytest

from tests.backends import database_url
from tests.e2e.conftest import ADMIN, PLIVOHOOK, TOKEN
from tests.e2e.load import make_plan, run_plan

pytestmark = pytest.mark.e2e


def stored_uuids(url: str) -> list[str]:
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            return [r[0] for r in conn.execute("SELECT message_uuid FROM messages")]
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT message_uuid FROM messages")]


def check_plan(plan, url: str) -> None:
    rows = stored_uuids(url)
    assert len(rows) == len(set(rows)), "a MessageUUID is stored twice"
    ok = {s.message_uuid for s in plan.shots if s.kind != "replay" and s.status == 200}
    assert ok <= set(rows), f"{len(ok - set(rows))} acknowledged messages are missing"
    originals = {s.message_uuid for s in plan.answered("original")}
    assert set(rows) <= originals, "something other than the signed originals was stored"
    replays = plan.answered("replay")
    assert replays and all(s.status == 403 for s in replays), {s.status for s in replays}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_load_with_duplicates_and_replays(server_factory, tmp_path, backend):
    with database_url(backend, tmp_path) as url:
        server = server_factory(url).start()
        endpoint = server.url + "/plivo/message"
        plan = make_plan(endpoint, TOKEN, total=1000, dup_rate=0.10, replay_rate=0.05)
        run_plan(endpoint, plan, concurrency=50)
        non_replay = [s for s in plan.shots if s.kind != "replay"]
        assert all(s.status == 200 for s in non_replay), {s.status for s in non_replay}
        check_plan(plan, url)
        assert len(stored_uuids(url)) == len(plan.answered("original"))


def test_sigkill_mid_load_loses_nothing_acknowledged(server_factory, tmp_path):
    url = f"sqlite:///{tmp_path}/kill.db"
    port = None
    server = server_factory(url).start()
    port = server.port
    endpoint = server.url + "/plivo/message"
    plan = make_plan(endpoint, TOKEN, total=1500, dup_rate=0.1, replay_rate=0.0)
    killer = threading.Timer(0.8, server.kill)
    killer.start()
    run_plan(endpoint, plan, concurrency=50)
    killer.join()
    acknowledged = {s.message_uuid for s in plan.shots if s.status == 200}
    assert acknowledged, "the kill came before any answer; nothing was tested"
    assert any(s.status != 200 for s in plan.shots), "the kill came after the load"
    restarted = server_factory(url, port=port).start()
    assert httpx.get(restarted.url + "/healthz").json()["status"] == "ok"
    rows = set(stored_uuids(url))
    assert acknowledged <= rows, f"{len(acknowledged - rows)} acknowledged messages lost"


def test_refuses_to_start_without_a_token(tmp_path):
    result = subprocess.run(
        [PLIVOHOOK, "serve", "--database", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "--auth-token" in result.stderr and "PLIVO_AUTH_TOKEN" in result.stderr


def test_insecure_mode_warns_and_records_scheme_none(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/i.db", "--insecure-skip-verify").start()
    assert any("insecure" in line.lower() for line in server.lines)
    uid = str(uuid.uuid4())
    body = urlencode({"From": "1415", "To": "1416", "Text": "hi", "MessageUUID": uid})
    response = httpx.post(
        server.url + "/plivo/message",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    stored = httpx.get(
        f"{server.url}/api/messages/{uid}", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    assert stored["signature_scheme"] == "none"


def test_send_is_signed_as_plivo_does(server_factory, tmp_path):
    """What `plivohook send` signs, the SDK's validate_signature accepts, and the server too."""
    from plivohook.protocol.simulator import signed_request

    server = server_factory(f"sqlite:///{tmp_path}/s.db").start()
    url = server.url + "/plivo/message"
    _, headers, _ = signed_request(url, [("A", "1")], TOKEN, ("v2", "v3"))
    assert plivo.utils.validate_signature(
        url, headers["X-Plivo-Signature-V2-Nonce"], headers["X-Plivo-Signature-V2"], TOKEN
    )
    result = subprocess.run(
        [PLIVOHOOK, "send", url, "--auth-token", TOKEN, "--count", "20", "--concurrency", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200: 20" in result.stdout


def test_plivo_receive_sms_sample_request_shape(server_factory, tmp_path):
    """Exactly what Plivo's receive-SMS sample receives: five form fields and the V2 pair."""
    server = server_factory(f"sqlite:///{tmp_path}/p.db").start()
    url = server.url + "/plivo/message"
    nonce = "05429567804466091622"
    signature = plivo.utils.validate_signature  # the SDK's verifier, reused below as the oracle
    from plivohook.protocol.signature import sign_v2

    sig = sign_v2(url, nonce, TOKEN)
    assert signature(url, nonce, sig, TOKEN)
    uid = str(uuid.uuid4())
    response = httpx.post(
        url,
        data={
            "From": "14155550100",
            "To": "14155550199",
            "Type": "sms",
            "Text": "Hi",
            "MessageUUID": uid,
        },
        headers={"X-Plivo-Signature-V2": sig, "X-Plivo-Signature-V2-Nonce": nonce},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")


def test_messages_command_prints_what_is_stored(server_factory, tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    server = server_factory(url).start()
    subprocess.run(
        [
            PLIVOHOOK,
            "send",
            server.url + "/plivo/message",
            "--auth-token",
            TOKEN,
            "--text",
            "héllo",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    result = subprocess.run(
        [PLIVOHOOK, "messages", "--database", url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"text":"héllo"' in result.stdout


def test_sign_and_verify_commands_show_the_string(tmp_path):
    url = "https://example.com/plivo/message"
    signed = subprocess.run(
        [PLIVOHOOK, "sign", url, "--auth-token", TOKEN, "--nonce", "123", "--version", "v2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f"string to sign: {url}123" in signed
    value = signed.split("X-Plivo-Signature-V2: ")[1].split()[0]
    good = subprocess.run(
        [PLIVOHOOK, "verify", url, "--auth-token", TOKEN, "--nonce", "123", "--signature", value,
         "--version", "v2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert good.returncode == 0 and "valid: v2" in good.stdout
    bad = subprocess.run(
        [PLIVOHOOK, "verify", url + "/", "--auth-token", TOKEN, "--nonce", "123", "--signature",
         value, "--version", "v2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (
        bad.returncode == 1
        and "tried (canonical): https://example.com/plivo/message/123" in bad.stdout
    )


def test_ready_line_and_healthz(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/h.db").start()
    assert f"plivohook ready on {server.url}" in server.lines
    started = time.monotonic()
    health = httpx.get(server.url + "/healthz").json()
    assert (health["status"], health["database"]) == ("ok", "ok")
    assert health["outbox"] == {"pending": 0, "dead": 0, "oldest_pending_age_seconds": None}
    assert time.monotonic() - started < 5


def test_forwarded_headers_are_ignored_unless_trusted(server_factory, tmp_path):
    """uvicorn would trust X-Forwarded-Proto from 127.0.0.1 by itself; plivohook must not."""
    from plivohook.protocol.simulator import signed_request

    for trusted in (False, True):
        args = ("--trust-forwarded-headers",) if trusted else ()
        server = server_factory(f"sqlite:///{tmp_path}/f{trusted}.db", *args).start()
        signed_for = "https://public.example.org/plivo/message"
        _, headers, body = signed_request(
            signed_for, [("From", "1415"), ("To", "1416"), ("Text", "x"),
                         ("MessageUUID", str(uuid.uuid4()))], TOKEN, ("v2",)
        )  # fmt: skip
        headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example.org"})
        response = httpx.post(server.url + "/plivo/message", content=body, headers=headers)
        assert response.status_code == (200 if trusted else 403), response.text
