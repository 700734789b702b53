"""Evaluator registry: which evaluator scores which VoiceBench subset.

Only the deterministic multiple-choice evaluator exists so far; judge-backed evaluators (open, qa) and
the rule-based ones (ifeval, bbh, harm) register here as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from evaluation.voicebench.evaluators.base import Evaluator
from evaluation.voicebench.evaluators.mcq import MultipleChoiceEvaluator

EVALUATORS: Mapping[str, Callable[[], Evaluator]] = MappingProxyType({"mcq": MultipleChoiceEvaluator})

# Subset -> evaluator name, as in VoiceBench (mmsu also uses mcq once its data is wired in).
SUBSET_EVALUATOR: Mapping[str, str] = MappingProxyType({"openbookqa": "mcq"})


def get_evaluator(name: str) -> Evaluator:
    """A new evaluator registered under ``name``; raises KeyError naming the known ones otherwise."""
    try:
        factory = EVALUATORS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}") from None
    return factory()


__all__ = ["EVALUATORS", "SUBSET_EVALUATOR", "Evaluator", "MultipleChoiceEvaluator", "get_evaluator"]
