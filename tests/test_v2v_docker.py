"""Voice-to-voice on real parts: four variants of the example miner's ``speak`` kind (espeak-ng inside
the container) built and run on the project dockerd, asked the espeak-ng VoiceBench fixture's OpenBookQA
questions through the real pipeline, their spoken answers transcribed by Whisper tiny.en (offline) and
scored with the settings a v2v competition uses.

- consistent: says "The answer is option A." and sends the same text;
- inconsistent: says the same, but its text is "I think it is option B.";
- fixed clip: says "Hello there, how can I help you today?" to every question (text to match);
- silent: one second of zeros (text "The answer is option A.").

Expected: consistent first, inconsistent below it (penalised, not zeroed), fixed clip and silent last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import docker
import pytest

from evaluation.fetch import LocalDirSource
from evaluation.pipeline import Pipeline
from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig
from evaluation.speech import consistency_factor, word_error_rate
from evaluation.types import EvaluationResult, Submission
from evaluation.voicebench.dataset import load_spec
from evaluation.voicebench.subsets import subset_spec
from validator.app import make_voice_scorer, pipeline_config
from validator.demo import default_example_dir, prepare_repo
from validator.settings import load_settings

pytestmark = pytest.mark.docker

# scripts/base_image.sh's BASE_VERSION that added espeak-ng.
ESPEAK_BASE_VERSION = 3

MINERS: dict[str, dict[str, Any]] = {
    "consistent": {"kind": "speak", "answer": "A"},
    "inconsistent": {"kind": "speak", "answer": "A", "text_override": "I think it is option B."},
    "fixed": {
        "kind": "speak",
        "answer": "A",
        "audio": "fixed",
        "fixed_text": "Hello there, how can I help you today?",
    },
    "silent": {"kind": "speak", "answer": "A", "audio": "silence"},
}


class _Repos:
    """A RepoSource serving one local folder per repo id."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self._folders = folders

    async def fetch(self, submission: Submission, dest_root: Path) -> Path:
        return await LocalDirSource(self._folders[submission.repo_id]).fetch(submission, dest_root)

    async def release(self, repo_dir: Path) -> None:
        return None


@pytest.fixture(scope="module")
def speaking_base_image(base_image: str, docker_host: str) -> str:
    """The base image, checked to have espeak-ng (version label 3 or later)."""
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        labels = client.images.get(base_image).labels or {}
    finally:
        client.close()
    version = labels.get("voice-validator.base-version", "0")
    if not version.isdigit() or int(version) < ESPEAK_BASE_VERSION:
        message = f"{base_image} is version {version}, without espeak-ng: run scripts/base_image.sh"
        if os.environ.get("VV_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return base_image


async def test_spoken_answers_rank_consistent_first_silent_and_fixed_clip_last(
    tmp_path: Path, voicebench_dir: Path, sandbox_config: SandboxConfig, speaking_base_image: str
) -> None:
    pytest.importorskip("faster_whisper", reason="needs the 'asr' extra (faster-whisper)")
    settings = load_settings(
        [],
        data_dir=tmp_path / "var",
        competitions=["v2v"],
        competition_scoring={"v2v": {"task": "v2v", "voicebench": 1.0}},
        v2v_asr_model="bundled-tiny.en",
        subsets=["openbookqa"],
        samples_per_subset=None,
        miner_concurrency=2,
    )
    folders = {
        f"v2v/{name}": prepare_repo(default_example_dir(), tmp_path / "src" / name, f"5{name}", config)
        for name, config in MINERS.items()
    }
    benchmark = {"openbookqa": load_spec(voicebench_dir, subset_spec("openbookqa"))}
    share_a = sum(1 for item in benchmark["openbookqa"] if item.reference == "A") / len(
        benchmark["openbookqa"]
    )
    assert 0 < share_a < 1

    voice = await make_voice_scorer(settings)
    sandbox = DockerSandbox(sandbox_config)
    pipeline = Pipeline(
        _Repos(folders),
        sandbox,
        benchmark,
        pipeline_config(settings),
        tmp_path / "work",
        competitions=settings.competition_specs,
        voice=voice,
    )
    results: dict[str, EvaluationResult] = {}
    try:
        for uid, name in enumerate(MINERS, start=1):
            submission = Submission(uid, f"5{name}", f"v2v/{name}", f"{uid}" * 40, competition="v2v")
            results[name] = await pipeline.evaluate(submission)
    finally:
        await sandbox.cleanup()
        await sandbox.close()

    for name, result in results.items():
        assert result.ok, (name, result.error)
        assert result.details["task"] == "v2v" and result.details["v2v_asr_model"] == "bundled-tiny.en@cpu"
        assert result.details["mos_score"] == "not measured", result.details

    consistent, inconsistent, fixed, silent = (results[n] for n in MINERS)
    # The consistent miner's transcript is its text, so it scores exactly its MCQ content: every "A".
    assert consistent.score == pytest.approx(100 * share_a)
    assert consistent.details["v2v_mean_consistency"] == "1.000"
    # Same audio, text that disagrees: the same content, multiplied by the consistency factor.
    assert 0 < inconsistent.score < consistent.score
    factor = consistency_factor(word_error_rate("I think it is option B.", "The answer is option A."), 0.2)
    assert factor < 0.5 and inconsistent.score == pytest.approx(consistent.score * factor)
    assert inconsistent.details["v2v_mean_consistency"] == f"{factor:.3f}"
    # A clip that says nothing about the question is consistent and worth nothing.
    assert fixed.score == 0.0 and fixed.details["v2v_mean_consistency"] == "1.000"
    # Silence never reaches the ASR: every sample fails with the reason.
    assert silent.score == 0.0 and silent.details["v2v_silent"] == silent.details["v2v_samples"]
    (subset,) = silent.subsets
    assert subset.failures == subset.samples
