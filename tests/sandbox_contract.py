"""What every Sandbox adapter must do, as reusable checks: run by the Docker tests against the real
adapter and by the fast tests against the in-process fake."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest

from evaluation.errors import BuildFailed, MinerResponseError, SubmissionRejected
from evaluation.miner_client import MinerClient
from evaluation.sandbox.port import Sandbox
from evaluation.types import Submission


async def check_serves_then_stops(
    sandbox: Sandbox, submission: Submission, repo_dir: Path, answer: str
) -> None:
    """A good repo starts ready, answers v2t with its configured letter, and is gone after stop()."""
    model = await sandbox.start(submission, repo_dir)
    try:
        async with aiohttp.ClientSession() as session:
            client = MinerClient(model.base_url, session, timeout_s=10)
            assert (await client.health()).ready
            tone = np.sin(np.linspace(0, 200 * np.pi, 16_000)).astype(np.float32)
            assert f"answer is {answer}" in await client.v2t(tone, 16_000)
    finally:
        await sandbox.stop(model)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(MinerResponseError):
            await MinerClient(model.base_url, session, timeout_s=2).health()
    await sandbox.stop(model)  # idempotent


async def check_build_failure(sandbox: Sandbox, submission: Submission, repo_dir: Path) -> None:
    """A repo that cannot build is the miner's fault, reported as BuildFailed."""
    with pytest.raises(BuildFailed) as info:
        await sandbox.start(submission, repo_dir)
    assert isinstance(info.value, SubmissionRejected) and str(info.value)
