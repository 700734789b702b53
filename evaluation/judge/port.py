"""What the evaluation library needs from an LLM judge: chat completions, and who the judge is.

The judge is an OpenAI-compatible server (vLLM on a GPU, llama.cpp's server on a CPU). Evaluators that use
it are asynchronous; the pipeline awaits them. A judge that cannot answer raises :class:`JudgeUnavailable`,
an infrastructure error: the evaluation is retried later and no miner is scored against an outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from evaluation.errors import InfrastructureError

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item


class JudgeUnavailable(InfrastructureError):
    """The judge did not answer (down, timing out, 5xx) after its retries."""


@dataclass(frozen=True)
class JudgeInfo:
    """Recorded with every judged score so results can be reproduced."""

    model: str
    revision: str
    prompt_version: str
    low_quality: bool = False  # the CPU fallback: fine for demos and tests, not for real weights


@runtime_checkable
class AsyncEvaluator(Protocol):
    """An evaluator whose verdict needs I/O (the judge). ``ascore`` returns an item score in [0, 1]."""

    name: str

    async def ascore(self, item: Item, response: str) -> float:
        """Judge ``response`` to ``item``; raises :class:`JudgeUnavailable` when the judge is down."""
        ...
