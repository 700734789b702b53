"""Test doubles for what cannot run in a fast unit test. Each passes the same contract as its real adapter
(see tests/sandbox_contract.py, run against both)."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from evaluation.audio import decode_npy_b64
from evaluation.errors import BuildFailed, InfrastructureError, StartFailed
from evaluation.sandbox.port import ContainerExit, RunningModel
from evaluation.types import Submission


class InProcessSandbox:
    """A Sandbox that serves a repo's constant answer (model/config.json) from an in-process server.

    It mirrors the example miner's behaviour without Docker: a config with ``"broken": "build"`` or
    ``"broken": "start"`` fails the way a bad Dockerfile or a crashing server would.
    """

    def __init__(self) -> None:
        self._runners: dict[str, web.AppRunner] = {}
        self.started: list[Submission] = []

    async def start(self, submission: Submission, repo_dir: Path) -> RunningModel:
        config = json.loads((repo_dir / "model" / "config.json").read_text(encoding="utf-8"))
        if config.get("broken") == "build":
            raise BuildFailed("Dockerfile: step 3 failed (fake)")
        if config.get("broken") == "start":
            raise StartFailed("container exited with code 1 before model_loaded (fake)")
        answer = str(config["answer"])

        async def health(_: web.Request) -> web.Response:
            return web.json_response(
                {"status": "healthy", "initialization_status": {"model_loaded": True, "error": None}}
            )

        async def v2t(request: web.Request) -> web.Response:
            payload = await request.json()
            try:
                decode_npy_b64(payload["audio_data"], max_bytes=64 * 2**20, max_samples=16_000 * 600)
            except (KeyError, ValueError) as exc:
                raise web.HTTPBadRequest(text=str(exc)) from exc
            return web.json_response({"text": f"The answer is {answer}."})

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/api/v1/health", health)
        app.router.add_post("/api/v1/v2t", v2t)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        container_id = f"fake-{submission.uid}-{submission.short_revision}-{port}"
        self._runners[container_id] = runner
        self.started.append(submission)
        return RunningModel(base_url=f"http://127.0.0.1:{port}", container_id=container_id, image_id="fake")

    async def stop(self, model: RunningModel) -> None:
        runner = self._runners.pop(model.container_id, None)
        if runner is not None:
            await runner.cleanup()

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        if model.container_id not in self._runners:
            raise InfrastructureError(f"fake: {model.container_id} was removed from outside the evaluation")
        return None  # an in-process server never exits by itself

    async def cleanup(self) -> int:
        count = len(self._runners)
        for runner in self._runners.values():
            await runner.cleanup()
        self._runners.clear()
        return count

    async def close(self) -> None:
        await self.cleanup()
