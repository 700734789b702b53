"""A scripted OpenAI-compatible judge on 127.0.0.1 for tests: ``POST /v1/chat/completions`` only.

Each request takes the next step of ``script`` (then ``default``). A step is an async callable from the
request body to a response; helpers build the usual ones: fixed replies, HTTP errors, slow replies and
garbage. The server records request bodies and counts the most requests in flight at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Step = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


def reply(*contents: str | None, delay: float = 0.0) -> Step:
    """Answer with the request's ``n`` choices, cycling through ``contents`` (None: a null content)."""

    async def step(body: dict[str, Any]) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        n = int(body.get("n", 1))
        texts = list(itertools.islice(itertools.cycle(contents), n))
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            for i, text in enumerate(texts)
        ]
        return web.json_response({"id": "fake", "object": "chat.completion", "choices": choices})

    return step


def status(code: int, text: str = "scripted error") -> Step:
    """Answer with HTTP ``code`` and an OpenAI-style error body."""

    async def step(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": {"message": text, "code": code}}, status=code)

    return step


def garbage(payload: bytes = b"<html>not json</html>") -> Step:
    """Answer 200 with a body that is not a chat completion."""

    async def step(body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(body=payload, content_type="text/html")

    return step


def hang(seconds: float) -> Step:
    """Answer nothing for ``seconds`` (longer than the client's timeout), then an empty 200."""

    async def step(body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(text="")

    return step


class FakeJudge:
    """The server. ``async with FakeJudge(...) as judge:`` then point a client at ``judge.url``."""

    def __init__(self, *script: Step, default: Step | None = None, port: int = 0) -> None:
        self.script: list[Step] = list(script)
        self.port = port  # 0: any free port
        self.default: Step = default or reply("3")
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def requests(self) -> int:
        """Requests received so far."""
        return len(self.bodies)

    async def __aenter__(self) -> FakeJudge:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)  # what `--judge url` attaches with
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "fake-judge", "object": "model"}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.bodies.append(body)
        step = self.script.pop(0) if self.script else self.default
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await step(body)
        finally:
            self.in_flight -= 1
