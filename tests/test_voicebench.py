"""VoiceBench slice: fixture build (espeak-ng), loading through ``datasets``, sampling, mcq, scoring."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluation.errors import InfrastructureError
from evaluation.voicebench import fixture as fixture_module
from evaluation.voicebench.dataset import Item, load_subset, sample_items
from evaluation.voicebench.evaluators import (
    EVALUATORS,
    SUBSET_EVALUATOR,
    MultipleChoiceEvaluator,
    get_evaluator,
)
from evaluation.voicebench.evaluators.mcq import extract_choice, parse_options
from evaluation.voicebench.fixture import MANIFEST_NAME, PARQUET_NAME, build_fixture
from evaluation.voicebench.scoring import overall_score, subset_score


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return build_fixture(tmp_path_factory.mktemp("voicebench"))


@pytest.fixture(scope="session")
def items(fixture_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    return load_subset(fixture_root, "openbookqa", cache_dir=tmp_path_factory.mktemp("hf-cache"))


# --- fixture -----------------------------------------------------------------------------------------


def test_fixture_has_the_hub_layout(fixture_root: Path) -> None:
    parquet = fixture_root / "openbookqa" / PARQUET_NAME
    assert parquet.is_file()
    schema = pq.read_schema(parquet)
    assert schema.names == ["audio", "prompt", "reference", "id"]
    assert str(schema.field("audio").type) == "struct<bytes: binary, path: string>"
    # datasets reads the feature types from this metadata: that is what makes "audio" an Audio column.
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["audio"]["_type"] == "Audio"
    manifest = json.loads((fixture_root / "openbookqa" / MANIFEST_NAME).read_text())
    assert manifest["voice"] == "en-us" and manifest["rate_wpm"] == 160


def test_fixture_reads_as_a_datasets_audio_dataset(fixture_root: Path, tmp_path: Path) -> None:
    import datasets

    dataset = datasets.load_dataset(
        "parquet",
        data_files={"test": str(fixture_root / "openbookqa" / "test-*.parquet")},
        split="test",
        cache_dir=str(tmp_path),
    )
    assert isinstance(dataset.features["audio"], datasets.Audio)
    assert dataset.features["audio"].sampling_rate == 16_000
    assert len(dataset) == 12


def test_fixture_questions_are_skewed_for_constant_baselines() -> None:
    questions = json.loads(
        (Path(fixture_module.__file__).parent / "fixtures" / "openbookqa.json").read_text()
    )
    counts = Counter(question["reference"] for question in questions)
    assert counts == {"A": 5, "B": 3, "C": 2, "D": 2}
    for question in questions:
        assert set(parse_options(question["prompt"])) == {"A", "B", "C", "D"}


def test_rebuild_is_cached_and_invalidated_by_settings(fixture_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(fixture_root, root)
    parquet = root / "openbookqa" / PARQUET_NAME
    before = parquet.stat().st_mtime_ns
    original = parquet.read_bytes()

    build_fixture(root)
    assert parquet.stat().st_mtime_ns == before  # cache hit: nothing rewritten

    manifest_path = root / "openbookqa" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["rate_wpm"] = 999
    manifest_path.write_text(json.dumps(manifest))
    build_fixture(root)
    assert parquet.stat().st_mtime_ns != before  # stale manifest: rebuilt
    assert parquet.read_bytes() == original  # and deterministic
    assert json.loads(manifest_path.read_text())["rate_wpm"] == 160


def test_missing_espeak_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixture_module.shutil, "which", lambda _name: None)
    with pytest.raises(InfrastructureError, match="apt-get install espeak-ng"):
        build_fixture(tmp_path)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="available"):
        build_fixture(tmp_path, ["nope"])
    with pytest.raises(ValueError, match="rate_wpm"):
        build_fixture(tmp_path, rate_wpm=5)
    with pytest.raises(ValueError, match="voice"):
        build_fixture(tmp_path, voice="--help")


# --- loading -----------------------------------------------------------------------------------------


def test_items_are_16k_float32_speech(items: list[Item]) -> None:
    assert len(items) == 12
    for item in items:
        assert item.subset == "openbookqa"
        assert item.sample_rate == 16_000
        assert item.audio.dtype == np.float32 and item.audio.ndim == 1
        assert 2.0 < item.audio.size / 16_000 < 30.0
        assert float(np.sqrt(np.mean(item.audio**2))) > 0.01  # not silence
        assert np.isfinite(item.audio).all()
        assert not item.audio.flags.writeable
        assert item.reference in {"A", "B", "C", "D"}
        assert item.prompt.count("\n") == 4
        assert dict(item.extra) == {}
    assert items[0].item_id == "openbookqa-fixture-001"
    assert len({item.item_id for item in items}) == 12


def test_item_ids_fall_back_to_row_index_and_extras_are_kept(fixture_root: Path, tmp_path: Path) -> None:
    table = pq.read_table(fixture_root / "openbookqa" / PARQUET_NAME)
    table = table.drop_columns(["id"]).append_column("key", [[f"k{i}" for i in range(table.num_rows)]])
    (tmp_path / "data" / "openbookqa").mkdir(parents=True)
    pq.write_table(table, tmp_path / "data" / "openbookqa" / PARQUET_NAME)
    loaded = load_subset(tmp_path / "data", "openbookqa", cache_dir=tmp_path / "cache")
    assert [item.item_id for item in loaded[:2]] == ["openbookqa-0", "openbookqa-1"]
    assert loaded[1].extra["key"] == "k1"


def test_missing_subset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="openbookqa/test"):
        load_subset(tmp_path, "openbookqa")


# --- sampling ----------------------------------------------------------------------------------------


def _ids(items: list[Item]) -> list[str]:
    return [item.item_id for item in items]


def test_sampling_is_reproducible_and_seed_dependent(items: list[Item]) -> None:
    first = sample_items(items, 5, seed=7)
    assert _ids(first) == _ids(sample_items(items, 5, seed=7))
    assert len(set(_ids(first))) == 5
    assert _ids(first) == sorted(_ids(first))  # dataset order kept
    others = {tuple(_ids(sample_items(items, 5, seed=seed))) for seed in range(8)}
    assert len(others) > 1


def test_sampling_edges(items: list[Item]) -> None:
    assert _ids(sample_items(items, None, seed=1)) == _ids(items)
    assert _ids(sample_items(items, 100, seed=1)) == _ids(items)
    assert sample_items(items, 0, seed=1) == []
    with pytest.raises(ValueError):
        sample_items(items, -1, seed=1)


# --- multiple choice ---------------------------------------------------------------------------------

PROMPT = "Which of these is a renewable source of energy?\nA. coal\nB. oil\nC. natural gas\nD. wind\n"


def _item(reference: str = "D", prompt: str = PROMPT) -> Item:
    return Item(
        subset="openbookqa",
        item_id="q1",
        audio=np.zeros(1, dtype=np.float32),
        sample_rate=16_000,
        prompt=prompt,
        reference=reference,
        extra={},
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The answer is D", 1.0),
        ("The answer is D.", 1.0),
        ("the correct answer is: **D**", 1.0),
        ("D.", 1.0),
        ("D", 1.0),
        ("d", 1.0),
        ("(D)", 1.0),
        ("D) wind", 1.0),
        ("Option D", 1.0),
        ("answer: d", 1.0),
        ("Answer - D", 1.0),
        ("D is correct, wind keeps blowing.", 1.0),
        ("I would go with option D.", 1.0),
        ("It's D, wind.", 1.0),
        ("The answer is D. Option A is wrong because coal runs out.", 1.0),
        ("Wind is renewable.", 1.0),  # quotes exactly one option's text
        ("Natural gas is renewable.", 0.0),  # quotes a wrong option
        ("The answer is A", 0.0),
        ("A.", 0.0),
        # ambiguous or no answer: never a guess
        ("A or D", 0.0),
        ("(A) and (D) both look plausible", 0.0),
        ("The answer is A. No wait, the answer is D.", 0.0),
        ("Coal and wind are both energy sources.", 0.0),
        ("I am not sure.", 0.0),
        ("", 0.0),
        ("The answer is a bit unclear to me.", 0.0),  # the article "a" is not a letter
        ("The answer is E", 0.0),  # not an option of this question
        ("Vitamin D.", 0.0),  # a letter inside prose is not an answer
    ],
)
def test_mcq_table(response: str, expected: float) -> None:
    assert MultipleChoiceEvaluator().score(_item(), response) == expected


def test_mcq_lowercase_a_counts_only_as_a_standalone_letter() -> None:
    evaluator = MultipleChoiceEvaluator()
    assert evaluator.score(_item("A"), "the answer is a.") == 1.0
    assert evaluator.score(_item("A"), "a") == 1.0
    assert evaluator.score(_item("A"), "the answer is a renewable one") == 0.0


def test_mcq_option_text_prefers_the_longer_quoted_option() -> None:
    prompt = "What does the Sun give us?\nA. heat\nB. heat and light\nC. rain\nD. wind"
    assert extract_choice("It gives us heat and light.", parse_options(prompt)) == "B"
    assert extract_choice("It gives us heat.", parse_options(prompt)) == "A"


def test_mcq_inline_options_and_decoys_in_the_question() -> None:
    options = parse_options(
        "Which fruit is rich in vitamin C. and fiber? A. an orange B. a rock C. sand D. salt"
    )
    assert options == {"A": "an orange", "B": "a rock", "C": "sand", "D": "salt"}
    assert extract_choice("An orange.", options) == "A"


def test_mcq_is_deterministic_and_needs_a_reference() -> None:
    evaluator = MultipleChoiceEvaluator()
    assert {evaluator.score(_item(), "no idea") for _ in range(20)} == {0.0}
    with pytest.raises(ValueError, match="reference"):
        evaluator.score(_item(reference=""), "D")


def test_constant_answer_baselines_score_differently(items: list[Item]) -> None:
    evaluator = MultipleChoiceEvaluator()

    def constant(letter: str) -> float:
        return subset_score([evaluator.score(item, f"The answer is {letter}.") for item in items])

    assert constant("A") == pytest.approx(100 * 5 / 12)
    assert constant("B") == pytest.approx(100 * 3 / 12)
    assert constant("A") > constant("B") > 0
    oracle = [evaluator.score(item, f"The answer is {item.reference}") for item in items]
    assert subset_score(oracle) == 100.0


# --- registry and scoring ----------------------------------------------------------------------------


def test_registry() -> None:
    evaluator = get_evaluator("mcq")
    assert isinstance(evaluator, MultipleChoiceEvaluator) and evaluator.name == "mcq"
    assert get_evaluator(SUBSET_EVALUATOR["openbookqa"]).name == "mcq"
    assert set(SUBSET_EVALUATOR.values()) <= set(EVALUATORS)
    with pytest.raises(KeyError, match="known"):
        get_evaluator("nope")


def test_scoring() -> None:
    assert subset_score([1.0, 0.0, 1.0, 0.0]) == 50.0
    assert subset_score([0.5]) == 50.0
    assert overall_score({"openbookqa": 50.0, "mmsu": 100.0}) == 75.0
    for bad in ([], [1.5], [float("nan")], [-0.1]):
        with pytest.raises(ValueError):
            subset_score(bad)
    for bad_map in ({}, {"x": 101.0}, {"x": float("inf")}):
        with pytest.raises(ValueError):
            overall_score(bad_map)
