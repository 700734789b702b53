"""Judge benchmarks, against a real judge server (started here on the CPU, or --url).

    .venv/bin/python benchmarks/judge.py concurrency [--requests 24] [--concurrency 8] [--url URL]
    .venv/bin/python benchmarks/judge.py injection [--url URL]

``concurrency``: the same N judge requests sent with the client's bounded concurrency and then one at a
time, against the same server in one run; prints both times and their ratio. llama.cpp's server decodes
one request at a time, so on the CPU judge the ratio stays near 1; vLLM batches requests in flight, which
is where the concurrency pays.

``injection``: each answer of the team's injection set (tests/judge_injections.json) judged as an open
answer and as a reference answer to "What is the capital of France?" (reference: Paris), beside the same
wrong answer without the injection ("The capital is Lyon."). Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np

from evaluation.judge.client import JudgeClient
from evaluation.judge.port import JudgeInfo
from evaluation.judge.prompts import PROMPT_VERSION, render_open
from evaluation.judge.server import JudgeServer, attach, llama_cpp_spec, pick_free_port
from evaluation.voicebench.dataset import Item
from evaluation.voicebench.evaluators.judge import OpenEvaluator, QAEvaluator

QUESTION = "What is the capital of France?"
CLEAN_WRONG = "The capital is Lyon."
INJECTIONS = Path(__file__).resolve().parents[1] / "tests" / "judge_injections.json"


@asynccontextmanager
async def judge_client(url: str | None, concurrency: int, workdir: Path) -> AsyncIterator[JudgeClient]:
    """A client for ``url``, or for a CPU judge (llama.cpp + SmolLM2) started for the run."""
    async with aiohttp.ClientSession() as session:
        if url:
            model = await attach(url)
            info = JudgeInfo(model, "unpinned", PROMPT_VERSION)
            yield JudgeClient(url, session, model=model, info=info, concurrency=concurrency)
            return
        spec = llama_cpp_spec(port=pick_free_port())
        server = JudgeServer(spec, log_path=workdir / "judge-benchmark.log")
        await server.start()
        try:
            await server.wait_ready()
            info = JudgeInfo(spec.model_name, spec.info.revision, PROMPT_VERSION, low_quality=True)
            yield JudgeClient(
                server.base_url,
                session,
                model=spec.model_name,
                info=info,
                concurrency=concurrency,
                supports_n=False,
                supports_guided=False,
                grammar_choices=True,
            )
        finally:
            await server.stop()


async def run_concurrency(client: JudgeClient, requests: int) -> None:
    """Time the same requests bounded-concurrent and sequential; print the ratio."""
    prompts = [render_open(f"{QUESTION} (variant {i})", f"Paris, answer {i}.") for i in range(requests)]

    async def one(messages: list[dict[str, str]]) -> None:
        await client.complete(messages, n=1, temperature=0.0, max_tokens=4, choices=["1", "2", "3", "4", "5"])

    await one(prompts[0])  # warm-up: model pages and caches
    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    concurrent_s = time.perf_counter() - started
    started = time.perf_counter()
    for p in prompts:
        await one(p)
    sequential_s = time.perf_counter() - started
    print(f"judge: {client.model} ({'low quality' if client.info.low_quality else 'production'})")
    print(f"{requests} requests: concurrent {concurrent_s:.2f}s, one at a time {sequential_s:.2f}s")
    print(f"speed-up of bounded concurrency: {sequential_s / concurrent_s:.2f}x")


def load_injections() -> list[tuple[str, str]]:
    """(id, answer) pairs of the injection set, expanded as the tests expand them."""
    data = json.loads(INJECTIONS.read_text(encoding="utf-8"))
    cases = []
    for case in data["answers"]:
        answer = case["answer"] * int(case.get("repeat", 1)) + case.get("suffix", "")
        if "{OTHER_END}" in answer:
            answer = answer.replace("{OTHER_END}", "<<<END_ANSWER 0000000000000000>>>")
        cases.append((case["id"], answer))
    return cases


async def run_injection(client: JudgeClient) -> None:
    """Judge each injected answer beside the clean wrong answer; print a Markdown table."""
    item = Item("commoneval", "injection", np.zeros(1, np.float32), 16_000, QUESTION, "Paris", {})
    open_eval, qa_eval = OpenEvaluator(client), QAEvaluator(client)

    async def both(answer: str) -> tuple[float, float]:
        opens = [await open_eval.ascore(item, answer) * 5 for _ in range(3)]
        qas = [await qa_eval.ascore(item, answer) for _ in range(3)]
        return statistics.mean(opens), statistics.mean(qas)

    clean_open, clean_qa = await both(CLEAN_WRONG)
    print(f"judge: {client.model}; clean wrong answer: open {clean_open:.2f}/5, qa yes-rate {clean_qa:.2f}\n")
    print("| injection | open (1-5) | change | qa yes-rate | change |")
    print("|---|---:|---:|---:|---:|")
    for case_id, answer in load_injections():
        got_open, got_qa = await both(answer)
        print(
            f"| {case_id} | {got_open:.2f} | {got_open - clean_open:+.2f} | {got_qa:.2f} | "
            f"{got_qa - clean_qa:+.2f} |"
        )


def main() -> None:
    """Command line of the judge benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["concurrency", "injection"])
    parser.add_argument("--url", help="OpenAI-compatible judge URL; default: start the CPU judge here")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("var"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    async def go() -> None:
        async with judge_client(args.url, args.concurrency, args.workdir) as client:
            if args.mode == "concurrency":
                await run_concurrency(client, args.requests)
            else:
                await run_injection(client)

    asyncio.run(go())


if __name__ == "__main__":
    main()
