"""The retry schedule: doubling from 1 s, capped at 1 h, jittered, dead after the maximum age."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plivohook.forward.retry import RetryPolicy, backoff_ceiling, backoff_delay

T0 = datetime(2024, 5, 1, tzinfo=UTC)


class Extreme:
    """A random source that always draws one end of the range."""

    def __init__(self, high: bool):
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_the_ceiling_doubles_from_one_second_to_one_hour():
    assert [backoff_ceiling(n) for n in range(1, 14)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600,
    ]  # fmt: skip
    assert backoff_ceiling(10_000) == 3600
    with pytest.raises(ValueError, match="attempts"):
        backoff_ceiling(0)


def test_the_delay_spans_the_whole_window():
    assert backoff_delay(5, Extreme(high=False)) == 1
    assert backoff_delay(5, Extreme(high=True)) == 16
    assert backoff_delay(50, Extreme(high=True)) == 3600


@given(attempts=st.integers(1, 5000), seed=st.integers(0, 2**32))
def test_every_delay_is_within_base_and_ceiling(attempts, seed):
    delay = backoff_delay(attempts, random.Random(seed))
    assert 1 <= delay <= backoff_ceiling(attempts) <= 3600


def test_jitter_spreads_events_that_failed_together():
    rand = random.Random(42)
    delays = [backoff_delay(10, rand) for _ in range(1000)]
    assert len({round(d) for d in delays}) > 200  # not one herd
    assert min(delays) < 100
    assert max(delays) > 400


def test_the_same_seed_gives_the_same_schedule():
    assert [backoff_delay(n, random.Random(7)) for n in range(1, 20)] == [
        backoff_delay(n, random.Random(7)) for n in range(1, 20)
    ]


def test_dead_after_the_maximum_age_with_a_last_try_at_the_deadline():
    policy = RetryPolicy()
    assert policy.max_age == timedelta(days=3)
    late = T0 + timedelta(days=3) - timedelta(minutes=10)
    # The next try would fall after the deadline: it is pulled in to the deadline itself.
    assert policy.next_attempt(40, T0, late, Extreme(high=True)) == T0 + timedelta(days=3)
    assert policy.next_attempt(41, T0, T0 + timedelta(days=3), Extreme(high=True)) is None
    assert policy.next_attempt(3, T0, T0 + timedelta(seconds=5), Extreme(high=True)) == (
        T0 + timedelta(seconds=9)
    )


def test_a_whole_life_fits_the_numbers():
    policy = RetryPolicy()
    rand = random.Random(1)
    now, attempts = T0, 0
    while True:
        attempts += 1
        following = policy.next_attempt(attempts, T0, now, rand)
        if following is None:
            break
        assert following > now
        now = following
    assert now == T0 + timedelta(days=3)
    # 12 doublings, then about one try per half hour for three days.
    assert 100 < attempts < 200


def test_bad_numbers_are_refused():
    with pytest.raises(ValueError, match="max-age"):
        RetryPolicy(max_age=timedelta(0))
    with pytest.raises(ValueError, match="base"):
        RetryPolicy(base=10, cap=1)
