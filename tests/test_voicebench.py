"""VoiceBench slice: fixture build (espeak-ng) for every subset, loading and pooling splits through
``datasets``, the hub download helper, sampling, mcq, scoring."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluation.audio import resample
from evaluation.errors import InfrastructureError
from evaluation.voicebench import fixture as fixture_module
from evaluation.voicebench.dataset import (
    Item,
    load_spec,
    load_subset,
    normalize_ifeval_kwargs,
    resample_audio,
    sample_items,
)
from evaluation.voicebench.evaluators import (
    EVALUATORS,
    SUBSET_EVALUATOR,
    MultipleChoiceEvaluator,
    get_evaluator,
)
from evaluation.voicebench.evaluators.mcq import extract_choice, parse_options
from evaluation.voicebench.fixture import (
    IFEVAL_KWARGS,
    MANIFEST_NAME,
    PARQUET_NAME,
    SUBSET_COLUMNS,
    FixtureBuildError,
    available_subsets,
    build_fixture,
    parquet_name,
)
from evaluation.voicebench.hub import download_voicebench, voicebench_patterns
from evaluation.voicebench.scoring import overall_score, subset_score
from evaluation.voicebench.subsets import SUBSETS, subset_spec


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    started = time.monotonic()
    root = build_fixture(tmp_path_factory.mktemp("voicebench"))  # every subset
    # Printed for the record (pytest -s); the budget is ~60 s on 2 cores, a cold build takes ~12 s.
    print(f"VoiceBench fixture built in {time.monotonic() - started:.1f}s")
    return root


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-cache-all")


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


# --- every subset ------------------------------------------------------------------------------------

BBH_TASKS = ("sports_understanding", "hyperbaton", "navigate", "web_of_lies")


def _present_splits(root: Path, subset: str) -> list[str]:
    return sorted(path.name.split("-", 1)[0] for path in (root / subset).glob("*.parquet"))


def test_every_subset_has_questions_and_a_schema() -> None:
    assert available_subsets() == sorted(SUBSETS)
    assert set(SUBSET_COLUMNS) == set(SUBSETS)


@pytest.mark.parametrize("name", sorted(SUBSETS))
def test_every_subset_builds_and_loads(fixture_root: Path, hf_cache: Path, name: str) -> None:
    spec = subset_spec(name)
    splits = _present_splits(fixture_root, name)
    assert splits and set(splits) <= set(spec.all_splits)
    for split in splits:
        schema = pq.read_schema(fixture_root / name / parquet_name(split))
        assert schema.names == ["audio", "prompt", *SUBSET_COLUMNS[name]]
    loaded = load_spec(fixture_root, spec, splits, cache_dir=hf_cache)
    assert 4 <= len(loaded) <= 15
    assert len({item.item_id for item in loaded}) == len(loaded)
    assert {item.extra["split"] for item in loaded} == set(splits)
    for item in loaded:
        assert item.subset == name and item.prompt.strip()
        assert item.sample_rate == 16_000
        assert item.audio.dtype == np.float32 and item.audio.ndim == 1
        assert 1.0 < item.audio.size / 16_000 < 30.0
        assert float(np.sqrt(np.mean(item.audio**2))) > 0.01  # not silence
        assert not item.audio.flags.writeable
        if "reference" in SUBSET_COLUMNS[name]:
            assert isinstance(item.reference, str) and item.reference.strip()
        else:
            assert item.reference is None


def test_bbh_items_carry_their_task(fixture_root: Path, hf_cache: Path) -> None:
    loaded = load_spec(fixture_root, SUBSETS["bbh"], cache_dir=hf_cache)
    tasks = Counter(next(t for t in BBH_TASKS if item.extra["id"].startswith(t + "_")) for item in loaded)
    assert set(tasks) == set(BBH_TASKS)
    for item in loaded:
        assert item.item_id == item.extra["id"]  # unique here, and still kept for the evaluator
        assert item.reference in {"yes", "no", "Yes", "No", "(A)", "(B)"}


def test_ifeval_items_carry_instructions_and_kwargs(fixture_root: Path, hf_cache: Path) -> None:
    kwargs_type = pq.read_schema(fixture_root / "ifeval" / PARQUET_NAME).field("kwargs").type
    assert [field.name for field in kwargs_type.value_type] == list(IFEVAL_KWARGS)  # one struct, all keys
    loaded = load_spec(fixture_root, SUBSETS["ifeval"], cache_dir=hf_cache)
    for item in loaded:
        assert isinstance(item.extra["key"], int)
        ids, kwargs = item.extra["instruction_id_list"], item.extra["kwargs"]
        assert ids and all(isinstance(i, str) and ":" in i for i in ids)
        assert isinstance(kwargs, list) and len(kwargs) == len(ids)
        assert all(type(entry) is dict and None not in entry.values() for entry in kwargs)
    by_key = {item.extra["key"]: item.extra for item in loaded}
    assert by_key[1002]["instruction_id_list"] == ["length_constraints:number_words", "startend:end_checker"]
    assert by_key[1002]["kwargs"] == [
        {"relation": "at least", "num_words": 50},
        {"end_phrase": "Is there anything else I can help with?"},
    ]
    assert by_key[1001]["kwargs"] == [{}]
    assert by_key[1005]["kwargs"] == [{"keywords": ["steel", "leakproof"]}]


def test_pooled_splits_have_stable_unique_ids(fixture_root: Path, hf_cache: Path) -> None:
    sd_qa = SUBSETS["sd-qa"]
    usa = load_spec(fixture_root, sd_qa, cache_dir=hf_cache)  # the leaderboard's split by default
    pooled = load_spec(fixture_root, sd_qa, ["usa", "gbr"], cache_dir=hf_cache)
    assert [item.item_id for item in usa] == [f"usa/{i}" for i in range(len(usa))]
    assert [item.item_id for item in pooled[: len(usa)]] == [item.item_id for item in usa]
    assert pooled[len(usa)].item_id == "gbr/0" and pooled[len(usa)].extra["split"] == "gbr"
    assert len({item.item_id for item in pooled}) == len(pooled) == 10
    # mmsu: the default pools whichever of the 12 subjects the folder holds.
    mmsu = load_spec(fixture_root, SUBSETS["mmsu"], cache_dir=hf_cache)
    assert {item.extra["split"] for item in mmsu} == set(_present_splits(fixture_root, "mmsu"))
    assert len({item.item_id for item in mmsu}) == len(mmsu) == 8


def test_missing_splits_are_clear_errors(fixture_root: Path, hf_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"\['kenya'\].*present: \['gbr', 'usa'\]"):
        load_spec(fixture_root, SUBSETS["sd-qa"], ["usa", "kenya"], cache_dir=hf_cache)
    with pytest.raises(FileNotFoundError, match="law"):
        load_spec(fixture_root, SUBSETS["mmsu"], ["biology", "law"], cache_dir=hf_cache)
    with pytest.raises(FileNotFoundError, match="present: none"):
        load_spec(tmp_path, SUBSETS["mmsu"], cache_dir=hf_cache)
    with pytest.raises(ValueError, match="repeat"):
        load_spec(fixture_root, SUBSETS["sd-qa"], ["usa", "usa"], cache_dir=hf_cache)
    with pytest.raises(ValueError, match="no splits"):
        load_spec(fixture_root, SUBSETS["sd-qa"], [], cache_dir=hf_cache)


def test_every_subset_is_cached(fixture_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(fixture_root, root)
    files = sorted(root.glob("*/*.parquet"))
    before = {path: path.stat().st_mtime_ns for path in files}
    started = time.monotonic()
    build_fixture(root)
    assert time.monotonic() - started < 2.0
    assert {path: path.stat().st_mtime_ns for path in files} == before

    # A lost split file or a stray one rebuilds that subset only, and the stray split is dropped.
    (root / "sd-qa" / parquet_name("gbr")).unlink()
    stray = root / "sd-qa" / parquet_name("kenya")
    shutil.copy(root / "sd-qa" / parquet_name("usa"), stray)
    build_fixture(root)
    assert (root / "sd-qa" / parquet_name("gbr")).is_file() and not stray.exists()
    assert all(path.stat().st_mtime_ns == before[path] for path in files if path.parent.name != "sd-qa")


def test_bad_question_files_are_refused() -> None:
    parse = fixture_module._parse_questions
    good = {"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    parse(json.dumps([good]).encode(), "ifeval")
    for bad in (
        [good | {"kwargs": []}],  # one kwargs dict per instruction
        [good | {"kwargs": [{"num_words": "fifty"}]}],
        [good | {"kwargs": [{"no_such_key": 1}]}],
        [good | {"key": "1"}],
        [good, good],  # keys repeat
        [{"prompt": "Say hi."}],
    ):
        with pytest.raises(FixtureBuildError):
            parse(json.dumps(bad).encode(), "ifeval")
    with pytest.raises(FixtureBuildError, match="split"):
        parse(json.dumps({"atlantis": [{"prompt": "q", "reference": "a"}]}).encode(), "sd-qa")


def test_kwargs_normalisation_accepts_the_known_storage_forms() -> None:
    expected = [{"num_words": 50, "relation": "at least"}, {}]
    assert (
        normalize_ifeval_kwargs([{"num_words": 50, "relation": "at least", "keyword": None}, None])
        == expected
    )
    assert normalize_ifeval_kwargs(json.dumps(expected)) == expected
    assert normalize_ifeval_kwargs([json.dumps(entry) for entry in expected]) == expected
    for bad in ("{", 3, [3]):
        with pytest.raises(ValueError):
            normalize_ifeval_kwargs(bad)


def test_make_fixture_script(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import make_voicebench_fixture
    finally:
        sys.path.pop(0)
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    assert make_voicebench_fixture.main(["--out", str(tmp_path), "--subset", "bbh", "--subset", "mmsu"]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bbh", "mmsu"]


# --- resampling --------------------------------------------------------------------------------------


def test_resample_falls_back_to_numpy_without_soxr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "soxr", None)  # makes "import soxr" raise ImportError
    tone = np.sin(2 * np.pi * 440 * np.arange(22_050) / 22_050).astype(np.float32)
    np.testing.assert_array_equal(resample_audio(tone, 22_050, 16_000), resample(tone, 22_050, 16_000))
    assert fixture_module.resampler_name() == "numpy-kaiser-sinc"


def test_resample_with_soxr() -> None:
    pytest.importorskip("soxr")
    rate_in = 22_050
    tone = np.sin(2 * np.pi * 440 * np.arange(rate_in) / rate_in).astype(np.float32)
    out = resample_audio(tone, rate_in, 16_000)
    assert out.dtype == np.float32 and abs(out.size - 16_000) <= 1
    expected = np.sin(2 * np.pi * 440 * np.arange(out.size) / 16_000)
    middle = slice(1000, out.size - 1000)  # away from the edges' filter ramp
    assert np.max(np.abs(out[middle] - expected[middle])) < 1e-3
    with pytest.raises(ValueError):
        resample_audio(tone, 10, 16_000)
    with pytest.raises(ValueError):
        resample_audio(np.zeros((2, 2), dtype=np.float32), rate_in, 16_000)


# --- hub download ------------------------------------------------------------------------------------


def test_patterns_name_each_config_split() -> None:
    specs = [SUBSETS["sd-qa"], SUBSETS["bbh"], SUBSETS["mmsu"]]
    patterns = voicebench_patterns(specs)
    assert patterns[:2] == ["sd-qa/usa-*.parquet", "bbh/test-*.parquet"]
    assert len(patterns) == 2 + 12 and "mmsu/psychology-*.parquet" in patterns
    every_region = voicebench_patterns(specs, all_regions=True)
    assert len(every_region) == 11 + 1 + 12 and "sd-qa/kenya-*.parquet" in every_region
    assert voicebench_patterns([SUBSETS["bbh"], SUBSETS["bbh"]]) == ["bbh/test-*.parquet"]
    with pytest.raises(ValueError):
        voicebench_patterns([])


def test_download_checks_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repo_id"):
        download_voicebench(tmp_path, repo_id="no-slash", subsets=[SUBSETS["bbh"]])
    with pytest.raises(ValueError, match="timeout_s"):
        download_voicebench(tmp_path, subsets=[SUBSETS["bbh"]], timeout_s=0)
    with pytest.raises(ValueError, match="subsets"):
        download_voicebench(tmp_path, subsets=[])


def test_download_failures_are_infrastructure_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 9 of the loopback: the hub is unreachable.
    with pytest.raises(InfrastructureError, match="cannot reach the hub"):
        download_voicebench(tmp_path, endpoint="http://127.0.0.1:9", subsets=[SUBSETS["bbh"]], timeout_s=60)

    import huggingface_hub

    calls: list[dict] = []

    def fake_snapshot(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        if kwargs.get("revision") == "slow":
            time.sleep(2)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    with pytest.raises(InfrastructureError, match=r"did not finish within 0\.2s"):
        download_voicebench(tmp_path, revision="slow", subsets=[SUBSETS["bbh"]], timeout_s=0.2)
    with pytest.raises(InfrastructureError, match=r"no files for \['bbh/test-\*.parquet'\]"):
        download_voicebench(tmp_path, revision="abc", subsets=[SUBSETS["bbh"]])
    assert calls[-1]["repo_type"] == "dataset" and calls[-1]["allow_patterns"] == ["bbh/test-*.parquet"]
    assert calls[-1]["local_dir"] == tmp_path and calls[-1]["repo_id"] == "hlt-lab/voicebench"
    (tmp_path / "bbh").mkdir()
    (tmp_path / "bbh" / PARQUET_NAME).write_bytes(b"x")
    assert download_voicebench(tmp_path, revision="abc", subsets=[SUBSETS["bbh"]]) == tmp_path


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
