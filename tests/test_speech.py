"""The voice-to-voice rules as pure functions: WER, the consistency penalty, the signal check, MOS
aggregation, the combined competition score, and the settings that configure them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError

from evaluation.competition import CompetitionSpec, combined_score
from evaluation.speech import (
    check_signal,
    consistency_factor,
    mean_mos,
    mos_to_percent,
    normalize_words,
    word_error_rate,
)
from evaluation.voicebench.scoring import subset_score
from validator.settings import load_settings

# --------------------------------------------------------------------------------------------- WER


def test_normalisation_ignores_case_and_punctuation_but_not_words() -> None:
    assert normalize_words("The answer is A.") == ["the", "answer", "is", "a"]
    assert normalize_words("It\u2019s  FINE -- really!") == ["it's", "fine", "really"]
    assert normalize_words("two") != normalize_words("2")


@pytest.mark.parametrize(
    ("reference", "hypothesis", "wer"),
    [
        ("The answer is option A.", "the answer is option a", 0.0),
        ("The answer is option A.", "The answer is option B.", 0.2),  # one substitution in five
        ("The answer is option A.", "The answer is.", 0.4),  # two deletions
        ("a b", "a x b y", 1.0),  # two insertions in two
        ("Option B is correct.", "The answer is option A.", 1.0),  # 3 substitutions, is kept, 1 insertion
        ("", "", 0.0),
        ("", "anything", 1.0),
        ("something", "", 1.0),
    ],
)
def test_word_error_rate(reference: str, hypothesis: str, wer: float) -> None:
    assert word_error_rate(reference, hypothesis) == pytest.approx(wer)


def test_word_error_rate_can_exceed_one() -> None:
    assert word_error_rate("yes", "no no no") == pytest.approx(3.0)


# ------------------------------------------------------------------------------------- consistency


@pytest.mark.parametrize(
    ("wer", "factor"),
    [
        (None, 1.0),  # no text: not applicable
        (0.0, 1.0),
        (0.2, 1.0),  # within the tolerance
        (0.6, 0.5),  # (1 - 0.6) / (1 - 0.2)
        (1.0, 0.0),
        (2.5, 0.0),
    ],
)
def test_consistency_factor(wer: float | None, factor: float) -> None:
    assert consistency_factor(wer, 0.2) == pytest.approx(factor)


def test_consistency_factor_is_monotonic_and_continuous() -> None:
    values = [consistency_factor(w / 100, 0.2) for w in range(0, 151)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert max(abs(a - b) for a, b in itertools.pairwise(values)) <= 0.0126


@pytest.mark.parametrize(("wer", "tolerance"), [(0.1, 1.0), (0.1, -0.1), (-0.1, 0.2), (math.nan, 0.2)])
def test_consistency_factor_refuses_bad_input(wer: float, tolerance: float) -> None:
    with pytest.raises(ValueError):
        consistency_factor(wer, tolerance)


# ------------------------------------------------------------------------------------ signal check


def test_silence_and_noise_floor_are_silent_speech_like_sound_is_not() -> None:
    rate = 16_000
    rng = np.random.default_rng(0)
    assert check_signal(np.zeros(rate, np.float32), rate).silent
    # The perturbation noise floor (-55 dBFS) is not an answer.
    floor = (rng.standard_normal(rate) * 10 ** (-55 / 20)).astype(np.float32)
    assert check_signal(floor, rate).silent
    # A 0.1 s click is too short to be a word.
    click = np.zeros(rate, np.float32)
    click[:1600] = 0.5
    assert check_signal(click, rate).silent
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    report = check_signal(tone, rate)
    assert not report.silent and report.active_s == pytest.approx(1.0) and report.clipped_fraction == 0.0
    assert report.duration_s == pytest.approx(1.0)


def test_clipping_is_measured() -> None:
    square = np.sign(np.sin(np.linspace(0, 40 * np.pi, 8_000))).astype(np.float32)
    report = check_signal(square, 8_000)
    assert report.clipped_fraction > 0.99 and report.peak == pytest.approx(1.0)
    assert check_signal(np.zeros(0, np.float32), 16_000).silent


# --------------------------------------------------------------------------------------------- MOS


def test_mean_mos_counts_failed_samples_as_the_minimum() -> None:
    assert mean_mos([4.0, 4.0, None, None]) == pytest.approx(2.5)
    assert mean_mos([7.0, 0.0]) == pytest.approx(3.0)  # clamped to [1, 5]
    assert mos_to_percent(1.0) == 0.0 and mos_to_percent(5.0) == 100.0 and mos_to_percent(3.0) == 50.0
    with pytest.raises(ValueError):
        mean_mos([])
    with pytest.raises(ValueError):
        mean_mos([math.nan])


# ---------------------------------------------------------------------------------- combined score


def test_combined_score_is_the_weighted_mean_of_its_parts() -> None:
    spec = CompetitionSpec(task="v2v", voicebench_weight=0.8, mos_weight=0.2)
    assert combined_score(spec, 60.0, mos_to_percent(3.8)) == pytest.approx(62.0)  # MOS 3.8 is 70 %
    # Weights need not sum to 1: 4 and 1 are the same mix.
    assert combined_score(CompetitionSpec("v2v", 4, 1), 60.0, 70.0) == pytest.approx(62.0)
    assert combined_score(CompetitionSpec(), 60.0, None) == 60.0
    assert combined_score(CompetitionSpec("v2v"), 60.0, 99.0) == 60.0  # MOS measured, weighs nothing


def test_combined_score_refuses_what_cannot_be_computed() -> None:
    with pytest.raises(ValueError, match="no MOS was measured"):
        combined_score(CompetitionSpec("v2v", 1, 1), 60.0, None)
    with pytest.raises(ValueError, match="outside"):
        combined_score(CompetitionSpec(), 101.0, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "v2t", "mos_weight": 0.5}, "v2t competition has no audio"),
        ({"task": "v2v", "voicebench_weight": 0, "mos_weight": 0}, "at least one weight"),
        ({"task": "v2v", "voicebench_weight": -1}, ">= 0"),
        ({"task": "s2s"}, "task must be"),
    ],
)
def test_competition_spec_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompetitionSpec(**kwargs)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- settings


def test_competition_scoring_from_settings() -> None:
    settings = load_settings(
        [
            "--competitions",
            '["v2", "v2v"]',
            "--competition-scoring",
            '{"v2v": {"task": "v2v", "voicebench": 1}}',
        ]
    )
    assert settings.competition_specs == {"v2": CompetitionSpec(), "v2v": CompetitionSpec("v2v", 1.0, 0.0)}
    assert settings.voice_to_voice
    assert not load_settings([]).voice_to_voice  # the default: v4, scored as voice to text


@pytest.mark.parametrize(
    ("scoring", "message"),
    [
        ('{"v3": {"task": "v2v"}}', "not in competitions"),
        ('{"v4": {"task": "v2v", "mos": 0.2}}', "mos-predictor is 'none'"),
        ('{"v4": {"task": "v2t", "mos": 0.2}}', "no audio"),
        ('{"v4": {"task": "v2v", "speed": 1}}', "Extra inputs"),
    ],
)
def test_bad_competition_scoring_is_refused(scoring: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_settings(["--competition-scoring", scoring])


def test_the_readme_worked_example() -> None:
    factor = consistency_factor(word_error_rate("I think it is option B.", "The answer is option A."), 0.2)
    item_scores = [1.0 * 1.0, 1.0 * factor, 0.0, 0.0]
    voicebench = subset_score(item_scores)
    mos = mean_mos([4.0, 4.0, 3.2, None])
    assert (round(factor, 2), round(voicebench, 1)) == (0.42, 35.4)
    assert mos == pytest.approx(3.05) and round(mos_to_percent(mos), 1) == 51.2
    spec = CompetitionSpec("v2v", voicebench_weight=0.8, mos_weight=0.2)
    assert round(combined_score(spec, voicebench, mos_to_percent(mos)), 1) == 38.6


def test_word_error_rate_compares_at_most_the_first_words_of_each_side() -> None:
    from evaluation.speech import MAX_WER_WORDS

    words = [f"w{i}" for i in range(MAX_WER_WORDS)]
    same_start = " ".join(words)
    assert word_error_rate(same_start + " extra" * 5000, same_start) == 0.0  # past the cap: not compared
    assert word_error_rate(same_start, " ".join(words[:-1])) == pytest.approx(1 / MAX_WER_WORDS)
