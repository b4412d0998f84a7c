"""A Plivo-shaped load: distinct messages, duplicate deliveries and replayed nonces."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from plivohook.protocol.simulator import inbound_sms_params, signed_request


@dataclass
class Shot:
    message_uuid: str
    body: bytes
    headers: dict[str, str]
    kind: str  # "original", "duplicate" or "replay"
    status: int | str | None = None


@dataclass
class Plan:
    shots: list[Shot] = field(default_factory=list)

    def answered(self, kind: str | None = None, status: int | None = None) -> list[Shot]:
        return [
            s
            for s in self.shots
            if (kind is None or s.kind == kind) and (status is None or s.status == status)
        ]


def params(uid: str, text: str) -> list[tuple[str, str]]:
    return inbound_sms_params(uid, text, from_number=f"1415555{random.randint(1000, 9999)}")


def make_plan(url: str, token: str, total: int, dup_rate: float, replay_rate: float) -> Plan:
    rng = random.Random(7)
    plan = Plan()
    originals: list[Shot] = []
    n_dup, n_replay = int(total * dup_rate), int(total * replay_rate)
    for i in range(total - n_dup - n_replay):
        uid = str(uuid.uuid4())
        # V2 only: V2 does not sign the body, so a replayed nonce is caught by the store alone.
        schemes = ("v2",) if i % 3 else ("v2", "v3")
        _, headers, body = signed_request(url, params(uid, f"vote {i} ✓"), token, schemes)
        shot = Shot(uid, body or b"", headers, "original")
        originals.append(shot)
        plan.shots.append(shot)
    for _ in range(n_dup):
        # Plivo's retry: same message, a new nonce.
        source = rng.choice(originals)
        same = dict(httpx.QueryParams(source.body.decode()).multi_items())
        pairs = list(same.items())
        _, headers, body = signed_request(url, pairs, token, ("v2",))
        plan.shots.append(Shot(source.message_uuid, body or b"", headers, "duplicate"))
    rng.shuffle(plan.shots)
    for _ in range(n_replay):
        # A captured V2 signature and nonce carrying another body.
        source = rng.choice(originals)
        uid = str(uuid.uuid4())
        headers = {
            k: v for k, v in source.headers.items() if not k.startswith("X-Plivo-Signature-V3")
        }
        forged = urlencode(params(uid, "forged")).encode()
        plan.shots.append(Shot(uid, forged, headers, "replay"))
    return plan


async def fire(url: str, shots: list[Shot], concurrency: int, timeout: float = 20.0) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def one(shot: Shot) -> None:
            async with limit:
                try:
                    response = await client.post(url, content=shot.body, headers=shot.headers)
                    shot.status = response.status_code
                except httpx.HTTPError as exc:
                    shot.status = type(exc).__name__

        await asyncio.gather(*(one(s) for s in shots))


def run_plan(url: str, plan: Plan, concurrency: int = 50) -> None:
    """Originals and duplicates at once, then the replays (an attacker replays what it saw)."""
    first = [s for s in plan.shots if s.kind != "replay"]
    asyncio.run(fire(url, first, concurrency))
    asyncio.run(fire(url, plan.answered("replay"), concurrency))
