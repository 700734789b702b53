"""The daemon: supervised asyncio tasks for chain sync, evaluation and weight setting.

Each task is a loop that a supervisor restarts with backoff when it fails, so one bad iteration (a chain
hiccup, a full disk) never stops the validator. Only ``stop`` ends the tasks.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from evaluation.errors import InfrastructureError
from evaluation.pipeline import Pipeline
from evaluation.sandbox.port import Sandbox
from evaluation.types import SampleResult
from validator.chain.facade import ChainFacade, ChainUnavailable
from validator.chain.port import (
    BLOCKING_REFUSALS,
    Hyperparameters,
    Neuron,
    Refusal,
    RuntimeMismatchError,
    WeightSetResult,
)
from validator.commitments import submissions_from_chain
from validator.metrics import Metrics, ObservedProgress, error_kind
from validator.store import QueuedEvaluation, Store
from validator.weight_reveal import PendingReveal, RevealState, judge_reveal
from validator.weights import WeightPolicy, WeightsNotReady, compute_weights

log = structlog.get_logger(__name__)

MAX_RESTART_BACKOFF_S = 300.0


@dataclass(frozen=True)
class ServiceConfig:
    """The daemon's timing and policy knobs (taken from Settings by the composition root)."""

    netuid: int
    competitions: frozenset[str]
    version_key: int
    sync_interval_s: float
    weights_interval_s: float
    eval_workers: int
    max_attempts: int
    retry_backoff_s: float
    policy: WeightPolicy = field(default_factory=WeightPolicy)
    weights_dry_run: bool = False
    weights_retries: int = 3
    weights_retry_backoff_s: float = 5.0
    round_blocks: int = 360
    block_stall_s: float | None = None  # watchdog: no new block this long -> rebuild the chain client
    reveal_grace_blocks: int = 360  # a reveal not in force this long after its round is stored: failed


@dataclass(frozen=True)
class SyncReport:
    """What one read of the chain found."""

    block: int
    neurons: int
    queued: int
    rejected: int


class _StoreSink:
    """Saves each sample as soon as it is judged."""

    def __init__(self, store: Store, evaluation_id: int) -> None:
        self._store = store
        self._evaluation_id = evaluation_id

    async def sample(self, result: SampleResult) -> None:
        await asyncio.to_thread(self._store.save_sample, self._evaluation_id, result)


class ValidatorService:
    """Owns the long-running tasks and the state they share."""

    def __init__(
        self,
        config: ServiceConfig,
        store: Store,
        chain: ChainFacade,
        pipeline: Pipeline,
        *,
        metrics: Metrics | None = None,
        worker_sandboxes: Sequence[Sandbox] | None = None,
    ) -> None:
        """``worker_sandboxes``: one sandbox per evaluation worker (its GPU slot); None: ``eval_workers``
        workers on the pipeline's own sandbox. ``metrics`` None: counted in a registry nobody serves."""
        self._config = config
        self._metrics = metrics or Metrics()
        self._worker_sandboxes = list(worker_sandboxes) if worker_sandboxes else None
        self._store = store
        self._chain = chain
        self._pipeline = pipeline
        self._work = asyncio.Event()
        self._reported_rejections: set[tuple[str, str]] = set()
        self._last_sync_block = -1
        self._round: tuple[int, int] | None = None  # (start block, seed)
        self._own_hotkey: str | None = None
        self._own_state: dict[str, object] | None = None  # last recorded registration / permit
        self._blocked: tuple[str, str] | None = None  # (kind, message) while weights cannot land
        self._pending: PendingReveal | None = None
        self._pending_loaded = False

    @property
    def last_sync_block(self) -> int:
        """Block of the last successful chain sync (-1 before the first)."""
        return self._last_sync_block

    async def run(self, stop: asyncio.Event) -> None:
        """Run every task until ``stop`` is set, then cancel them and return."""
        requeued = await asyncio.to_thread(self._store.requeue_interrupted)
        if requeued:
            log.info("resuming interrupted evaluations", count=requeued)
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "chain-sync": self._sync_loop,
            "weights": self._weights_loop,
        }
        workers = len(self._worker_sandboxes) if self._worker_sandboxes else self._config.eval_workers
        for n in range(workers):
            loops[f"evaluator-{n}"] = functools.partial(self._worker_loop, n)
        stall_s = self._config.block_stall_s
        if stall_s is not None:
            loops["block-watchdog"] = lambda: watch_blocks(self._chain, stall_s)
        tasks = [asyncio.create_task(_supervise(name, loop), name=name) for name, loop in loops.items()]
        log.info("validator started", tasks=sorted(loops), netuid=self._config.netuid)
        try:
            await stop.wait()
        finally:
            await _cancel_all(tasks)
            log.info("validator stopped")

    # --- chain sync ----------------------------------------------------------------------------

    async def sync_once(self) -> SyncReport:
        """Read neurons and commitments once and queue every new valid submission."""
        block = await self._chain.block()
        neurons = await self._chain.neurons(self._config.netuid)
        await self._note_own_neuron(neurons)
        raw = await self._chain.commitments(self._config.netuid)
        submissions, rejected = submissions_from_chain(
            neurons, raw, allowed_competitions=self._config.competitions
        )
        for commitment, reason in rejected:
            key = (commitment.hotkey, commitment.value)
            if key not in self._reported_rejections:
                self._reported_rejections.add(key)
                log.warning(
                    "commitment rejected",
                    hotkey=commitment.hotkey,
                    block=commitment.block,
                    value=commitment.value[:160],
                    reason=reason,
                )
        queued = 0
        for submission in submissions:
            _, created = await asyncio.to_thread(self._store.record_submission, submission)
            if created:
                queued += 1
                log.info(
                    "submission queued",
                    uid=submission.uid,
                    hotkey=submission.hotkey,
                    repo=submission.repo_id,
                    revision=submission.short_revision,
                    block=submission.block,
                )
        if queued:
            self._work.set()
        self._metrics.chain_block.set(block)
        self._metrics.queue_length.set(await asyncio.to_thread(self._store.pending_count))
        self._last_sync_block = block
        return SyncReport(block=block, neurons=len(neurons), queued=queued, rejected=len(rejected))

    async def _note_own_neuron(self, neurons: Sequence[Neuron]) -> None:
        """Record this validator's registration, permit and stake; warn when its weights would not count.

        Logged when it changes (so at start, and again only when the chain changes), and kept in the
        store for the status command.
        """
        if self._own_hotkey is None:
            self._own_hotkey = await self._chain.own_hotkey()
        hotkey = self._own_hotkey
        mine = next((n for n in neurons if n.hotkey == hotkey), None)
        state: dict[str, object] = {"hotkey": hotkey, "netuid": self._config.netuid}
        if mine is None:
            state.update(registered=False)
            self._metrics.validator_permit.set(-1)
        else:
            state.update(registered=True, uid=mine.uid, permit=mine.validator_permit, stake=mine.stake)
            self._metrics.validator_permit.set(1 if mine.validator_permit else 0)
        if state == self._own_state:
            return
        self._own_state = state
        await asyncio.to_thread(self._store.set_fact, "validator", state)
        if mine is None:
            log.error(
                "validator hotkey is not registered on the subnet: no weight set can land",
                hotkey=hotkey,
                netuid=self._config.netuid,
            )
        elif not mine.validator_permit:
            log.warning(
                "validator hotkey holds no validator permit: its weights would not count (the chain"
                " refuses them) until it has enough stake for a permit",
                hotkey=hotkey,
                uid=mine.uid,
                stake=mine.stake,
            )
        else:
            log.info("validator hotkey registered with a validator permit", uid=mine.uid, stake=mine.stake)

    async def _sync_loop(self) -> None:
        while True:
            try:
                report = await self.sync_once()
            except RuntimeMismatchError as exc:
                # Retrying cannot help; one line per change, not a restart loop.
                await self._note_blocked(Refusal.RUNTIME.value, str(exc), -1)
            else:
                log.debug("chain synced", block=report.block, neurons=report.neurons, queued=report.queued)
            await asyncio.sleep(self._config.sync_interval_s)

    # --- evaluation ----------------------------------------------------------------------------

    async def evaluate_next(self, worker: int = 0) -> bool:
        """Evaluate the next due submission, if any, on ``worker``'s sandbox; whether one was taken."""
        claim = await asyncio.to_thread(self._store.claim_next)
        if claim is None:
            return False
        sub = claim.submission
        sandbox = self._worker_sandboxes[worker] if self._worker_sandboxes else None
        metrics = self._metrics
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(
            uid=sub.uid, hotkey=sub.hotkey, repo=sub.repo_id, revision=sub.short_revision, worker=worker
        ):
            log.info("evaluation started", attempt=claim.attempt, samples=self._pipeline.sample_count)
            try:
                # A resumed evaluation keeps the seed it began with: same items, whatever the round now.
                seed = claim.round_seed if claim.round_seed is not None else await self.round_seed()
            except ChainUnavailable as exc:
                # Nothing was tried: a chain outage must not use up the miner's attempts.
                log.warning("evaluation postponed: the round seed needs the chain", error=str(exc))
                not_before = time.time() + self._config.sync_interval_s
                await asyncio.to_thread(self._store.release, claim, not_before)
                return True
            metrics.evaluations_started.inc()
            metrics.evaluations_in_progress.inc()
            try:
                done = await self._plan(claim, seed)
                sink = _StoreSink(self._store, claim.evaluation_id)
                progress = ObservedProgress(metrics, worker)
                result = await self._pipeline.evaluate(
                    sub, sink, seed=seed, progress=progress, sandbox=sandbox, done=done
                )
            except asyncio.CancelledError:
                # Shutting down: leave it 'running'; the next start puts it back in the queue.
                raise
            except Exception as exc:  # our side failed: retry later instead of scoring the miner
                metrics.evaluation_finished("failed", time.monotonic() - started, type(exc).__name__)
                await self._retry_later(claim, exc)
                return True
            finally:
                metrics.evaluations_in_progress.dec()
            await asyncio.to_thread(self._store.finish_evaluation, claim, result)
            outcome = "evaluated" if result.ok else "rejected"
            metrics.evaluation_finished(outcome, time.monotonic() - started, error_kind(result.error))
            metrics.queue_length.set(await asyncio.to_thread(self._store.pending_count))
        return True

    async def _plan(self, claim: QueuedEvaluation, seed: int) -> dict[tuple[str, str], SampleResult]:
        """Store the evaluation's seed and items before any request; return the samples already answered
        by an earlier, interrupted run of it (which are not asked again)."""
        items = await asyncio.to_thread(self._pipeline.round_items, seed)
        keys = [(subset, item.item_id) for subset, pool in items.items() for item in pool]
        done = await asyncio.to_thread(self._store.plan_evaluation, claim.evaluation_id, seed, keys)
        if claim.round_seed is not None:
            left = len(keys) - len(done)
            log.info("evaluation resumed", seed=seed, samples_done=len(done), samples_left=left)
        return done

    async def round_seed(self) -> int:
        """The seed of the current evaluation round: from the hash of the round's first block.

        Every validator and every miner evaluated in the round gets the same items; nobody can know
        them before that block exists, and the next round draws new ones.
        """
        block = await self._chain.block()
        start = block - block % self._config.round_blocks
        if self._round is None or self._round[0] != start:
            digest = await self._chain.block_hash(start)
            material = f"voice-validator:{self._config.netuid}:{digest}".encode()
            # 63 bits: fits SQLite's signed integers and numpy's seed range.
            seed = int(hashlib.sha256(material).hexdigest(), 16) % 2**63
            self._round = (start, seed)
            log.info("evaluation round", start_block=start, block_hash=digest, seed=seed)
        return self._round[1]

    async def _retry_later(self, claim: QueuedEvaluation, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, InfrastructureError):
            log.exception("evaluation crashed", error=error)
        retry_at = None
        if claim.attempt < self._config.max_attempts:
            retry_at = time.time() + self._config.retry_backoff_s * 2 ** (claim.attempt - 1)
        log.warning(
            "evaluation failed on our side",
            error=error,
            attempt=claim.attempt,
            retry_in_s=None if retry_at is None else round(retry_at - time.time()),
        )
        await asyncio.to_thread(self._store.fail_evaluation, claim, error, retry_at)

    async def _worker_loop(self, worker: int = 0) -> None:
        while True:
            if not await self.evaluate_next(worker):
                self._work.clear()
                try:
                    # Woken early by a sync that queued work; the timeout catches retries coming due.
                    await asyncio.wait_for(self._work.wait(), timeout=self._config.sync_interval_s)
                except TimeoutError:
                    pass

    # --- weights -------------------------------------------------------------------------------

    async def set_weights_once(self) -> WeightSetResult | None:
        """Compute weights from the stored standings and set them, within the chain's rate limit.

        Returns None, leaving the chain untouched, when the inputs are not ready (no sync yet, nobody
        eligible), when the rate limit has not passed, or in a dry run.
        """
        if self._last_sync_block < 0:
            log.info("weights wait for the first chain sync")
            return None
        await self.follow_reveal()
        netuid = self._config.netuid
        neurons = await self._chain.neurons(netuid)
        standings = await asyncio.to_thread(self._store.standings, neurons)
        if not any(st.scores for st in standings):
            # Nothing evaluated yet (a fresh start): even a burn would only say "no data".
            log.info("weights not set: nothing evaluated yet, chain left untouched")
            self._metrics.weight_sets.labels(outcome="not_ready").inc()
            return None
        previous = await asyncio.to_thread(self._store.last_weight_set)
        fingerprints = {fp for st in standings for fp in st.fingerprints}
        history = await asyncio.to_thread(self._store.fingerprint_history, fingerprints)
        try:
            decision = compute_weights(
                standings, self._config.policy, previous.leader if previous else None, history
            )
        except WeightsNotReady as exc:
            log.info("weights not set: chain left untouched", reason=str(exc))
            self._metrics.weight_sets.labels(outcome="not_ready").inc()
            return None
        leader = decision.leader_hotkey
        shown = {uid: round(w, 4) for uid, w in decision.weights.items()}
        if self._config.weights_dry_run:
            block = await self._chain.block()
            log.info(
                "dry run: weights computed, not submitted",
                weights=shown,
                leader=decision.leader,
                reasons=decision.reasons,
            )
            await asyncio.to_thread(
                self._store.record_weight_set,
                block,
                decision.weights,
                False,
                "dry run",
                leader=leader,
                dry_run=True,
            )
            self._metrics.weight_sets.labels(outcome="dry_run").inc()
            return None
        hyper = await self._chain.hyperparameters(self._config.netuid)
        if not await self._rate_limit_passed(hyper):
            self._metrics.weight_sets.labels(outcome="rate_limited").inc()
            return None
        # The subnet may require a newer weights version than ours; sending less is refused on chain.
        result = await self._submit(decision.weights, max(self._config.version_key, hyper.version_key))
        kind = result.kind
        await asyncio.to_thread(
            self._store.record_weight_set,
            result.block,
            decision.weights,
            result.success,
            result.message,
            leader=leader,
            refusal=None if kind is None else kind.value,
        )
        self._metrics.weight_sets.labels(outcome="success" if kind is None else kind.value).inc()
        if kind is None:
            self._metrics.last_weights_block.set(result.block)
            log.info("weights set", block=result.block, weights=shown, leader=decision.leader)
            await self._note_blocked(None, "", result.block)
            await self._weights_landed(decision.weights, result)
        elif kind in BLOCKING_REFUSALS:
            await self._note_blocked(kind.value, result.message, result.block)
        else:
            log.warning("weight set refused", kind=kind.value, message=result.message, weights=shown)
        return result

    async def _note_blocked(self, kind: str | None, message: str, block: int) -> None:
        """Record (kind set) or clear (None) a refusal only the operator can cure.

        It is logged once when it appears or changes, not on every loop, and kept for the status command.
        """
        now = None if kind is None else (kind, message)
        self._metrics.weights_blocked.set(0 if now is None else 1)
        if now == self._blocked:
            return
        self._blocked = now
        if now is None:
            log.info("weights land again")
            await asyncio.to_thread(self._store.set_fact, "weights_blocked", None)
            return
        log.error("weights cannot land until the operator acts", kind=kind, reason=message)
        await asyncio.to_thread(
            self._store.set_fact, "weights_blocked", {"kind": kind, "message": message, "block": block}
        )

    async def _weights_landed(self, weights: dict[int, float], result: WeightSetResult) -> None:
        """A direct set is in force once included; a commit is followed until its reveal."""
        if result.reveal_round is None:
            self._pending = None
            self._pending_loaded = True
            self._metrics.weights_in_force.set(1)
            self._metrics.weights_reveal_pending.set(0)
            await asyncio.to_thread(
                self._store.set_fact, "weights", {"state": RevealState.IN_FORCE.value, "block": result.block}
            )
            return
        self._pending = PendingReveal(dict(weights), result.block, result.reveal_round)
        self._pending_loaded = True
        self._metrics.weights_in_force.set(0)
        self._metrics.weights_reveal_pending.set(1)
        await self._record_reveal(RevealState.PENDING, self._pending, None)

    async def _record_reveal(self, state: RevealState, pending: PendingReveal, revealed: int | None) -> None:
        fact: dict[str, object] = {"state": state.value, "revealed_round": revealed, **pending.to_json()}
        await asyncio.to_thread(self._store.set_fact, "weights", fact)

    async def follow_reveal(self) -> RevealState | None:
        """Check the last committed weight set against the chain: revealed and in force, still pending,
        or not revealed within the grace. None when nothing is pending."""
        if not self._pending_loaded:
            self._pending = await asyncio.to_thread(self._load_pending)
            self._pending_loaded = True
        pending = self._pending
        if pending is None:
            return None
        revealed = await self._chain.revealed_round()
        block = await self._chain.block()
        on_chain = None
        if revealed is not None and revealed >= pending.reveal_round:
            on_chain = await self._chain.current_weights(self._config.netuid)
        state, updated = judge_reveal(pending, revealed, on_chain, block, self._config.reveal_grace_blocks)
        if state is RevealState.PENDING:
            self._pending = updated
            if updated != pending:
                await self._record_reveal(state, updated, revealed)
            log.info(
                "weights committed, waiting for their reveal",
                reveal_round=pending.reveal_round,
                revealed_round=revealed,
                block=block,
            )
            return state
        self._pending = None
        self._metrics.weights_reveal_pending.set(0)
        await self._record_reveal(state, updated, revealed)
        if state is RevealState.IN_FORCE:
            self._metrics.weights_in_force.set(1)
            log.info(
                "committed weights revealed and in force", reveal_round=pending.reveal_round, block=block
            )
        else:
            self._metrics.weights_in_force.set(0)
            log.error(
                "committed weights were not revealed: the weights on chain are not the ones committed",
                reveal_round=pending.reveal_round,
                revealed_round=revealed,
                round_stored_at_block=updated.round_seen_block,
                block=block,
                on_chain={uid: round(w, 4) for uid, w in (on_chain or {}).items()},
            )
        return state

    def _load_pending(self) -> PendingReveal | None:
        """A reveal still pending when the validator last stopped (followed across restarts)."""
        fact = self._store.facts().get("weights")
        if not fact or fact.get("state") != RevealState.PENDING.value:
            return None
        try:
            return PendingReveal.from_json(fact)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("unreadable pending reveal in the store; not followed", error=str(exc))
            return None

    async def _rate_limit_passed(self, hyper: Hyperparameters) -> bool:
        """Whether the chain would accept a weight set now; waiting beats a refused extrinsic."""
        last = await self._chain.last_weights_block(self._config.netuid)
        block = await self._chain.block()
        self._metrics.chain_block.set(block)
        if last is not None:
            self._metrics.last_weights_block.set(last)
        if last is not None and block - last < hyper.weights_rate_limit:
            log.info(
                "weights wait for the chain's rate limit",
                block=block,
                next_allowed_block=last + hyper.weights_rate_limit,
            )
            return False
        return True

    async def _submit(self, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """Submit, with each kind of refusal handled on its own: a rate limit is waited for (not
        retried), a refusal only the operator can cure (or a refused vector) is returned at once, a lost
        connection rebuilds the client before the retry, anything else is retried with backoff."""
        result = WeightSetResult(False, "not attempted", -1)
        for attempt in range(self._config.weights_retries + 1):
            try:
                result = await self._chain.set_weights(self._config.netuid, weights, version_key)
            except ChainUnavailable as exc:
                result = WeightSetResult(False, str(exc), -1, refusal=Refusal.CONNECTION)
            except RuntimeMismatchError as exc:
                return WeightSetResult(False, str(exc), -1, refusal=Refusal.RUNTIME)
            kind = result.kind
            if kind is None or kind in BLOCKING_REFUSALS or kind in (Refusal.RATE_LIMITED, Refusal.INVALID):
                return result
            if kind is Refusal.CONNECTION:
                await self._chain.reconnect()
            if attempt < self._config.weights_retries:
                delay = self._config.weights_retry_backoff_s * 2**attempt
                log.warning(
                    "weight set failed; retrying",
                    message=result.message,
                    attempt=attempt + 1,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
        return result

    async def _weights_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.weights_interval_s)
            try:
                await self.set_weights_once()
            except RuntimeMismatchError as exc:
                await self._note_blocked(Refusal.RUNTIME.value, str(exc), -1)


async def watch_blocks(chain: ChainFacade, stall_s: float, poll_s: float | None = None) -> None:
    """Rebuild the chain connection whenever no new block has been seen for ``stall_s`` seconds.

    A half-dead websocket can keep answering with the last block it knew, or hang under every deadline;
    either way the block stops moving while the chain itself produces one every 12 s.
    """
    poll = poll_s if poll_s is not None else max(0.05, min(stall_s / 4, 30.0))
    last_block, last_change = -1, time.monotonic()
    while True:
        await asyncio.sleep(poll)
        try:
            block = await chain.block()
        except ChainUnavailable:
            block = last_block
        now = time.monotonic()
        if block != last_block:
            last_block, last_change = block, now
        elif now - last_change > stall_s:
            log.error(
                "no new block; rebuilding the chain connection",
                block=last_block,
                stalled_s=round(now - last_change),
            )
            await chain.reconnect()
            last_change = now


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A single cancel is not enough on Python 3.11: ``asyncio.wait_for`` drops a cancellation that arrives
    as its inner call completes (the chain facade wraps every call in it), and the loop then runs on, so
    a plain gather after one cancel can wait forever. Cancelling again each second until all are done
    makes shutdown certain.
    """
    pending = set(tasks)
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            log.warning("task survived cancellation; cancelling again", task=task.get_name())
            task.cancel()


async def _supervise(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run ``loop`` forever, restarting it with exponential backoff when it raises."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A loop that ran a while before failing starts its backoff afresh.
            failures = 1 if time.monotonic() - started > MAX_RESTART_BACKOFF_S else failures + 1
            delay = min(MAX_RESTART_BACKOFF_S, 2.0**failures)
            log.exception("task failed; restarting", task=name, failures=failures, restart_in_s=delay)
            await asyncio.sleep(delay)
