"""Slots for the judge-scored evaluators (open: 1-5 quality; qa: yes/no against a reference).

They need the local LLM judge, which arrives with its own issue ("local LLM judge"). Until then these
classes keep the registry complete (every ``EvaluatorName`` resolves) and refuse to score: a made-up
score would silently enter miners' weights, an exception cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item


class JudgeRequired(RuntimeError):
    """An evaluator that needs the LLM judge was asked to score without one."""


class _JudgePlaceholder:
    """Base of the judge slots: ``score`` raises :class:`JudgeRequired` naming the evaluator."""

    name = ""

    def score(self, item: Item, response: str) -> float:
        """Always raises :class:`JudgeRequired`; the judge-backed implementation replaces this class."""
        raise JudgeRequired(f"the {self.name} evaluator needs the LLM judge (issue: local LLM judge)")


class OpenEvaluator(_JudgePlaceholder):
    """Open-ended answers (alpacaeval, commoneval, wildvoice): judge score 1-5, item score = score / 5."""

    name = "open"


class QAEvaluator(_JudgePlaceholder):
    """Reference QA (sd-qa): judge decides yes/no whether the answer matches the reference."""

    name = "qa"
