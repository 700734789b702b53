"""The one door to the chain: a deadline on every call and bounded retries on reads.

Half-dead websockets hang without an error, so no chain call may wait forever. Writes are not retried
here: a weight set that timed out may still land, and the weight setter decides what to do next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from validator.chain.port import Chain, Neuron, RawCommitment, WeightSetResult

log = structlog.get_logger(__name__)

T = TypeVar("T")


class ChainUnavailable(RuntimeError):
    """The chain did not answer within the deadline after every retry."""


class ChainFacade:
    """Wraps a :class:`Chain` adapter with deadlines and retries."""

    def __init__(
        self, chain: Chain, *, timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 1.0
    ) -> None:
        self._chain = chain
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s

    async def block(self) -> int:
        """Current block."""
        return await self._read("block", self._chain.block)

    async def neurons(self, netuid: int) -> list[Neuron]:
        """Registered neurons of ``netuid``."""
        return await self._read("neurons", lambda: self._chain.neurons(netuid))

    async def commitments(self, netuid: int) -> list[RawCommitment]:
        """Raw commitments of ``netuid``."""
        return await self._read("commitments", lambda: self._chain.commitments(netuid))

    async def set_weights(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """One attempt to set weights; a timeout becomes an unsuccessful result, not an exception."""
        try:
            return await asyncio.wait_for(
                self._chain.set_weights(netuid, weights, version_key), timeout=self._timeout_s
            )
        except TimeoutError:
            return WeightSetResult(False, f"set_weights timed out after {self._timeout_s:.0f}s", -1)

    async def close(self) -> None:
        """Close the adapter, bounded by the same deadline."""
        try:
            await asyncio.wait_for(self._chain.close(), timeout=self._timeout_s)
        except TimeoutError:
            log.warning("chain close timed out")

    async def _read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        last: BaseException | None = None
        for attempt in range(self._retries + 1):
            try:
                return await asyncio.wait_for(call(), timeout=self._timeout_s)
            except (TimeoutError, ConnectionError, OSError) as exc:
                last = exc
                log.warning("chain read failed", call=what, attempt=attempt + 1, error=repr(exc))
                if attempt < self._retries:
                    await asyncio.sleep(self._backoff_s * 2**attempt)
        raise ChainUnavailable(f"chain {what} failed {self._retries + 1} times: {last!r}")
