"""The one door to the chain: a deadline on every call and bounded retries on reads.

Half-dead websockets hang without an error, so no chain call may wait forever. Writes are not retried
here: a weight set that timed out may still land, and the weight setter decides what to do next.

The facade's deadline is the outer one: it must be longer than the adapter's own (its
``deadline_s``), so that on a hung connection the adapter times out first, drops the connection and
the next try runs on a fresh one. :func:`nested_timeout` gives the facade deadline for an adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from validator.chain.port import (
    Chain,
    ChainError,
    Hyperparameters,
    Neuron,
    RawCommitment,
    Refusal,
    RuntimeInfo,
    WeightSetResult,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEADLINE_MARGIN_S = 2.0
"""How much longer the facade waits than the adapter's worst case, so the adapter always ends first."""


def nested_timeout(adapter_deadline_s: float) -> float:
    """The facade deadline for an adapter whose one call takes at most ``adapter_deadline_s``."""
    return adapter_deadline_s + DEADLINE_MARGIN_S


class ChainUnavailable(ChainError):
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

    async def hyperparameters(self, netuid: int) -> Hyperparameters:
        """Subnet hyperparameters the weight setter needs."""
        return await self._read("hyperparameters", lambda: self._chain.hyperparameters(netuid))

    async def current_weights(self, netuid: int) -> dict[int, float]:
        """This validator's weights now on chain, summing to 1; ``{}`` if none."""
        return await self._read("current_weights", lambda: self._chain.current_weights(netuid))

    async def last_weights_block(self, netuid: int) -> int | None:
        """Block of this validator's last weight set, ``None`` if never."""
        return await self._read("last_weights_block", lambda: self._chain.last_weights_block(netuid))

    async def block_hash(self, block: int) -> str:
        """Hash of ``block``."""
        return await self._read("block_hash", lambda: self._chain.block_hash(block))

    async def own_hotkey(self) -> str:
        """The hotkey the adapter signs with."""
        return await self._read("own_hotkey", self._chain.own_hotkey)

    async def revealed_round(self) -> int | None:
        """The newest drand round the chain has stored (None without drand)."""
        return await self._read("revealed_round", self._chain.revealed_round)

    async def runtime_info(self, netuid: int) -> RuntimeInfo:
        """The runtime's version and the weight-path storage it lacks."""
        return await self._read("runtime_info", lambda: self._chain.runtime_info(netuid))

    @property
    def timeout_s(self) -> float:
        """This facade's deadline for one call."""
        return self._timeout_s

    async def commit_own(self, netuid: int, value: str) -> int:
        """Commit ``value`` for the adapter's own hotkey; one attempt under the deadline.

        Not retried: a commit that timed out may still land, and a second one would cost another
        deposit. Raises :class:`ChainUnavailable` on a timeout or lost connection; the adapter's own
        error when the chain refuses.
        """
        try:
            return await asyncio.wait_for(self._chain.commit_own(netuid, value), timeout=self._timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            raise ChainUnavailable(
                f"commit did not complete within {self._timeout_s:.0f}s ({exc!r}); it may still land:"
                " read the commitments back before trying again"
            ) from exc

    async def set_weights(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """One attempt to set weights; a timeout becomes an unsuccessful result, not an exception."""
        try:
            return await asyncio.wait_for(
                self._chain.set_weights(netuid, weights, version_key), timeout=self._timeout_s
            )
        except TimeoutError:
            return WeightSetResult(
                False, f"set_weights timed out after {self._timeout_s:.0f}s", -1, refusal=Refusal.TRANSIENT
            )
        except (ConnectionError, OSError) as exc:
            # The adapter dropped its client; the weight setter retries on a fresh one.
            return WeightSetResult(
                False, f"set_weights lost the chain connection: {exc!r}", -1, refusal=Refusal.CONNECTION
            )

    async def reconnect(self) -> None:
        """Drop the adapter's connection; its next call opens a fresh one (the watchdog's remedy)."""
        await self.close()

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
