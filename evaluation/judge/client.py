"""HTTP client of the judge: an OpenAI-compatible ``/v1/chat/completions`` server (vLLM or llama.cpp).

Requests run concurrently under a semaphore so that vLLM's continuous batching sees many at once, while
the number in flight stays bounded. Transient faults (timeouts, dropped connections, HTTP 429 and 5xx,
malformed bodies) are retried with exponential backoff; anything that still fails raises
:class:`~evaluation.judge.port.JudgeUnavailable` — an infrastructure error, so no miner is scored
against a judge outage. A 4xx other than 429 is a configuration error (wrong model name, bad request)
and raises at once: retrying cannot fix it.

Guided choice: when ``choices`` is given and the server supports it, the request carries vLLM's
structured-outputs extension ``"structured_outputs": {"choice": [...]}``, which forces the reply to be
exactly one of the choices. That is the field current vLLM accepts; the older top-level
``guided_choice`` was deprecated and removed in vLLM 0.12, so the judge server needs a vLLM that has
``structured_outputs`` (0.11 or later). llama.cpp's server takes a GBNF ``grammar`` instead
(``grammar_choices=True``): a grammar that admits exactly the choices. Without either, the evaluators'
strict parsers handle free-form replies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from evaluation.judge.port import JudgeInfo, JudgeUnavailable
from evaluation.progress import Observe

CHAT_PATH = "/v1/chat/completions"

_READ_CHUNK = 64 * 1024
_MAX_REASON_CHARS = 200


class _Retryable(Exception):
    """A fault worth another attempt; its message is the reason reported if attempts run out."""


class JudgeClient:
    """Chat completions from one judge server over a caller-owned :class:`aiohttp.ClientSession`.

    ``concurrency`` bounds requests in flight; ``timeout_s`` is each attempt's whole-request deadline;
    ``retries`` is how many extra attempts a request gets, spaced ``backoff_s * 2**k`` apart; all attempts
    of one request together never take longer than ``max_wait_s`` (counted from its first attempt; time
    spent queued behind the semaphore is not counted, as it measures load, not judge health).
    ``supports_n``: the server honours ``n`` (vLLM does; llama.cpp's server does not), else ``n``
    requests are sent concurrently. ``supports_guided``: the server understands structured outputs;
    ``grammar_choices``: it takes a GBNF grammar (llama.cpp) to the same effect.
    ``api_key`` is sent as a bearer token when set (vLLM's ``--api-key``). ``observe`` hears each HTTP
    attempt's duration and outcome ("ok" or a :func:`attempt_outcome` word) for metrics.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        model: str,
        info: JudgeInfo,
        concurrency: int = 32,
        timeout_s: float = 60,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_wait_s: float = 600,
        supports_n: bool = True,
        supports_guided: bool = True,
        grammar_choices: bool = False,
        max_response_bytes: int = 2**20,
        api_key: str | None = None,
        observe: Observe | None = None,
    ) -> None:
        if concurrency < 1 or retries < 0:
            raise ValueError("concurrency must be >= 1 and retries >= 0")
        if timeout_s <= 0 or max_wait_s <= 0 or backoff_s < 0 or max_response_bytes <= 0:
            raise ValueError("timeout_s, max_wait_s and max_response_bytes must be positive, backoff_s >= 0")
        base = base_url.rstrip("/")
        # Accept both the server root and the OpenAI-style base URL that ends in /v1.
        self._url = (base[: -len("/v1")] if base.endswith("/v1") else base) + CHAT_PATH
        self._session = session
        self._model = model
        self._info = info
        self._semaphore = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_wait_s = max_wait_s
        self._supports_n = supports_n
        self._supports_guided = supports_guided
        self._grammar_choices = grammar_choices
        self._max_response_bytes = max_response_bytes
        self._observe = observe
        self._headers = {"Accept-Encoding": "identity"}  # the byte cap then measures what is sent
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    @property
    def info(self) -> JudgeInfo:
        """Who the judge is, recorded with every judged score."""
        return self._info

    @property
    def model(self) -> str:
        """The model name sent in each request."""
        return self._model

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        choices: Sequence[str] | None = None,
    ) -> list[str]:
        """``n`` sampled replies to ``messages`` (a reply without content is ``""``).

        Raises :class:`JudgeUnavailable` when the judge cannot answer after its retries, or at once on a
        configuration error (HTTP 4xx other than 429).
        """
        if n < 1 or max_tokens < 1:
            raise ValueError("n and max_tokens must be >= 1")
        if self._supports_n:
            return await self._request(messages, n, temperature, max_tokens, choices)
        # One sample per request, all at once: the semaphore still bounds what is in flight.
        replies = await asyncio.gather(
            *(self._request(messages, 1, temperature, max_tokens, choices) for _ in range(n))
        )
        return [text for reply in replies for text in reply]

    async def _request(
        self,
        messages: list[dict[str, str]],
        n: int,
        temperature: float,
        max_tokens: int,
        choices: Sequence[str] | None,
    ) -> list[str]:
        """One logical request with its retries."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "n": n,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if choices is not None and self._supports_guided:
            body["structured_outputs"] = {"choice": list(choices)}
        elif choices is not None and self._grammar_choices:
            body["grammar"] = choice_grammar(choices)
        deadline: float | None = None
        reason = "no attempt made"
        attempts = 0
        for attempt in range(self._retries + 1):
            async with self._semaphore:
                if deadline is None:
                    deadline = time.monotonic() + self._max_wait_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                attempts += 1
                started = time.monotonic()
                try:
                    replies = await self._post_once(body, n, min(self._timeout_s, remaining))
                except (_Retryable, JudgeUnavailable) as exc:
                    if self._observe is not None:
                        self._observe(time.monotonic() - started, attempt_outcome(exc))
                    if not isinstance(exc, _Retryable):
                        raise
                    reason = str(exc)
                else:
                    if self._observe is not None:
                        self._observe(time.monotonic() - started, "ok")
                    return replies
            if attempt == self._retries:
                break
            delay = self._backoff_s * 2**attempt
            # Sleeping past the deadline would only delay the inevitable JudgeUnavailable.
            if time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        raise JudgeUnavailable(f"judge unavailable after {attempts} attempt(s): {reason}")

    async def _post_once(self, body: dict[str, Any], n: int, timeout_s: float) -> list[str]:
        """One HTTP attempt. Raises _Retryable for transient faults, JudgeUnavailable for config errors."""
        try:
            async with self._session.post(
                self._url,
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
                headers=self._headers,
            ) as response:
                raw = await self._read_capped(response)
                status = response.status
        except TimeoutError as exc:
            raise _Retryable(f"no complete answer within {timeout_s:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from exc
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status} {_snippet(raw)}".rstrip())
        if not 200 <= status < 300:
            # The judge server is ours: its error text (e.g. "model does not exist") helps the operator.
            raise JudgeUnavailable(f"judge rejected the request: HTTP {status} {_snippet(raw)}".rstrip())
        return _parse_choices(raw, n)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """Read the body up to the byte cap; a larger body is a fault of the server (retryable)."""
        cap = self._max_response_bytes
        if response.content_length is not None and response.content_length > cap:
            response.close()
            raise _Retryable(f"response declares {response.content_length} bytes, cap is {cap}")
        data = bytearray()
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            data += chunk
            if len(data) > cap:
                response.close()  # drop the connection rather than drain the rest
                raise _Retryable(f"response larger than the {cap}-byte cap")
        return bytes(data)


def attempt_outcome(exc: Exception) -> str:
    """A failed attempt as one word of a fixed set: timeout, connection, http_429, http_5xx, malformed
    (a body that is not a chat completion), rejected (HTTP 4xx: a configuration error)."""
    if not isinstance(exc, _Retryable):
        return "rejected"
    cause = exc.__cause__
    if isinstance(cause, TimeoutError):
        return "timeout"
    if isinstance(cause, aiohttp.ClientError | OSError):
        return "connection"
    text = str(exc)
    if text.startswith("HTTP 429"):
        return "http_429"
    if text.startswith("HTTP "):
        return "http_5xx"
    return "malformed"


def _parse_choices(raw: bytes, n: int) -> list[str]:
    """The ``n`` message contents of an OpenAI chat completion; malformed bodies are retryable."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Retryable(f"response is not JSON ({type(exc).__name__})") from exc
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else "no"
        raise _Retryable(f"expected {n} choices, got {got}")
    texts: list[str] = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise _Retryable("a choice's content is not a string")
        texts.append(content or "")
    return texts


def _snippet(raw: bytes) -> str:
    return raw[:_MAX_REASON_CHARS].decode("utf-8", "replace").replace("\n", " ").strip()


def choice_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are ``choices`` (for llama.cpp's server)."""
    quoted = " | ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in choices)
    return f"root ::= {quoted}"
