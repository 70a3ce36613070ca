"""Retrying model requests: exponential backoff with jitter on transient failures only."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import openai

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
"""Besides every 5xx: request timeout, conflict, too early, rate limited."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure (429, 5xx, connection error, timeout)."""

    max_retries: int = 4
    """Retries after the first try (0 disables retrying)."""
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 20.0

    def delay(self, retry_index: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `retry_index` (0-based): half fixed, half random."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0**retry_index)
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_backoff_s))
        return wait


def status_code(exc: BaseException) -> int | None:
    """The HTTP status an API error carries (openai's and litellm's errors both have `status_code`)."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: connection problems, timeouts, 429 and 5xx answers."""
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | TimeoutError):
        return True
    code = status_code(exc)
    return code is not None and (code in RETRYABLE_STATUS or code >= 500)


def _retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class RetriesExhausted(Exception):
    """Every try failed with a transient error; `last` is the final one."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"{attempts} tries failed; last error: {last}")
        self.attempts = attempts
        self.last = last


async def call_with_retries(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str = "model request"
) -> T:
    """Await `call()`, retrying transient failures per `policy`.

    Non-transient errors propagate at once; when the tries run out, `RetriesExhausted` wraps the last error.
    """
    retry_index = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if retry_index >= policy.max_retries:
                raise RetriesExhausted(retry_index + 1, exc) from exc
            wait = policy.delay(retry_index, _retry_after_s(exc))
            retry_index += 1
            logger.warning(
                "%s failed (%s: %s); retry %d of %d in %.1f s",
                what,
                type(exc).__name__,
                exc,
                retry_index,
                policy.max_retries,
                wait,
            )
            await asyncio.sleep(wait)
