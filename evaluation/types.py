"""Value types shared by the evaluation library and its callers.

They are plain frozen dataclasses so that they cross thread and process boundaries, compare by value and
serialise without surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Submission:
    """One miner's model at one exact revision: the unit that is evaluated.

    ``revision`` is the commit the miner put on chain; it is the only revision ever fetched.
    """

    uid: int
    hotkey: str
    repo_id: str
    revision: str
    competition: str = "v2"
    block: int = 0

    @property
    def short_revision(self) -> str:
        return self.revision[:12]


@dataclass(frozen=True)
class SpeechDetails:
    """What was measured on one spoken (voice-to-voice) answer.

    ``content_score`` is the evaluator's score of ``transcript`` (the ASR of the returned audio);
    the sample's score is ``content_score * consistency``. ``wer`` is the word error rate between the
    miner's ``text`` and the transcript, None when the miner sent no text (consistency not applicable,
    ``consistency`` 1). ``mos`` is None when no predictor ran (none configured, or silent audio).
    """

    transcript: str
    text: str | None
    content_score: float
    wer: float | None
    consistency: float
    mos: float | None
    duration_s: float
    silent: bool
    clipped_fraction: float


@dataclass(frozen=True)
class SampleResult:
    """The outcome of one benchmark item sent to one miner.

    ``response`` is the text that was scored: the miner's text for voice-to-text, the transcript of its
    audio for voice-to-voice, whose other measures are in ``speech``.
    """

    subset: str
    item_id: str
    score: float
    response: str = ""
    error: str | None = None
    latency_s: float = 0.0
    speech: SpeechDetails | None = None


@dataclass(frozen=True)
class SubsetScore:
    """Aggregate of one subset: ``score`` is on a 0-100 scale."""

    subset: str
    score: float
    samples: int
    failures: int


@dataclass(frozen=True)
class EvaluationResult:
    """What evaluating one submission produced.

    ``score`` is the overall 0-100 score; ``error`` is set when the submission could not be evaluated
    at all (bad repo, build failure, never healthy), in which case ``score`` is 0.
    """

    submission: Submission
    score: float
    subsets: tuple[SubsetScore, ...] = ()
    error: str | None = None
    duration_s: float = 0.0
    details: dict[str, str] = field(default_factory=dict)
    # Content fingerprints of the fetched repo (see evaluation.fingerprint): equal ones mean a copy.
    fingerprints: tuple[str, ...] = ()
    # Seed of the round whose items (and audio perturbations) this evaluation used.
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
