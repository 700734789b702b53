"""The evaluator contract: turn one miner response to one item into a score in [0, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item


class Evaluator(Protocol):
    """Scores a response. Deterministic evaluators are pure: same item and response, same score.

    ``name`` is the registry key (see ``evaluation.voicebench.evaluators.get_evaluator``).
    """

    name: str

    def score(self, item: Item, response: str) -> float:
        """Return the response's score for ``item``, between 0 and 1 inclusive."""
        ...
