"""A wrong signature takes as long to refuse whether 0 or 40 of its 44 characters are right.

Interleaved batches of :func:`plivohook.protocol.signature.verify_v2`, in random order, compared
by their medians with a generous relative tolerance (no absolute timings: this machine may be
busy). A positive control shows the measurement can see a real difference: checking two tokens
instead of one (twice the HMACs) must show up clearly.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable

import pytest

from plivohook.protocol.signature import sign_v2, verify_v2

URL = "https://example.com/plivo/message"
NONCE = "05429567804466091622"
TOKEN = "timing-auth-token-1234567890"
TOLERANCE = 0.25  # relative difference of medians that still counts as "the same"
BATCH = 40
ROUNDS = 150


def _wrong(correct: str, right_prefix: int, rng: random.Random) -> str:
    """A well-formed signature whose first ``right_prefix`` characters are right, the next wrong."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    chars = list(correct[:43])
    for i in range(right_prefix, 43):
        chars[i] = rng.choice([c for c in alphabet if c != correct[i]])
    return "".join(chars) + "="


def _medians(cases: dict[str, Callable[[], object]], rng: random.Random) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(ROUNDS):
            rng.shuffle(names)
            for name in names:
                call = cases[name]
                started = time.perf_counter_ns()
                for _ in range(BATCH):
                    call()
                samples[name].append((time.perf_counter_ns() - started) / BATCH)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


@pytest.mark.slow
def test_wrong_signature_time_does_not_depend_on_the_right_prefix(reliability):
    rng = random.Random(20240601)
    correct = sign_v2(URL, NONCE, TOKEN)
    assert len(correct) == 44
    wrong_0 = _wrong(correct, 0, rng)
    wrong_40 = _wrong(correct, 40, rng)
    assert wrong_40[:40] == correct[:40] and wrong_40[40] != correct[40]
    assert wrong_0[0] != correct[0]
    assert not verify_v2(URL, NONCE, wrong_0, TOKEN)
    assert not verify_v2(URL, NONCE, wrong_40, TOKEN)
    assert verify_v2(URL, NONCE, correct, TOKEN)
    reliability.bad_input("wrong_signature_timed", 2)

    medians = _medians(
        {
            "0 right": lambda: verify_v2(URL, NONCE, wrong_0, TOKEN),
            "40 right": lambda: verify_v2(URL, NONCE, wrong_40, TOKEN),
            "two tokens": lambda: verify_v2(URL, NONCE, wrong_0, (TOKEN + "x", TOKEN)),
        },
        rng,
    )
    print({name: f"{ns / 1000:.2f} µs" for name, ns in medians.items()})
    fast, slow = sorted((medians["0 right"], medians["40 right"]))
    assert (slow - fast) / fast < TOLERANCE, medians
    # The positive control: the measurement does resolve a difference of one HMAC.
    assert medians["two tokens"] > medians["0 right"] * (1 + TOLERANCE), medians
