"""VoiceBench's subsets as this project evaluates them: dataset config, splits, evaluator, and the
leaderboard column each one feeds. Facts from the benchmark (dataset ``hlt-lab/voicebench``)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

EvaluatorName = Literal["open", "qa", "mcq", "bbh", "ifeval", "harm"]

SD_QA_REGIONS = ("aus", "gbr", "ind_n", "ind_s", "irl", "kenya", "nga", "nzl", "phl", "usa", "zaf")
MMSU_SUBJECTS = (
    "biology", "business", "chemistry", "economics", "engineering", "health",
    "history", "law", "other", "philosophy", "physics", "psychology",
)  # fmt: skip


@dataclass(frozen=True)
class SubsetSpec:
    """One leaderboard column's data and how its answers are judged.

    ``splits`` are the splits evaluated by default; ``all_splits`` every split the config has (sd-qa's
    regions: the leaderboard uses ``usa`` only). Items of every split are pooled into one subset score.
    ``judge_scale`` marks the 1-5 judge columns, whose item scores are the judge's score / 5 so that the
    subset's 0-100 score equals VoiceBench's "mean x 20".
    """

    name: str
    column: str
    evaluator: EvaluatorName
    splits: tuple[str, ...] = ("test",)
    all_splits: tuple[str, ...] = ("test",)
    judge_scale: bool = False


SUBSETS: MappingProxyType[str, SubsetSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            SubsetSpec("alpacaeval_full", "AlpacaEval", "open", judge_scale=True),
            SubsetSpec("commoneval", "CommonEval", "open", judge_scale=True),
            SubsetSpec("wildvoice", "WildVoice", "open", judge_scale=True),
            SubsetSpec("sd-qa", "SD-QA", "qa", splits=("usa",), all_splits=SD_QA_REGIONS),
            SubsetSpec("mmsu", "MMSU", "mcq", splits=MMSU_SUBJECTS, all_splits=MMSU_SUBJECTS),
            SubsetSpec("openbookqa", "OpenBookQA", "mcq"),
            SubsetSpec("bbh", "BBH", "bbh"),
            SubsetSpec("ifeval", "IFEval", "ifeval"),
            SubsetSpec("advbench", "AdvBench", "harm"),
        )
    }
)

LEADERBOARD_COLUMNS = tuple(spec.column for spec in SUBSETS.values())


def subset_spec(name: str) -> SubsetSpec:
    """The spec of ``name``; raises KeyError naming the known subsets otherwise."""
    try:
        return SUBSETS[name]
    except KeyError:
        raise KeyError(f"unknown VoiceBench subset {name!r}; known: {sorted(SUBSETS)}") from None
