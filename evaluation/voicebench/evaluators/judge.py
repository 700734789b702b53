"""Judge-scored evaluators: open (1-5 quality) and qa (yes/no against a reference answer).

Like VoiceBench (gpt-4o-mini, 3 samples at temperature 0.5), each item gets ``samples`` judge samples:
open scores the mean of the parsed ratings, divided by 5 (so the subset's 0-100 score is VoiceBench's
"mean x 20"); qa scores 1 when a strict majority of the parsed verdicts is Yes, else 0.

Differences from the subnet's old validator, on purpose:
- a sample the judge answers unparsably is asked again once (one fresh request for all such samples);
  samples still unparsable are dropped, and if none parses the item raises JudgeUnavailable — the judge's
  failure is never turned into the miner's minimum score;
- a qa tie among the parsed verdicts (only possible after dropping samples, or with an even
  ``samples``) scores 0: the answer must convince a majority to earn the point;
- an empty (or whitespace-only) miner response scores the minimum (open 1/5, qa 0) without asking the
  judge: there is nothing to judge, and the judge's output would only add noise and cost.

These evaluators are asynchronous (:class:`~evaluation.judge.port.AsyncEvaluator`): callers must
``await ascore(...)``. Their ``score`` exists only so the registry keeps one return type; it raises.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import TYPE_CHECKING, TypeVar

from evaluation.judge.port import JudgeInfo, JudgeUnavailable
from evaluation.judge.prompts import (
    OPEN_CHOICES,
    PROMPT_VERSION,
    QA_CHOICES,
    parse_open,
    parse_qa,
    render_open,
    render_qa,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from evaluation.judge.client import JudgeClient
    from evaluation.voicebench.dataset import Item

_V = TypeVar("_V")

# A verdict is one digit or one word; guided decoding needs ~2 tokens, free-form judges get some slack.
MAX_VERDICT_TOKENS = 8


class JudgeRequired(RuntimeError):
    """An evaluator that needs the LLM judge was asked to score without one."""


class _JudgedEvaluator:
    """Shared sampling logic: ``samples`` judge replies, unparsable ones retried once, then dropped."""

    name = ""

    def __init__(self, judge: JudgeClient, samples: int = 3, temperature: float = 0.5) -> None:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        self._judge = judge
        self._samples = samples
        self._temperature = temperature
        # The prompts are this module's, so the recorded prompt version is the one actually rendered.
        self.info: JudgeInfo = dataclasses.replace(judge.info, prompt_version=PROMPT_VERSION)

    def score(self, item: Item, response: str) -> float:
        """Always raises :class:`JudgeRequired`: the judge is reached asynchronously, use ``ascore``."""
        raise JudgeRequired(f"the {self.name} evaluator needs the LLM judge: await ascore(), not score()")

    async def _verdicts(
        self, messages: list[dict[str, str]], choices: tuple[str, ...], parse: Callable[[str], _V | None]
    ) -> list[_V]:
        """Parsed verdicts of ``samples`` judge replies; raises JudgeUnavailable when none parses."""
        replies = await self._complete(messages, self._samples, choices)
        parsed = [parse(reply) for reply in replies]
        failed = sum(verdict is None for verdict in parsed)
        if failed:
            # One fresh request for every unparsable sample: a sampled judge may do better next time.
            parsed += [parse(reply) for reply in await self._complete(messages, failed, choices)]
        verdicts = [verdict for verdict in parsed if verdict is not None]
        if not verdicts:
            raise JudgeUnavailable("judge output unparsable")
        return verdicts

    async def _complete(self, messages: list[dict[str, str]], n: int, choices: tuple[str, ...]) -> list[str]:
        return await self._judge.complete(
            messages, n=n, temperature=self._temperature, max_tokens=MAX_VERDICT_TOKENS, choices=choices
        )


class OpenEvaluator(_JudgedEvaluator):
    """Open-ended answers (alpacaeval, commoneval, wildvoice): item score = mean judge rating (1-5) / 5."""

    name = "open"

    async def ascore(self, item: Item, response: str) -> float:
        """Judge ``response`` to ``item.prompt``; raises JudgeUnavailable when the judge fails."""
        if not response.strip():
            return 1 / 5
        ratings = await self._verdicts(render_open(item.prompt, response), OPEN_CHOICES, parse_open)
        return statistics.fmean(ratings) / 5


class QAEvaluator(_JudgedEvaluator):
    """Reference QA (sd-qa): 1 when most parsed judge verdicts say the answer matches the reference."""

    name = "qa"

    async def ascore(self, item: Item, response: str) -> float:
        """Judge ``response`` against ``item.reference``; raises JudgeUnavailable when the judge fails."""
        if item.reference is None:
            # A dataset problem, not the miner's: fail loudly rather than score against nothing.
            raise ValueError(f"qa item {item.subset}/{item.item_id} has no reference answer")
        if not response.strip():
            return 0.0
        messages = render_qa(item.prompt, item.reference, response)
        votes = await self._verdicts(messages, QA_CHOICES, parse_qa)
        yes = sum(votes)
        return 1.0 if yes > len(votes) - yes else 0.0
