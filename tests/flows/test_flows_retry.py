"""Retry delays: exponential, jittered within [base/2, base], capped by max_backoff."""

from __future__ import annotations

import random
from datetime import timedelta

from flowbus.flows.model import RetryPolicy
from flowbus.flows.retry import next_delay


class Fixed:
    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


POLICY = RetryPolicy(attempts=10, backoff=timedelta(seconds=10), max_backoff=timedelta(minutes=5))


def test_doubles_each_attempt_at_the_top_of_the_jitter() -> None:
    delays = [next_delay(POLICY, n, rng=Fixed(1.0)).total_seconds() for n in range(1, 7)]
    assert delays == [10, 20, 40, 80, 160, 300]


def test_bottom_of_the_jitter_is_half_the_base() -> None:
    assert [next_delay(POLICY, n, rng=Fixed(0.0)).total_seconds() for n in (1, 2, 3)] == [5, 10, 20]


def test_random_jitter_stays_in_bounds_and_spreads() -> None:
    rng = random.Random(42)
    for attempt in range(1, 12):
        base = min(10 * 2 ** (attempt - 1), 300)
        seen = {next_delay(POLICY, attempt, rng=rng).total_seconds() for _ in range(200)}
        assert min(seen) >= base / 2 and max(seen) <= base
        assert len(seen) > 100  # really jittered


def test_huge_attempt_numbers_are_capped_not_overflowing() -> None:
    assert next_delay(POLICY, 10_000, rng=Fixed(1.0)) == timedelta(minutes=5)


def test_attempt_below_one_is_treated_as_the_first() -> None:
    assert next_delay(POLICY, 0, rng=Fixed(1.0)) == timedelta(seconds=10)
