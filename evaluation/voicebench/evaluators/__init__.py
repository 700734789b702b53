"""Evaluator registry: which evaluator scores which VoiceBench subset.

Keys are the ``EvaluatorName`` values of ``evaluation.voicebench.subsets``. Rule-based and deterministic:
mcq (mmsu, openbookqa), bbh, ifeval, harm (advbench). Judge-based and asynchronous: open and qa
(:class:`~evaluation.judge.port.AsyncEvaluator`, ``await ascore(...)``); they need a
:class:`~evaluation.judge.client.JudgeClient`, and asking for one without it raises :class:`JudgeRequired`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, get_args

from evaluation.voicebench.evaluators.base import Evaluator
from evaluation.voicebench.evaluators.bbh import BBHEvaluator
from evaluation.voicebench.evaluators.harm import HarmEvaluator
from evaluation.voicebench.evaluators.ifeval import IFEvalEvaluator
from evaluation.voicebench.evaluators.judge import JudgeRequired, OpenEvaluator, QAEvaluator
from evaluation.voicebench.evaluators.mcq import MultipleChoiceEvaluator
from evaluation.voicebench.subsets import SUBSETS, EvaluatorName

if TYPE_CHECKING:
    from evaluation.judge.client import JudgeClient

# Factories: rule-based ones take no argument, judged ones (JUDGED_EVALUATORS) take the judge client.
EVALUATORS: Mapping[str, Callable[..., Evaluator]] = MappingProxyType(
    {
        "open": OpenEvaluator,
        "qa": QAEvaluator,
        "mcq": MultipleChoiceEvaluator,
        "bbh": BBHEvaluator,
        "ifeval": IFEvalEvaluator,
        "harm": HarmEvaluator,
    }
)
# A new EvaluatorName without a class here would only fail when its subset is scored; fail at import.
if set(EVALUATORS) != set(get_args(EvaluatorName)):
    raise ImportError(f"EVALUATORS {sorted(EVALUATORS)} must match EvaluatorName {get_args(EvaluatorName)}")

JUDGED_EVALUATORS = frozenset({"open", "qa"})

# Subset -> evaluator name, derived from the subset table so the two cannot drift apart.
SUBSET_EVALUATOR: Mapping[str, str] = MappingProxyType(
    {name: spec.evaluator for name, spec in SUBSETS.items()}
)


def get_evaluator(name: str, *, judge: JudgeClient | None = None) -> Evaluator:
    """A new evaluator registered under ``name``; raises KeyError naming the known ones otherwise.

    open and qa need ``judge`` (JudgeRequired without it) and are asynchronous: check
    ``isinstance(evaluator, AsyncEvaluator)`` and ``await evaluator.ascore(...)``; their ``score`` raises.
    Deterministic evaluators ignore ``judge``.
    """
    try:
        factory = EVALUATORS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}") from None
    if name in JUDGED_EVALUATORS:
        if judge is None:
            raise JudgeRequired(f"the {name} evaluator needs the LLM judge: pass judge=JudgeClient(...)")
        return factory(judge)
    return factory()


__all__ = [
    "EVALUATORS",
    "JUDGED_EVALUATORS",
    "SUBSET_EVALUATOR",
    "BBHEvaluator",
    "Evaluator",
    "HarmEvaluator",
    "IFEvalEvaluator",
    "JudgeRequired",
    "MultipleChoiceEvaluator",
    "OpenEvaluator",
    "QAEvaluator",
    "get_evaluator",
]
