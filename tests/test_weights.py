"""Weight policy: table tests per rule, then property tests over random standings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from validator.weights import (
    Standing,
    WeightDecision,
    WeightPolicy,
    WeightsNotReady,
    clean_score,
    compute_weights,
    copies,
    smoothed,
    weights_from_scores,
)

DEFAULT = WeightPolicy()


def _s(
    uid: int, scores: tuple[float, ...], block: int | None = None, fps: set[str] | None = None
) -> Standing:
    """A standing whose hotkey is derived from the uid and whose block defaults to 100 + uid."""
    return Standing(
        uid=uid,
        hotkey=f"hk{uid}",
        commit_block=100 + uid if block is None else block,
        scores=scores,
        fingerprints=frozenset(fps or {f"own{uid}"}),
    )


# --- smoothing -----------------------------------------------------------------------------------------


def test_smoothing_math() -> None:
    assert smoothed([70.0], 0.5) == 70.0
    assert smoothed([60.0, 70.0], 0.5) == 65.0
    assert smoothed([10.0, 20.0, 30.0], 0.5) == 22.5  # 15 after two, then 0.5 * 30 + 0.5 * 15
    assert smoothed([10.0, 20.0, 30.0], 1.0) == 30.0
    assert smoothed([0.0, 100.0], 0.25) == 25.0
    assert smoothed([], 0.5) == 0.0


def test_bad_scores_count_as_zero_and_are_clamped() -> None:
    assert smoothed([float("nan")], 0.5) == 0.0
    assert smoothed([80.0, float("inf")], 0.5) == 40.0
    assert smoothed([-20.0, 500.0], 0.5) == 50.0
    assert clean_score(float("-inf")) == 0.0


@pytest.mark.parametrize("factor", [0.0, -0.1, 1.5, float("nan")])
def test_smoothing_factor_is_checked(factor: float) -> None:
    with pytest.raises(ValueError):
        smoothed([1.0], factor)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"smoothing": 0.0},
        {"leader_margin": -1.0},
        {"leader_share": 0.4},
        {"leader_share": 1.1},
        {"baseline": -1.0},
        {"baseline": 100.0},
        {"baseline": float("nan")},
        {"burn_uid": -1},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WeightPolicy(**kwargs)  # type: ignore[arg-type]


# --- the module docstring's worked example ---------------------------------------------------------------

EXAMPLE_POLICY = WeightPolicy(smoothing=0.5, leader_margin=1.0, leader_share=0.8, baseline=10.0)
EXAMPLE = [
    Standing(1, "A", 100, (60.0, 70.0), frozenset({"fa"})),
    Standing(2, "B", 120, (66.0,), frozenset({"fb"})),
    Standing(3, "C", 130, (50.0, 30.0), frozenset({"fc"})),
    Standing(4, "D", 150, (80.0,), frozenset({"fa", "fd"})),
    Standing(5, "E", 90, (8.0,), frozenset({"fe"})),
    Standing(6, "F", 95, (), frozenset()),
]


def test_worked_example_with_incumbent() -> None:
    decision = compute_weights(EXAMPLE, EXAMPLE_POLICY, previous_leader="A")
    assert decision.leader == 1
    assert decision.leader_hotkey == "A"
    assert decision.weights == pytest.approx({1: 0.8, 2: 0.2 * 66 / 106, 3: 0.2 * 40 / 106})
    assert set(decision.reasons) == {1, 2, 3, 4, 5, 6}
    assert "held against uid 2" in decision.reasons[1]
    assert "copy of uid 1" in decision.reasons[4]
    assert "baseline" in decision.reasons[5]
    assert "no valid evaluation" in decision.reasons[6]


def test_worked_example_without_incumbent() -> None:
    decision = compute_weights(EXAMPLE, EXAMPLE_POLICY, previous_leader=None)
    assert decision.leader == 2
    assert decision.weights == pytest.approx({2: 0.8, 1: 0.2 * 65 / 105, 3: 0.2 * 40 / 105})


# --- leader and margin -----------------------------------------------------------------------------------


def test_margin_holds_at_exactly_the_margin() -> None:
    standings = [_s(1, (50.0,)), _s(2, (51.0,))]
    decision = compute_weights(standings, WeightPolicy(leader_margin=1.0), previous_leader="hk1")
    assert decision.leader == 1
    assert decision.weights[1] == pytest.approx(0.8)


def test_challenger_beyond_margin_takes_over() -> None:
    standings = [_s(1, (50.0,)), _s(2, (51.5,))]
    decision = compute_weights(standings, WeightPolicy(leader_margin=1.0), previous_leader="hk1")
    assert decision.leader == 2
    assert decision.leader_hotkey == "hk2"
    assert "took the top from uid 1" in decision.reasons[2]


def test_smoothing_slows_a_single_lucky_run() -> None:
    """A leader with a steady record keeps the top against one spike from a challenger's history."""
    standings = [_s(1, (70.0, 70.0, 70.0)), _s(2, (60.0, 60.0, 85.0))]  # challenger smooths to 72.5
    decision = compute_weights(standings, WeightPolicy(leader_margin=3.0), previous_leader="hk1")
    assert decision.leader == 1


def test_ineligible_previous_leader_loses_the_top() -> None:
    standings = [_s(1, (5.0,)), _s(2, (30.0,)), _s(3, (20.0,))]
    decision = compute_weights(standings, WeightPolicy(baseline=10.0), previous_leader="hk1")
    assert decision.leader == 2
    assert 1 not in decision.weights
    assert "no longer eligible" in decision.reasons[2]


def test_previous_leader_unknown_hotkey_is_ignored() -> None:
    decision = compute_weights([_s(1, (10.0,)), _s(2, (20.0,))], DEFAULT, previous_leader="gone")
    assert decision.leader == 2


def test_tie_goes_to_earlier_commitment() -> None:
    standings = [_s(1, (50.0,), block=200), _s(2, (50.0,), block=150)]
    assert compute_weights(standings, DEFAULT, None).leader == 2


def test_tie_on_same_block_goes_to_lower_uid() -> None:
    standings = [_s(7, (50.0,), block=150), _s(3, (50.0,), block=150)]
    assert compute_weights(standings, DEFAULT, None).leader == 3


def test_lone_eligible_miner_gets_everything() -> None:
    decision = compute_weights([_s(1, (40.0,)), _s(2, ())], DEFAULT, None)
    assert decision.weights == {1: 1.0}
    assert decision.leader == 1


def test_winner_takes_all_omits_zero_weights() -> None:
    decision = compute_weights([_s(1, (40.0,)), _s(2, (30.0,))], WeightPolicy(leader_share=1.0), None)
    assert decision.weights == {1: 1.0}
    assert "runner-up" in decision.reasons[2]


# --- copies ----------------------------------------------------------------------------------------------


def test_copy_never_rewarded_even_with_higher_score() -> None:
    standings = [_s(1, (40.0,), fps={"w"}), _s(2, (90.0,), fps={"w", "code2"}), _s(3, (30.0,))]
    decision = compute_weights(standings, DEFAULT, None)
    assert 2 not in decision.weights
    assert decision.leader == 1
    assert copies(standings) == {2}


def test_copy_of_unevaluated_original_still_earns_nothing() -> None:
    standings = [_s(1, (), fps={"w"}), _s(2, (90.0,), fps={"w"})]
    with pytest.raises(WeightsNotReady):
        compute_weights(standings, DEFAULT, None)


def test_earliest_commitment_is_the_original_whatever_the_uid() -> None:
    standings = [_s(1, (90.0,), block=300, fps={"w"}), _s(9, (10.0,), block=200, fps={"w"})]
    assert copies(standings) == {1}
    assert compute_weights(standings, DEFAULT, None).weights == {9: 1.0}


def test_same_block_copy_goes_to_higher_uid() -> None:
    standings = [_s(4, (10.0,), block=200, fps={"w"}), _s(2, (10.0,), block=200, fps={"w"})]
    assert copies(standings) == {4}


def test_same_hotkey_is_not_its_own_copy() -> None:
    standings = [
        Standing(1, "same", 100, (10.0,), frozenset({"w"})),
        Standing(2, "same", 110, (20.0,), frozenset({"w"})),
    ]
    assert copies(standings) == set()


def test_copy_of_a_copy_names_the_earliest_original() -> None:
    standings = [
        _s(1, (10.0,), block=100, fps={"weights"}),
        _s(2, (10.0,), block=110, fps={"weights", "code2"}),
        _s(3, (10.0,), block=120, fps={"code2"}),
    ]
    assert copies(standings) == {2, 3}
    assert "copy of uid 1" in compute_weights(standings, DEFAULT, None).reasons[2]


def test_no_fingerprints_means_no_copy() -> None:
    assert copies([_s(1, (1.0,), fps=set()), _s(2, (1.0,), fps=set())]) == set()


# --- baseline, burn, not ready ---------------------------------------------------------------------------


def test_baseline_is_strict_and_burn_takes_all() -> None:
    policy = WeightPolicy(baseline=20.0, burn_uid=0)
    decision = compute_weights([_s(1, (20.0,)), _s(2, (10.0,))], policy, "hk1")
    assert decision.weights == {0: 1.0}
    assert decision.leader is None
    assert decision.leader_hotkey is None
    assert "burn" in decision.reasons[0]


def test_burn_unused_when_someone_is_above_baseline() -> None:
    policy = WeightPolicy(baseline=20.0, burn_uid=0)
    decision = compute_weights([_s(1, (20.5,)), _s(2, (10.0,))], policy, None)
    assert decision.weights == {1: 1.0}


@pytest.mark.parametrize(
    "standings",
    [[], [_s(1, ())], [_s(1, (0.0,))], [_s(1, (float("nan"),))], [_s(1, (5.0,))]],
)
def test_nobody_eligible_without_burn_is_not_ready(standings: list[Standing]) -> None:
    with pytest.raises(WeightsNotReady):
        compute_weights(standings, WeightPolicy(baseline=5.0), None)


def test_duplicate_uid_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="only once"):
        compute_weights([_s(1, (1.0,)), _s(1, (2.0,))], DEFAULT, None)


# --- the old proportional rule (until the service switches) ----------------------------------------------


def test_proportional_and_normalised() -> None:
    weights = weights_from_scores({0: 30.0, 1: 10.0}, {0, 1})
    assert weights == pytest.approx({0: 0.75, 1: 0.25})
    assert math.isclose(sum(weights.values()), 1.0)


def test_unregistered_uids_and_bad_scores_are_dropped() -> None:
    weights = weights_from_scores({0: 10.0, 1: float("nan"), 2: -5.0, 9: 99.0}, {0, 1, 2})
    assert weights == {0: 1.0}


@pytest.mark.parametrize("scores", [{}, {0: 0.0}, {0: float("nan")}, {5: 50.0}])
def test_nothing_positive_leaves_chain_untouched(scores: dict[int, float]) -> None:
    with pytest.raises(WeightsNotReady):
        weights_from_scores(scores, {0, 1})


# --- properties ------------------------------------------------------------------------------------------

BURN_UID = 255  # outside the generated uids, so "only eligible uids or the burn uid" stays checkable
_score = st.one_of(
    st.floats(min_value=0.0, max_value=100.0),
    st.sampled_from([0.0, 50.0, 100.0, float("nan"), float("inf"), -1.0, 150.0]),
)


@st.composite
def _standings(draw: st.DrawFn) -> list[Standing]:
    uids = draw(st.lists(st.integers(0, 40), unique=True, max_size=12))
    return [
        Standing(
            uid=uid,
            hotkey=f"hk{uid}",
            # Few distinct blocks, so ties on commit_block are common.
            commit_block=draw(st.integers(0, 5)),
            scores=tuple(draw(st.lists(_score, max_size=4))),
            # A small fingerprint pool makes shared fingerprints (copies) common.
            fingerprints=frozenset(draw(st.sets(st.sampled_from("abcdefgh"), max_size=2))),
        )
        for uid in uids
    ]


_policies = st.builds(
    WeightPolicy,
    smoothing=st.floats(min_value=0.01, max_value=1.0),
    leader_margin=st.floats(min_value=0.0, max_value=20.0),
    leader_share=st.floats(min_value=0.5, max_value=1.0),
    baseline=st.floats(min_value=0.0, max_value=60.0),
    burn_uid=st.sampled_from([None, BURN_UID]),
)


def _eligible(standings: list[Standing], policy: WeightPolicy) -> set[int]:
    """An independent restatement of the eligibility rule."""
    copied = copies(standings)
    return {
        s.uid
        for s in standings
        if s.scores and s.uid not in copied and smoothed(s.scores, policy.smoothing) > policy.baseline
    }


def _decide(standings: list[Standing], policy: WeightPolicy, previous: str | None) -> WeightDecision | None:
    try:
        return compute_weights(standings, policy, previous)
    except WeightsNotReady:
        return None


@settings(max_examples=400, deadline=None)
@given(standings=_standings(), policy=_policies, data=st.data())
def test_policy_properties(standings: list[Standing], policy: WeightPolicy, data: st.DataObject) -> None:
    # Mostly a hotkey among the standings, so the incumbent-and-margin rule is exercised often.
    candidates = st.sampled_from([s.hotkey for s in standings]) if standings else st.none()
    previous_leader = data.draw(st.one_of(st.none(), st.just("gone"), candidates, candidates))
    eligible = _eligible(standings, policy)
    decision = _decide(standings, policy, previous_leader)

    if decision is None:
        assert not eligible and policy.burn_uid is None
        return
    weights = decision.weights
    assert all(w > 0.0 and math.isfinite(w) for w in weights.values())
    assert abs(math.fsum(weights.values()) - 1.0) <= 1e-9
    assert not set(weights) & copies(standings)
    if eligible:
        assert set(weights) <= eligible
        assert decision.leader in eligible
        assert weights[decision.leader] == max(weights.values())
        by_uid = {s.uid: s for s in standings}
        scores = {uid: smoothed(by_uid[uid].scores, policy.smoothing) for uid in eligible}
        incumbent = next((uid for uid in eligible if by_uid[uid].hotkey == previous_leader), None)
        best = max(scores.values())
        if incumbent is not None and decision.leader != incumbent:
            assert scores[decision.leader] > scores[incumbent] + policy.leader_margin
        elif incumbent is None:
            assert scores[decision.leader] == best
    else:
        assert weights == {BURN_UID: 1.0}
        assert decision.leader is None

    shuffled = data.draw(st.permutations(standings))
    assert _decide(shuffled, policy, previous_leader) == decision


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.floats(min_value=0.5, max_value=100.0), min_size=2, max_size=6),
    blocks=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    margin=st.floats(min_value=0.0, max_value=10.0),
    incumbent_index=st.integers(0, 5),
)
def test_leader_rule_with_incumbent(
    scores: list[float], blocks: list[int], margin: float, incumbent_index: int
) -> None:
    """All miners eligible, the previous leader among them: it holds unless beaten by more than the margin."""
    standings = [
        Standing(uid, f"hk{uid}", blocks[uid], (score,), frozenset({f"own{uid}"}))
        for uid, score in enumerate(scores)
    ]
    incumbent = standings[incumbent_index % len(standings)]
    best = min(standings, key=lambda s: (-s.scores[0], s.commit_block, s.uid))
    decision = compute_weights(standings, WeightPolicy(leader_margin=margin), incumbent.hotkey)
    if best.scores[0] > incumbent.scores[0] + margin:
        assert decision.leader == best.uid
    else:
        assert decision.leader == incumbent.uid
    assert decision.weights[decision.leader] == pytest.approx(0.8)


# ---- copies against every commitment ever seen ---------------------------------------------------------


def test_a_copy_of_a_deregistered_miners_model_is_still_a_copy() -> None:
    erin = Standing(uid=4, hotkey="erin", commit_block=200, scores=(90.0,), fingerprints=frozenset({"fp"}))
    alice = Standing(uid=1, hotkey="alice", commit_block=150, scores=(50.0,), fingerprints=frozenset({"a"}))
    history = {"fp": {"bob": 100, "erin": 200}, "a": {"alice": 150}}
    decision = compute_weights([erin, alice], DEFAULT, None, history)
    assert decision.weights == {1: 1.0}
    reason = "copy of hotkey bob's commitment at block 100 (no longer registered): nothing"
    assert decision.reasons[4] == reason
    assert copies([erin, alice], history) == {4}
    assert copies([erin, alice]) == set(), "without history there is nothing to compare with"


def test_the_earliest_commitment_ever_seen_wins_over_a_newer_revision() -> None:
    # Bob first committed the model at block 50, and now stands with a newer revision of it (block 300);
    # Carol committed it at block 120: she is the copy, not Bob.
    bob = Standing(uid=2, hotkey="bob", commit_block=300, scores=(70.0,), fingerprints=frozenset({"fp"}))
    carol = Standing(uid=3, hotkey="carol", commit_block=120, scores=(80.0,), fingerprints=frozenset({"fp"}))
    history = {"fp": {"bob": 50, "carol": 120}}
    assert copies([bob, carol], history) == {3}
    decision = compute_weights([bob, carol], DEFAULT, None, history)
    assert decision.weights == {2: 1.0}
    assert decision.reasons[3].startswith("copy of uid 2 (hotkey bob")


def test_a_hotkeys_own_history_never_makes_it_a_copy() -> None:
    bob = Standing(uid=2, hotkey="bob", commit_block=300, scores=(70.0,), fingerprints=frozenset({"fp"}))
    assert copies([bob], {"fp": {"bob": 50}}) == set()
