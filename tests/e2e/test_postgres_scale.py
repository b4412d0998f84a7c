"""Several `plivohook serve` processes on one PostgreSQL: one truth, decided by the database."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.backends import fresh_postgres_database
from tests.e2e.conftest import TOKEN
from tests.e2e.load import make_plan, run_plan
from tests.e2e.test_serve import check_plan, stored_uuids

pytestmark = pytest.mark.e2e


async def _both(urls: list[str], shots, concurrency: int = 50) -> list[list[tuple[int, str]]]:
    """Send every shot to every server at the same moment; collect (status, body) per server."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=20) as client:

        async def one(shot):
            async with limit:
                responses = await asyncio.gather(
                    *(client.post(u, content=shot.body, headers=shot.headers) for u in urls)
                )
                return [(r.status_code, r.text) for r in responses]

        return await asyncio.gather(*(one(s) for s in shots))


PUBLIC = "https://hooks.example.com"


def test_two_processes_store_each_message_once_and_answer_alike(server_factory):
    """The same 1,000 signed requests reach both processes at once (plus replays after)."""
    with fresh_postgres_database() as url:
        servers = [
            server_factory(url, "--auto-reply", "Thanks", "--public-url", PUBLIC).start()
            for _ in range(2)
        ]
        urls = [s.url + "/plivo/message" for s in servers]
        plan = make_plan(
            PUBLIC + "/plivo/message", TOKEN, total=1000, dup_rate=0.10, replay_rate=0.05
        )
        deliveries = [s for s in plan.shots if s.kind != "replay"]
        answers = asyncio.run(_both(urls, deliveries))
        for shot, (a, b) in zip(deliveries, answers, strict=True):
            assert a[0] == b[0] == 200, (a, b)
            assert a[1] == b[1], "both processes answer a duplicate alike"
            shot.status = 200
        replays = [s for s in plan.shots if s.kind == "replay"]
        for i, url_ in enumerate(urls):
            run_plan(url_, type(plan)(replays[i::2]))
        check_plan(plan, url)
        assert len(stored_uuids(url)) == len(plan.answered("original"))


def test_same_delivery_to_two_processes_at_once(server_factory):
    """Plivo's retry of one message landing on two machines at the same moment."""
    from plivohook.protocol.simulator import signed_request
    from tests.e2e.load import params

    with fresh_postgres_database() as url:
        servers = [
            server_factory(
                url, "--auto-reply", "Got it", "--public-url", "https://hooks.example.com"
            ).start()
            for _ in range(2)
        ]
        public = "https://hooks.example.com/plivo/message"
        shots = []
        for i in range(300):
            import uuid

            uid = str(uuid.uuid4())
            _, headers, body = signed_request(public, params(uid, f"race {i}"), TOKEN, ("v2", "v3"))
            shots.append((uid, headers, body))

        async def race():
            async with httpx.AsyncClient(timeout=20) as client:
                limit = asyncio.Semaphore(40)

                async def one(shot):
                    uid, headers, body = shot
                    async with limit:
                        # One server gets the request, the other the same message with a new
                        # nonce (a retry) -- both at the same moment.
                        _, retry_headers, _ = signed_request(
                            public,
                            list(httpx.QueryParams(body.decode()).multi_items()),
                            TOKEN,
                            ("v2",),
                        )
                        a, b = await asyncio.gather(
                            client.post(
                                servers[0].url + "/plivo/message", content=body, headers=headers
                            ),
                            client.post(
                                servers[1].url + "/plivo/message",
                                content=body,
                                headers=retry_headers,
                            ),
                        )
                        return uid, a, b

                return await asyncio.gather(*(one(s) for s in shots))

        results = asyncio.run(race())
        for uid, a, b in results:
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.text == b.text, "both processes must give the stored answer"
            assert f"reply_to={uid}" in a.text
        rows = stored_uuids(url)
        assert sorted(rows) == sorted(uid for uid, _, _ in results)


def test_workers_two_on_postgres(server_factory):
    with fresh_postgres_database() as url:
        server = server_factory(url, "--workers", "2").start(timeout=60)
        endpoint = server.url + "/plivo/message"
        plan = make_plan(endpoint, TOKEN, total=600, dup_rate=0.1, replay_rate=0.05)
        run_plan(endpoint, plan, concurrency=40)
        assert all(s.status == 200 for s in plan.shots if s.kind != "replay")
        check_plan(plan, url)
        assert any("2 workers" in line for line in server.lines)


def test_workers_two_on_sqlite(server_factory, tmp_path):
    url = f"sqlite:///{tmp_path}/w.db"
    server = server_factory(url, "--workers", "2").start(timeout=60)
    endpoint = server.url + "/plivo/message"
    plan = make_plan(endpoint, TOKEN, total=600, dup_rate=0.1, replay_rate=0.05)
    run_plan(endpoint, plan, concurrency=40)
    assert all(s.status == 200 for s in plan.shots if s.kind != "replay")
    check_plan(plan, url)
