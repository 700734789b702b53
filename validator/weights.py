"""Scores to weights: the subnet's weight policy as pure functions, no I/O.

The caller gathers one :class:`Standing` per registered uid (its current submission, the scores of that
submission's valid evaluations and its content fingerprints) and calls :func:`compute_weights` with a
:class:`WeightPolicy` and the hotkey that led the last weight set. The rules, in order:

1. **Smoothing.** A submission's score is the exponential moving average of its evaluations, oldest first:
   ``s = x0; s = smoothing * x + (1 - smoothing) * s`` for each later ``x``. One noisy judge run moves it
   only part of the way. Scores are clamped to 0-100; NaN and infinities count as 0.
2. **Copies.** Two hotkeys whose submissions share any fingerprint (see :mod:`evaluation.fingerprint`)
   are the same model: only the earliest commitment (lowest ``commit_block``, then lowest uid) may earn.
   A copy earns nothing even with a higher score, and even while the original has no evaluation yet.
   The earliest commitment is the earliest *ever seen*: ``history`` (every evaluated submission the
   validator has kept, with its block) counts too, so a copy of a model whose miner has since
   deregistered, or has moved on to another revision, is still a copy.
3. **Eligibility.** A uid is eligible when it has at least one valid evaluation, is not a copy, and its
   smoothed score is strictly above ``baseline``. Everyone else gets nothing.
4. **Leader.** The eligible uid with the highest smoothed score, ties going to the earlier commitment and
   then the lower uid. But when the previous leader's hotkey is still eligible, it keeps the top unless
   the best challenger's smoothed score exceeds its own by *more than* ``leader_margin``: judge noise
   alone cannot flip the top back and forth.
5. **Shares.** The leader gets ``leader_share``; the other eligible uids share ``1 - leader_share`` in
   proportion to their smoothed scores. A lone eligible leader gets 1.0. ``leader_share`` is at least 0.5,
   so the leader always has the largest weight.
6. **Nobody eligible.** ``burn_uid`` gets 1.0 when set; otherwise :class:`WeightsNotReady` is raised and
   the caller leaves the chain untouched (never a vector of zeros).

The result is independent of the order of the input. Worked example, with ``smoothing=0.5,
leader_margin=1.0, leader_share=0.8, baseline=10``:

======  ======  =====  ==========  ===========  ==================================
uid     hotkey  block  scores      smoothed     outcome
======  ======  =====  ==========  ===========  ==================================
1       A       100    60, 70      65.0         leader (held: 66.0 - 65.0 <= 1.0)
2       B       120    66          66.0         0.2 * 66 / 106 = 0.1245
3       C       130    50, 30      40.0         0.2 * 40 / 106 = 0.0755
4       D       150    80          (80.0)       copy of uid 1 (same fingerprint): 0
5       E       90     8           8.0          not above baseline 10: 0
6       F       95     (none)      -            no valid evaluation: 0
======  ======  =====  ==========  ===========  ==================================

With ``previous_leader="A"`` uid 1 keeps the top with 0.8. Without a previous leader uid 2 (66.0) leads
with 0.8, and uids 1 and 3 share 0.2 as 65/105 and 40/105 (0.1238 and 0.0762).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

# Scores are on the benchmark's 0-100 scale; anything outside is a bug upstream and must not dominate.
SCORE_MIN = 0.0
SCORE_MAX = 100.0

_V = TypeVar("_V")


class WeightsNotReady(ValueError):
    """There is nothing sound to put on chain yet; the reason says why."""


@dataclass(frozen=True)
class Standing:
    """One registered uid's current submission, as the weight policy sees it.

    ``scores`` are the 0-100 scores of this submission's valid evaluations, oldest first; ``()`` means no
    valid evaluation yet. ``fingerprints`` are its content/weights fingerprints; a fingerprint shared with
    another hotkey's earlier commitment marks this submission as a copy.
    """

    uid: int
    hotkey: str
    commit_block: int
    scores: tuple[float, ...]
    fingerprints: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WeightPolicy:
    """The knobs of :func:`compute_weights`; invalid combinations are refused at construction."""

    smoothing: float = 0.5  # EMA factor for the newest evaluation (1.0 = newest only)
    leader_margin: float = 1.0  # points (0-100 scale) a challenger must exceed the leader by
    leader_share: float = 0.8  # weight of the top miner; the rest is shared by the others
    baseline: float = 0.0  # smoothed score a miner must exceed to earn anything
    burn_uid: int | None = None  # receives everything when nobody exceeds the baseline

    def __post_init__(self) -> None:
        if not (math.isfinite(self.smoothing) and 0.0 < self.smoothing <= 1.0):
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")
        if not (math.isfinite(self.leader_margin) and self.leader_margin >= 0.0):
            raise ValueError(f"leader_margin must be >= 0, got {self.leader_margin}")
        # Below 0.5 a lone challenger could out-earn the leader, which defeats the point of a leader.
        if not (math.isfinite(self.leader_share) and 0.5 <= self.leader_share <= 1.0):
            raise ValueError(f"leader_share must be in [0.5, 1], got {self.leader_share}")
        if not (math.isfinite(self.baseline) and SCORE_MIN <= self.baseline < SCORE_MAX):
            raise ValueError(f"baseline must be in [0, 100), got {self.baseline}")
        if self.burn_uid is not None and self.burn_uid < 0:
            raise ValueError(f"burn_uid must be a uid (>= 0), got {self.burn_uid}")


@dataclass(frozen=True)
class WeightDecision:
    """A weight vector and why it looks the way it does.

    ``weights`` holds only positive weights (uid -> weight, summing to 1). ``leader`` is the top uid, None
    when everything went to the burn uid; ``leader_hotkey`` is what the caller keeps and passes back as
    ``previous_leader`` next time. ``reasons`` explains every standing's (and the burn uid's) outcome for
    logs and the status command.
    """

    weights: dict[int, float]
    leader: int | None
    reasons: dict[int, str]
    leader_hotkey: str | None = None


def clean_score(score: float) -> float:
    """One evaluation's score as the policy counts it: clamped to 0-100, non-finite as 0."""
    if not math.isfinite(score):
        return SCORE_MIN
    return min(max(score, SCORE_MIN), SCORE_MAX)


def smoothed(scores: Sequence[float], smoothing: float) -> float:
    """Exponential moving average of ``scores`` (oldest first), ``smoothing`` weighting the newest.

    The first score seeds the average, so a single evaluation counts fully; ``()`` gives 0.0. Each score
    goes through :func:`clean_score` first.
    """
    if not (0.0 < smoothing <= 1.0):
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    if not scores:
        return 0.0
    value = clean_score(scores[0])
    for score in scores[1:]:
        value = smoothing * clean_score(score) + (1.0 - smoothing) * value
    return value


FingerprintHistory = Mapping[str, Mapping[str, int]]
"""fingerprint -> hotkey -> block of that hotkey's earliest commitment ever seen with the fingerprint."""


@dataclass(frozen=True)
class Original:
    """The earliest commitment of a fingerprint: its hotkey, block, and uid when registered now."""

    hotkey: str
    block: int
    uid: int | None

    def describe(self) -> str:
        """How a copy's reason names its original."""
        if self.uid is not None:
            return f"uid {self.uid} (hotkey {self.hotkey}, earlier commitment)"
        return f"hotkey {self.hotkey}'s commitment at block {self.block} (no longer registered)"


def copies(standings: Sequence[Standing], history: FingerprintHistory | None = None) -> set[int]:
    """Uids whose fingerprint matches an earlier commitment of another hotkey.

    "Earlier" orders by ``commit_block``, then uid (registered before deregistered, then hotkey).
    Every standing owns its fingerprints, evaluated or not, so a copy cannot earn while the original
    waits for its evaluation; ``history`` adds every commitment seen before.
    """
    return set(_copy_of(standings, history or {}))


def compute_weights(
    standings: Sequence[Standing],
    policy: WeightPolicy,
    previous_leader: str | None,
    history: FingerprintHistory | None = None,
) -> WeightDecision:
    """Apply the module's policy to one standing per registered uid; see the module docstring.

    ``previous_leader`` is the hotkey that led the last weight set (None at first start); ``history``
    the fingerprints of every submission seen so far (see :data:`FingerprintHistory`). Raises
    :class:`WeightsNotReady` when nobody is eligible and no burn uid is configured, and ``ValueError``
    when a uid appears twice.
    """
    ordered = sorted(standings, key=lambda s: (s.commit_block, s.uid))
    uids = [s.uid for s in ordered]
    if len(set(uids)) != len(uids):
        raise ValueError("each uid may appear only once among the standings")

    copy_of = _copy_of(ordered, history or {})
    reasons: dict[int, str] = {}
    score_of: dict[int, float] = {}
    eligible: list[Standing] = []
    for standing in ordered:
        uid = standing.uid
        if uid in copy_of:
            reasons[uid] = f"copy of {copy_of[uid].describe()}: nothing"
            continue
        if not standing.scores:
            reasons[uid] = "no valid evaluation: nothing"
            continue
        value = smoothed(standing.scores, policy.smoothing)
        score_of[uid] = value
        if value <= policy.baseline:
            reasons[uid] = f"smoothed {value:.2f} not above baseline {policy.baseline:.2f}: nothing"
            continue
        eligible.append(standing)

    if not eligible:
        if policy.burn_uid is None:
            raise WeightsNotReady(
                f"no eligible miner among {len(ordered)} standings "
                f"({sum(1 for s in ordered if s.scores)} evaluated, {len(copy_of)} copies, "
                f"baseline {policy.baseline:.2f}) and no burn uid"
            )
        reasons[policy.burn_uid] = f"burn: nobody above baseline {policy.baseline:.2f}"
        return WeightDecision({policy.burn_uid: 1.0}, None, _sorted(reasons))

    # Highest smoothed score first; ties to the earlier commitment, then the lower uid.
    ranked = sorted(eligible, key=lambda s: (-score_of[s.uid], s.commit_block, s.uid))
    best = ranked[0]
    leader = best
    leader_note = f"leader: smoothed {score_of[best.uid]:.2f} over {len(best.scores)} evaluation(s)"
    incumbent = next((s for s in ranked if s.hotkey == previous_leader), None)
    if incumbent is not None and incumbent is not best:
        gap = score_of[best.uid] - score_of[incumbent.uid]
        if score_of[best.uid] > score_of[incumbent.uid] + policy.leader_margin:
            leader_note += (
                f", took the top from uid {incumbent.uid} by {gap:.2f} > margin {policy.leader_margin:.2f}"
            )
        else:
            leader = incumbent
            leader_note = (
                f"leader: smoothed {score_of[incumbent.uid]:.2f}, held against uid {best.uid} "
                f"({gap:.2f} ahead, not more than margin {policy.leader_margin:.2f})"
            )
    elif incumbent is None and previous_leader is not None:
        leader_note += f", previous leader {previous_leader} no longer eligible"

    others = [s for s in ranked if s is not leader]
    weights: dict[int, float] = {}
    if not others:
        weights[leader.uid] = 1.0
        reasons[leader.uid] = leader_note + ": only eligible miner, 1.0"
    else:
        weights[leader.uid] = policy.leader_share
        reasons[leader.uid] = leader_note + f": {policy.leader_share:.4f}"
        rest = 1.0 - policy.leader_share
        total = math.fsum(score_of[s.uid] for s in others)
        for standing in others:
            share = rest * score_of[standing.uid] / total
            if share > 0.0:
                weights[standing.uid] = share
            reasons[standing.uid] = (
                f"runner-up: smoothed {score_of[standing.uid]:.2f}, {share:.4f} of the remainder"
            )
    return WeightDecision(_sorted(weights), leader.uid, _sorted(reasons), leader.hotkey)


def weights_from_scores(scores: Mapping[int, float], registered_uids: set[int]) -> dict[int, float]:
    """The simple proportional rule, kept only until the service switches to :func:`compute_weights`.

    Normalises the non-negative scores of registered uids to weights summing to 1. Scores of uids no
    longer registered are dropped; NaN and negative scores count as 0. Raises ``WeightsNotReady`` when no
    registered uid has a positive score. No smoothing, leader, copy detection or burn.
    """
    clean = {
        uid: (score if math.isfinite(score) and score > 0 else 0.0)
        for uid, score in scores.items()
        if uid in registered_uids
    }
    total = sum(clean.values())
    if total <= 0:
        raise WeightsNotReady(
            f"no positive score among {len(clean)} scored of {len(registered_uids)} registered uids"
        )
    return {uid: score / total for uid, score in sorted(clean.items()) if score > 0}


def _copy_of(standings: Sequence[Standing], history: FingerprintHistory) -> dict[int, Original]:
    """Copy uid -> the earliest other-hotkey commitment it shares a fingerprint with."""
    uid_of = {s.hotkey: s.uid for s in standings}
    # fingerprint -> hotkey -> earliest block that hotkey committed it (history, then the standings)
    first: dict[str, dict[str, int]] = {fp: dict(by_hotkey) for fp, by_hotkey in history.items()}
    for standing in standings:
        for fingerprint in standing.fingerprints:
            seen = first.setdefault(fingerprint, {})
            seen[standing.hotkey] = min(
                seen.get(standing.hotkey, standing.commit_block), standing.commit_block
            )

    def order(hotkey: str, block: int) -> tuple[int, int, int, str]:
        uid = uid_of.get(hotkey)
        return (block, 0 if uid is not None else 1, uid if uid is not None else 0, hotkey)

    found: dict[int, Original] = {}
    for standing in standings:
        earliest: tuple[tuple[int, int, int, str], Original] | None = None
        for fingerprint in standing.fingerprints:
            hotkey, block = min(first[fingerprint].items(), key=lambda item: order(*item))
            if hotkey == standing.hotkey:
                continue
            candidate = (order(hotkey, block), Original(hotkey, block, uid_of.get(hotkey)))
            if earliest is None or candidate[0] < earliest[0]:
                earliest = candidate
        if earliest is not None:
            found[standing.uid] = earliest[1]
    return found


def _sorted(mapping: dict[int, _V]) -> dict[int, _V]:
    return dict(sorted(mapping.items()))
