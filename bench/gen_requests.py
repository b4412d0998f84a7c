"""Pre-generate distinct, correctly signed Plivo inbound-message requests for bench/replay.lua.

Each request is a POST of form-encoded SMS parameters (a fresh time-based MessageUUID each,
realistic numbers, some unicode texts) signed both ways, as Plivo signs them:
``X-Plivo-Signature-V2`` over the URL and ``X-Plivo-Signature-V3`` over the URL and the
parameters, each with its own 20-digit nonce. The signatures come from the project's own
:mod:`plivohook.protocol.signature`.

The requests are split in one file per wrk thread (``<prefix>.0``, ``<prefix>.1``, ...), so the
threads' slices are disjoint. A file is line-oriented, for Lua to read without a parser::

    #plivo-requests v1 <path> <count>
    <form body>\\t<V2 signature>\\t<V2 nonce>\\t<V3 signature>\\t<V3 nonce>
    ...

A form body never contains a tab or a newline (url-encoding escapes both), nor does a Base64
signature or a nonce.

Usage: ``python bench/gen_requests.py --port 8000 --count 1000 --parts 2 --out /tmp/requests``
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import random
import secrets
import string
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

from plivohook.protocol.signature import sign_v2, sign_v3

HEADER_LINE = "#plivo-requests v1"
DEFAULT_PATH = "/plivo/message"

# Our side: a few Plivo numbers (long codes and a toll-free one) receiving the traffic.
OUR_NUMBERS = ["14155550199", "12025550143", "18885550120", "447700900321"]
# Senders: (country prefix, number of digits after it, rate per unit for inbound on that route).
SENDER_ROUTES = [
    ("1415", 7, "0.00000"),
    ("1212", 7, "0.00000"),
    ("1646", 7, "0.00000"),
    ("447", 9, "0.00350"),
    ("336", 8, "0.00550"),
    ("4915", 9, "0.00550"),
    ("919", 9, "0.00120"),
    ("55119", 8, "0.00400"),
    ("3460", 7, "0.00500"),
    ("8190", 8, "0.00600"),
]
POWERPACK_UUIDS = ["", "", "", "d8a2b7c4-3f5e-4a61-9b0c-7e2f1a9d4c38"]
TEXTS = [
    "Hi, is my order #{n} shipped yet?",
    "Yes",
    "yes please",
    "No thanks",
    "STOP",
    "HELP",
    "START",
    "Can I move my appointment to {hour}:30 tomorrow?",
    "Thanks! 👍",
    "On my way 🚗💨 be there in {m} min",
    "Café à {hour}h ? Je réserve une table 😊",
    "¿Dónde está mi paquete? Pedido nº {n}",
    "Grüße aus München! Termin am Dienstag passt.",
    "Можно перенести встречу на завтра?",
    "予約を確認しました。ありがとうございます",
    "Ok 👌🏽",
    "Código de verificação: {code}",
    "Your code {code} worked, thanks",
    "I was charged twice for order {n}, can someone call me back? My number is the one "
    "I'm texting from. I tried the website but the chat was closed and the phone line kept "
    "dropping after twenty minutes on hold. Please sort this out before Friday.",
    "Bonjour, je voudrais savoir si la livraison du {day} est toujours prévue entre {hour}h "
    "et {hour2}h, car je ne serai pas là l'après-midi. Merci d'avance et bonne journée ☀️",
    "R u open on sunday?",
    "Wrong number sorry",
    "🎉🎉🎉",
]
INTENTS = {"STOP": "optout", "HELP": "help", "START": "optin"}
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def sms_units(text: str) -> int:
    """The parts an SMS of this text takes: GSM-7 160/153 characters, else UCS-2 70/67."""
    if all(ch in GSM7 for ch in text):
        single, multi = 160, 153
    else:
        single, multi = 70, 67
    length = len(text.encode("utf-16-le")) // 2  # UCS-2 counts emoji as two code units
    return 1 if length <= single else math.ceil(length / multi)


NONCE_SPACE = 10**20
PLIVO_NODE = 0x0242AC120000  # a container's MAC, like the node of Plivo's MessageUUIDs
STREAMS = 1000  # nonces of stream k are k modulo STREAMS: two streams never share a nonce
_FORMATTER = string.Formatter()
_TEMPLATES = [
    (text, tuple(name for _, name, _, _ in _FORMATTER.parse(text) if name)) for text in TEXTS
]
_NUMBERS = {
    "n": (10000, 999999),
    "hour": (8, 18),
    "hour2": (12, 20),
    "m": (2, 40),
    "code": (100000, 999999),
    "day": (1, 28),
}


@dataclass
class Generator:
    """Makes requests for one server URL.

    Nonces are distinct within a generator (a set) and across generators of distinct
    ``stream`` numbers (the residue), so the runs of one benchmark never repeat one. Each
    MessageUUID is a fresh version-1 (time-based) UUID, as Plivo's are (``…-11ee-…``), on a node
    of the generator's own stream, so that parallel generators never make the same one.
    """

    port: int
    auth_token: str
    path: str = DEFAULT_PATH
    stream: int = 0
    seed: int | None = None
    _nonces: set[int] = field(default_factory=set)
    _rng: random.Random = field(init=False)
    _texts: dict[str, tuple[str, int]] = field(default_factory=dict)  # text: (quoted, units)

    def __post_init__(self) -> None:
        if not 0 <= self.stream < STREAMS:
            raise ValueError(f"stream must be in [0, {STREAMS})")
        self._rng = random.Random(self.seed if self.seed is not None else secrets.randbits(64))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def _nonce(self) -> str:
        while True:
            value = self._rng.randrange(NONCE_SPACE // STREAMS) * STREAMS + self.stream
            if value not in self._nonces:
                self._nonces.add(value)
                return f"{value:020d}"

    def _text(self) -> str:
        rng = self._rng
        template, names = rng.choice(_TEMPLATES)
        if not names:
            return template
        return template.format(**{name: rng.randint(*_NUMBERS[name]) for name in names})

    def _text_facts(self, text: str) -> tuple[str, int]:
        """The text url-encoded, and its SMS units (cached: texts repeat often)."""
        facts = self._texts.get(text)
        if facts is None:
            facts = (quote_plus(text), sms_units(text))
            if len(self._texts) < 100_000:
                self._texts[text] = facts
        return facts

    def request(self) -> tuple[str, list[tuple[str, str]]]:
        """One request's form body and its parameters, in the order Plivo sends them."""
        rng = self._rng
        prefix, digits, rate = rng.choice(SENDER_ROUTES)
        sender = f"{prefix}{rng.randrange(10**digits):0{digits}d}"
        to = rng.choice(OUR_NUMBERS)
        text = self._text()
        quoted, units = self._text_facts(text)
        amount = f"{float(rate) * units:.5f}"
        intent = INTENTS.get(text, "")
        powerpack = rng.choice(POWERPACK_UUIDS)
        message_uuid = str(uuid.uuid1(node=PLIVO_NODE | self.stream))
        params = [
            ("From", sender),
            ("To", to),
            ("Type", "sms"),
            ("Text", text),
            ("MessageUUID", message_uuid),
            ("Units", str(units)),
            ("TotalRate", rate),
            ("TotalAmount", amount),
            ("MessageIntent", intent),
            ("PowerpackUUID", powerpack),
        ]
        # The same bytes urlencode(params) gives: every value but Text is URL-safe already.
        body = (
            f"From={sender}&To={to}&Type=sms&Text={quoted}"
            f"&MessageUUID={message_uuid}&Units={units}&TotalRate={rate}"
            f"&TotalAmount={amount}&MessageIntent={intent}&PowerpackUUID={powerpack}"
        )
        return body, params

    def lines(self, count: int) -> Iterator[str]:
        """``count`` request lines (see the module docstring), each newly signed."""
        url = self.url
        token = self.auth_token
        for _ in range(count):
            body, params = self.request()
            v2_nonce = self._nonce()
            v3_nonce = self._nonce()
            v2 = sign_v2(url, v2_nonce, token)
            v3 = sign_v3("POST", url, params, v3_nonce, token)
            yield f"{body}\t{v2}\t{v2_nonce}\t{v3}\t{v3_nonce}\n"


def _write_part(
    out: Path, count: int, port: int, auth_token: str, path: str, stream: int, seed: int | None
) -> int:
    gen = Generator(port=port, auth_token=auth_token, path=path, stream=stream, seed=seed)
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"{HEADER_LINE} {path} {count}\n")
        fh.writelines(gen.lines(count))
        return fh.tell()


def part_paths(prefix: Path, parts: int) -> list[Path]:
    """The files ``write_requests`` makes: ``<prefix>.0`` ... ``<prefix>.<parts - 1>``."""
    return [prefix.with_name(f"{prefix.name}.{i}") for i in range(parts)]


def write_requests(
    prefix: Path,
    count: int,
    *,
    port: int,
    auth_token: str,
    parts: int = 1,
    path: str = DEFAULT_PATH,
    stream: int = 0,
    workers: int = 1,
    seed: int | None = None,
) -> int:
    """Write ``count`` requests in ``parts`` files (one per wrk thread); return the bytes written.

    Part ``i`` is made on nonce stream ``stream + i`` (reserve ``parts`` stream numbers), in up
    to ``workers`` processes at once.
    """
    shares = [count // parts + (1 if i < count % parts else 0) for i in range(parts)]
    seeds = [None if seed is None else seed + i for i in range(parts)]
    jobs = [
        (out, share, port, auth_token, path, (stream + i) % STREAMS, part_seed)
        for i, (out, share, part_seed) in enumerate(
            zip(part_paths(prefix, parts), shares, seeds, strict=True)
        )
    ]
    workers = max(1, min(workers, parts, count // 5000))
    if workers == 1:
        return sum(_write_part(*job) for job in jobs)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return sum(f.result() for f in [pool.submit(_write_part, *job) for job in jobs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--auth-token", default="bench-auth-token-0123456789abcdef")
    parser.add_argument("--seed", type=int, default=None, help="repeatable texts and numbers")
    parser.add_argument("--parts", type=int, default=2, help="files, one per wrk thread")
    parser.add_argument("--workers", type=int, default=1, help="processes making the requests")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    size = write_requests(
        args.out,
        args.count,
        port=args.port,
        auth_token=args.auth_token,
        parts=args.parts,
        path=args.path,
        workers=args.workers,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - started
    print(
        f"{args.count} requests, {size / 1e6:.1f} MB, in {elapsed:.2f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
