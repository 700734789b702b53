"""Health checks for ``voice-validator status``: is the judge answering, is the Docker daemon answering.

Each check has a short deadline and reports instead of raising, so a status command never hangs on a
dead socket and always prints what it could find out.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp

from evaluation.sandbox.docker_sandbox import docker_ping
from validator.app import judge_needed
from validator.settings import Settings

_MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok`` None means not applicable (e.g. no judge configured)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        """``judge: ok (Qwen/...)`` / ``docker: DOWN (...)`` / ``judge: not needed``."""
        state = {True: "ok", False: "DOWN", None: "-"}[self.ok]
        return f"{self.name}: {state} ({self.detail})" if self.detail else f"{self.name}: {state}"


def judge_base_url(settings: Settings) -> str:
    """Where the judge answers: the operator's URL (``judge url``) or the server this validator starts."""
    if settings.judge == "url" and settings.judge_url:
        return settings.judge_url
    return f"http://127.0.0.1:{settings.judge_port}"


def models_url(base_url: str) -> str:
    """``.../v1/models`` for a server root or an OpenAI base URL ending in ``/v1``."""
    root = base_url.rstrip("/")
    return (root[: -len("/v1")] if root.endswith("/v1") else root) + "/v1/models"


async def check_judge(settings: Settings, timeout_s: float) -> Check:
    """GET the judge's /v1/models (vLLM and llama.cpp both serve it) within ``timeout_s``."""
    if not judge_needed(settings):
        return Check("judge", None, "not needed: no judge-scored subset configured")
    url = models_url(judge_base_url(settings))
    try:
        # trust_env=False: a proxy from the environment must not stand between us and a loopback judge.
        async with aiohttp.ClientSession(trust_env=False) as session:
            async with session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
            ) as response:
                body = await response.content.read(_MAX_BODY_BYTES)
                if response.status != 200:
                    return Check("judge", False, f"{url}: HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Check("judge", False, f"{url}: {type(exc).__name__} {exc}".strip())
    try:
        data = json.loads(body).get("data", [])
        models = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError):
        return Check("judge", False, f"{url}: answer is not a model list")
    return Check("judge", bool(models), f"{url}: {', '.join(models) or 'serves no model'}")


async def check_docker(settings: Settings, timeout_s: float) -> Check:
    """Ping the Docker daemon the sandbox uses, within ``timeout_s``."""
    where = settings.docker_host or "DOCKER_HOST or the default socket"
    try:
        # The client's own timeout ends the thread too; the outer one is a backstop.
        version = await asyncio.wait_for(
            asyncio.to_thread(docker_ping, settings.docker_host, timeout_s), timeout_s + 1
        )
    except TimeoutError:
        return Check("docker", False, f"{where}: no answer within {timeout_s:g}s")
    except Exception as exc:  # any failure of the daemon or the socket is the answer we report
        return Check("docker", False, f"{where}: {type(exc).__name__}: {exc}")
    return Check("docker", True, f"{where}: Docker {version}")


async def health_checks(settings: Settings) -> list[Check]:
    """Every check, run at once."""
    timeout_s = settings.health_timeout_s
    return list(await asyncio.gather(check_docker(settings, timeout_s), check_judge(settings, timeout_s)))
