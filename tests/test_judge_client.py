"""JudgeClient against a scripted OpenAI-compatible server, and the open/qa evaluators' scoring math."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from evaluation.errors import InfrastructureError
from evaluation.judge.client import JudgeClient
from evaluation.judge.port import AsyncEvaluator, JudgeInfo, JudgeUnavailable
from evaluation.judge.prompts import PROMPT_VERSION
from evaluation.voicebench.dataset import Item
from evaluation.voicebench.evaluators import (
    JudgeRequired,
    OpenEvaluator,
    QAEvaluator,
    get_evaluator,
)
from tests.judge_fake import FakeJudge, garbage, hang, reply, status

INFO = JudgeInfo(model="fake-judge", revision="0" * 40, prompt_version="unset")
MESSAGES = [{"role": "user", "content": "rate this"}]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _client(judge: FakeJudge, session: aiohttp.ClientSession, **kw: Any) -> JudgeClient:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5)
    return JudgeClient(judge.url, session, model="fake-judge", info=INFO, **kw)


def _item(
    subset: str = "commoneval", prompt: str = "what is the capital of France", ref: str | None = None
) -> Item:
    return Item(subset, f"{subset}-0", np.zeros(1, dtype=np.float32), 16_000, prompt, ref, {})


# --- client -------------------------------------------------------------------------------------------


async def test_n_samples_in_one_request_with_guided_choice(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(reply("4", "5", "3")) as judge:
        out = await _client(judge, session).complete(
            MESSAGES, n=3, temperature=0.5, max_tokens=8, choices=["1", "2", "3", "4", "5"]
        )
    assert out == ["4", "5", "3"]
    assert judge.requests == 1
    body = judge.bodies[0]
    assert body["n"] == 3 and body["temperature"] == 0.5 and body["max_tokens"] == 8
    assert body["model"] == "fake-judge" and body["messages"] == MESSAGES
    assert body["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}


async def test_without_n_or_guided_support(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=reply("Yes")) as judge:
        client = _client(judge, session, supports_n=False, supports_guided=False)
        out = await client.complete(MESSAGES, n=3, temperature=0.5, max_tokens=8, choices=["Yes", "No"])
    assert out == ["Yes"] * 3
    assert judge.requests == 3
    assert all(b["n"] == 1 and "structured_outputs" not in b for b in judge.bodies)


async def test_null_content_is_empty_string(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(reply(None)) as judge:
        assert await _client(judge, session).complete(MESSAGES, n=1, temperature=0, max_tokens=4) == [""]


async def test_retries_transient_faults_then_succeeds(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(status(503), status(429), garbage(), hang(1.0), reply("2")) as judge:
        client = _client(judge, session, retries=4, timeout_s=0.2)
        out = await client.complete(MESSAGES, n=1, temperature=0, max_tokens=4)
    assert out == ["2"]
    assert judge.requests == 5


async def test_5xx_forever_gives_up_within_max_wait(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=status(500, "boom")) as judge:
        client = _client(judge, session, retries=100, backoff_s=0.05, max_wait_s=0.5)
        started = time.monotonic()
        with pytest.raises(JudgeUnavailable, match="HTTP 500") as info:
            await client.complete(MESSAGES, n=1, temperature=0, max_tokens=4)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.3  # the deadline, plus scheduling slack
    assert 2 <= judge.requests < 100
    assert isinstance(info.value, InfrastructureError)


async def test_retries_are_counted(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=status(502)) as judge:
        with pytest.raises(JudgeUnavailable, match=r"after 3 attempt\(s\)"):
            await _client(judge, session, retries=2).complete(MESSAGES, n=1, temperature=0, max_tokens=4)
    assert judge.requests == 3


async def test_slow_judge_times_out_and_is_unavailable(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=hang(2.0)) as judge:
        client = _client(judge, session, retries=1, timeout_s=0.1)
        with pytest.raises(JudgeUnavailable, match=r"within 0\.1s"):
            await client.complete(MESSAGES, n=1, temperature=0, max_tokens=4)
    assert judge.requests == 2


@pytest.mark.parametrize("code", [400, 401, 404, 422])
async def test_4xx_is_a_config_error_raised_at_once(session: aiohttp.ClientSession, code: int) -> None:
    async with FakeJudge(default=status(code, "The model `x` does not exist.")) as judge:
        with pytest.raises(JudgeUnavailable, match=f"HTTP {code}.*does not exist"):
            await _client(judge, session, retries=4).complete(MESSAGES, n=1, temperature=0, max_tokens=4)
    assert judge.requests == 1


async def test_wrong_choice_count_is_retried(session: aiohttp.ClientSession) -> None:
    async def one_choice(body: dict[str, Any]) -> Any:
        return await reply("3")({**body, "n": 1})

    async with FakeJudge(one_choice, reply("3")) as judge:
        out = await _client(judge, session).complete(MESSAGES, n=2, temperature=0, max_tokens=4)
    assert out == ["3", "3"] and judge.requests == 2


async def test_oversized_body_is_refused(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=reply("x" * 5000)) as judge:
        client = _client(judge, session, retries=1, max_response_bytes=1000)
        with pytest.raises(JudgeUnavailable, match="cap"):
            await client.complete(MESSAGES, n=1, temperature=0, max_tokens=4)


async def test_connection_refused_is_unavailable(session: aiohttp.ClientSession) -> None:
    async with FakeJudge() as judge:
        url = judge.url  # closed on exit: nothing listens there any more
    client = JudgeClient(url, session, model="m", info=INFO, retries=1, backoff_s=0.01)
    with pytest.raises(JudgeUnavailable, match="connection failed"):
        await client.complete(MESSAGES, n=1, temperature=0, max_tokens=4)


async def test_concurrency_bound_is_respected(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=reply("5", delay=0.05)) as judge:
        client = _client(judge, session, concurrency=7)
        results = await asyncio.gather(
            *(client.complete(MESSAGES, n=1, temperature=0, max_tokens=4) for _ in range(50))
        )
    assert results == [["5"]] * 50
    assert judge.requests == 50
    assert judge.max_in_flight == 7


# --- evaluators ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (("5", "5", "5"), 1.0),
        (("1", "1", "1"), 0.2),
        (("4", "5", "3"), 0.8),
        (("2", "3", "3"), (8 / 3) / 5),
    ],
)
async def test_open_mean_of_ratings(
    session: aiohttp.ClientSession, outputs: tuple[str, ...], expected: float
) -> None:
    async with FakeJudge(reply(*outputs)) as judge:
        evaluator = OpenEvaluator(_client(judge, session))
        assert await evaluator.ascore(_item(), "Paris.") == pytest.approx(expected)
    assert judge.requests == 1
    assert judge.bodies[0]["n"] == 3 and judge.bodies[0]["temperature"] == 0.5
    assert judge.bodies[0]["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}


async def test_open_retries_unparsable_once_then_drops(session: aiohttp.ClientSession) -> None:
    # Two of three unparsable; the retry (n=2) yields one parsable and one not: mean of [4, 2].
    async with FakeJudge(reply("4", "Score: 5", "great"), reply("2", "five")) as judge:
        score = await OpenEvaluator(_client(judge, session)).ascore(_item(), "Paris.")
    assert score == pytest.approx(3 / 5)
    assert [b["n"] for b in judge.bodies] == [3, 2]


async def test_open_nothing_parsable_is_judge_unavailable(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=reply("I think it deserves a 5")) as judge:
        with pytest.raises(JudgeUnavailable, match="unparsable"):
            await OpenEvaluator(_client(judge, session)).ascore(_item(), "Paris.")
    assert judge.requests == 2  # the first request and one retry, never more


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (("Yes", "Yes", "No"), 1.0),
        (("No", "yes", "No"), 0.0),
        (("Yes", "Yes", "Yes"), 1.0),
        (("Yes.", "No", "Yes"), 1.0),
    ],
)
async def test_qa_majority(session: aiohttp.ClientSession, outputs: tuple[str, ...], expected: float) -> None:
    async with FakeJudge(reply(*outputs)) as judge:
        evaluator = QAEvaluator(_client(judge, session))
        assert await evaluator.ascore(_item("sd-qa", "capital of France?", "Paris"), "Paris") == expected
    assert judge.bodies[0]["structured_outputs"] == {"choice": ["Yes", "No"]}
    assert "Paris" in judge.bodies[0]["messages"][1]["content"]


async def test_qa_tie_after_dropping_scores_zero(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(reply("Yes", "No", "maybe"), reply("perhaps")) as judge:
        score = await QAEvaluator(_client(judge, session)).ascore(_item("sd-qa", "q", "Paris"), "Paris")
    assert score == 0.0


async def test_qa_without_reference_is_a_dataset_error(session: aiohttp.ClientSession) -> None:
    async with FakeJudge() as judge:
        with pytest.raises(ValueError, match="no reference"):
            await QAEvaluator(_client(judge, session)).ascore(_item("sd-qa", "q", None), "Paris")
    assert judge.requests == 0


@pytest.mark.parametrize("response", ["", "   ", "\n\t"])
async def test_empty_answer_scores_minimum_without_judge(
    session: aiohttp.ClientSession, response: str
) -> None:
    async with FakeJudge() as judge:
        client = _client(judge, session)
        assert await OpenEvaluator(client).ascore(_item(), response) == pytest.approx(0.2)
        assert await QAEvaluator(client).ascore(_item("sd-qa", "q", "Paris"), response) == 0.0
    assert judge.requests == 0


async def test_judge_outage_propagates_from_evaluator(session: aiohttp.ClientSession) -> None:
    async with FakeJudge(default=status(503)) as judge:
        client = _client(judge, session, retries=1)
        with pytest.raises(JudgeUnavailable):
            await OpenEvaluator(client).ascore(_item(), "Paris.")


async def test_registry_and_info(session: aiohttp.ClientSession) -> None:
    async with FakeJudge() as judge:
        client = _client(judge, session)
        for name in ("open", "qa"):
            with pytest.raises(JudgeRequired, match=f"the {name} evaluator needs the LLM judge"):
                get_evaluator(name)
            evaluator = get_evaluator(name, judge=client)
            assert evaluator.name == name
            assert isinstance(evaluator, AsyncEvaluator)
            assert evaluator.info == JudgeInfo("fake-judge", "0" * 40, PROMPT_VERSION)  # type: ignore[attr-defined]
            with pytest.raises(JudgeRequired, match="ascore"):
                evaluator.score(_item(), "x")
        # Deterministic evaluators ignore the judge argument.
        assert get_evaluator("mcq", judge=client).name == "mcq"
        assert not isinstance(get_evaluator("mcq"), AsyncEvaluator)
