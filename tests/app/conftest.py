from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from plivohook.app import create_app
from plivohook.config import Settings
from plivohook.protocol.simulator import signed_request
from tests.backends import BACKENDS, database_url

TOKEN = "test-auth-token-1234567890"
MAIN_TOKEN = "main-account-token-0987654321"
ADMIN = "admin-token-for-tests-0001"
BASE = "http://testserver"


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


class Harness:
    """An app on a real database, driven in-process, plus Plivo-shaped request helpers."""

    def __init__(self, client: TestClient, app):
        self.client = client
        self.app = app

    def post(self, path, params, *, schemes=("v2", "v3"), token=TOKEN, headers=None, query=""):
        url = BASE + path + (f"?{query}" if query else "")
        full, signed_headers, body = signed_request(url, list(params), token, schemes)
        signed_headers.update(headers or {})
        return self.client.post(full, content=body, headers=signed_headers)

    def get(self, path, params, *, schemes=("v2", "v3"), token=TOKEN):
        full, headers, _ = signed_request(BASE + path, list(params), token, schemes, "GET")
        return self.client.get(full, headers=headers)

    def raw(self, method, path, *, body=b"", headers=None):
        return self.client.request(method, BASE + path, content=body, headers=headers or {})

    def api(self, path, token=ADMIN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(BASE + path, headers=headers)

    def counts(self):
        return self.client.portal.call(self.app.store.counts)


def make_harness(url: str, **settings) -> Iterator[Harness]:
    options = {"auth_tokens": (TOKEN,), "main_auth_tokens": (MAIN_TOKEN,), "admin_token": ADMIN}
    options.update(settings)
    app = create_app(Settings(database_url=url, **options))
    with TestClient(app, base_url=BASE) as client:
        yield Harness(client, app)


@pytest.fixture
def harness(db_url) -> Iterator[Harness]:
    yield from make_harness(db_url)


def sms(uuid: str, text: str = "Hello there", **extra: str) -> list[tuple[str, str]]:
    params = {
        "From": "14155550100",
        "To": "14155550199",
        "Type": "sms",
        "Text": text,
        "MessageUUID": uuid,
        "Units": "1",
        "TotalRate": "0.00000",
        "TotalAmount": "0.00000",
        "MessageIntent": "",
        "PowerpackUUID": "",
    }
    params.update(extra)
    return list(params.items())


def form(params) -> bytes:
    return urlencode(list(params)).encode()
