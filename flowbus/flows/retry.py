"""Retry delays: exponential backoff with jitter, capped by the step's policy."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from flowbus.flows.model import RetryPolicy


def next_delay(policy: RetryPolicy, attempt: int, *, rng: Any = random) -> timedelta:
    """Delay before the try that follows failed try number ``attempt`` (1-based).

    The base delay doubles with each failure (``backoff``, 2×, 4×…) and is capped at
    ``max_backoff``; the result is drawn in [base/2, base] ("equal jitter") so that documents
    failing together against the same outside system do not all retry at the same instant.
    """
    attempt = max(1, int(attempt))
    base = policy.backoff.total_seconds() * (2 ** min(attempt - 1, 62))
    cap = policy.max_backoff.total_seconds()
    base = min(base, cap)
    seconds = base / 2 + rng.uniform(0, base / 2)
    return timedelta(seconds=min(seconds, cap))
