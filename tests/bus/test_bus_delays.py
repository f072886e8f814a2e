"""Pure parts of the bus: delay buckets (RabbitMQ TTL queues) and the failure backoff."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowbus.bus.base import backoff, delay_bucket_ms


@pytest.mark.parametrize(("delay", "bucket"), [
    (timedelta(microseconds=1), 1),
    (timedelta(milliseconds=20), 20),
    (timedelta(milliseconds=99), 99),
    (timedelta(milliseconds=100), 100),
    (timedelta(milliseconds=1234), 1300),
    (timedelta(seconds=30), 30_000),
    (timedelta(seconds=30, milliseconds=1), 31_000),
    (timedelta(minutes=15), 900_000),
    (timedelta(days=10), 870_000_000),
])
def test_delay_bucket_rounds_up_to_two_significant_digits(delay: timedelta, bucket: int) -> None:
    assert delay_bucket_ms(delay) == bucket
    assert bucket >= delay.total_seconds() * 1000  # never early
    assert bucket <= max(delay.total_seconds() * 1000 * 1.1, 1)  # late by at most 10 %


def test_few_buckets_per_decade() -> None:
    buckets = {delay_bucket_ms(timedelta(milliseconds=ms)) for ms in range(1000, 10_000)}
    assert buckets == {ms for ms in range(1000, 10_001, 100)}  # 91 queues cover 1 s to 10 s


def test_backoff_doubles_up_to_the_cap() -> None:
    base, cap = timedelta(seconds=5), timedelta(minutes=1)
    assert [backoff(n, base, cap).total_seconds() for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
