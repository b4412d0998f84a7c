"""schemathesis against /openapi.json, in-process on the ASGI app: every documented operation,
generated requests, no server error and every response as documented (status, content type,
body schema). The admin API gets the bearer token; the webhooks get none (and must refuse)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from plivohook.openapi import OPENAPI  # noqa: E402
from plivohook.protocol.simulator import signed_request  # noqa: E402
from tests.fuzz.harness import ADMIN, BASE, TOKEN, Fuzzed, fuzzed_app  # noqa: E402

EXAMPLES = 60  # per operation and mode
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
def api_app(tmp_path_factory) -> Iterator[Fuzzed]:
    with fuzzed_app(tmp_path_factory.mktemp("schemathesis"), auto_reply="Thanks!") as fuzzed:
        # Something to list: a message (with an attachment), a status report, a rejection.
        uid = str(uuid.uuid4())
        for path, params in (
            (
                "/plivo/message",
                [
                    ("From", "14155550100"),
                    ("To", "14155550199"),
                    ("Type", "mms"),
                    ("Text", "hello"),
                    ("MessageUUID", uid),
                    ("Media0", "https://media.example/1.jpg"),
                    ("Tag", "a"),
                    ("Tag", "b"),
                ],
            ),
            ("/plivo/status", [("MessageUUID", str(uuid.uuid4())), ("Status", "delivered")]),
            ("/plivo/message", [("MessageUUID", "not-a-uuid")]),
        ):
            url, headers, body = signed_request(BASE + path, params, TOKEN, ("v2", "v3"))
            answer = fuzzed.client.post(url, content=body, headers=headers)
            assert answer.status_code in (200, 400), answer.text
        yield fuzzed


class WithoutLifespan:
    """The app with its lifespan left to the fixture: schemathesis's ASGI client would otherwise
    run startup and shutdown around its calls, closing the store the fixture opened."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def api_schema(api_app):
    return schemathesis.openapi.from_asgi("/openapi.json", WithoutLifespan(api_app.app))


# One test per documented operation. (schemathesis.pytest.from_fixture would do this, but it
# sets Node._nodeid, which pytest 9 no longer has.)
# Negative mode (invalid data) only where there is something to make invalid.
OPERATIONS = [
    (path, method.upper(), mode)
    for path, item in OPENAPI["paths"].items()
    for method, operation in item.items()
    for mode in ("positive", "negative")
    if mode == "positive" or operation.get("parameters") or operation.get("requestBody")
]


@pytest.mark.parametrize(
    ("path", "method", "mode"), OPERATIONS, ids=[f"{m} {p} {g}" for p, m, g in OPERATIONS]
)
def test_every_operation_conforms_to_the_openapi_description(
    api_schema, reliability, path, method, mode
):
    operation = api_schema[path][method]
    bearer = path.startswith("/api/") or path == "/metrics"
    headers = {"Authorization": f"Bearer {ADMIN}"} if bearer else {}
    strategy = operation.as_strategy(schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Any) -> None:
        reliability.bad_input(f"schemathesis_{mode}_case")
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


def test_the_description_is_served_and_complete(api_app):
    response = api_app.client.get(BASE + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == api_app.app.paths()
