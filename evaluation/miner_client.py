"""HTTP client for a miner container's API (``/api/v1/health``, ``/api/v1/v2t``, ``/api/v1/inference``).

The miner is untrusted: every answer is read with a deadline and a byte cap, checked for shape, and
cleaned before it leaves this module. Every fault that is the miner's (HTTP error, timeout, dropped
connection, malformed or oversized body) raises :class:`MinerResponseError` with a short message meant
for logs and the result store; no aiohttp exception escapes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from evaluation.audio import decode_npy_b64, encode_npy_b64_bytes
from evaluation.errors import MinerResponseError
from evaluation.health import Health, health_from_body
from evaluation.untrusted_text import for_judge

HEALTH_PATH = "/api/v1/health"
V2T_PATH = "/api/v1/v2t"
INFERENCE_PATH = "/api/v1/inference"
# The same endpoint under the name some miners use; the validator calls one of the two (a setting).
V2V_PATH = "/api/v1/v2v"
VOICE_TO_VOICE_PATHS = (INFERENCE_PATH, V2V_PATH)
# Sample rates a spoken answer may declare: telephone speech up to studio audio.
MIN_ANSWER_SAMPLE_RATE = 8_000
MAX_ANSWER_SAMPLE_RATE = 48_000

_READ_CHUNK = 64 * 1024
# Bodies up to this size are parsed on the event loop (well under a millisecond); larger ones in a thread.
_INLINE_JSON_BYTES = 64 * 1024
# Reason phrases and error snippets are miner-controlled: keep what reaches the logs short.
_MAX_REASON_CHARS = 80


@dataclass(frozen=True)
class SpokenAnswer:
    """A voice-to-voice answer: finite 1-D float32 audio at ``sample_rate`` Hz, and the miner's text
    (None when it sent none or an empty one)."""

    audio: np.ndarray
    sample_rate: int
    text: str | None

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.size / self.sample_rate


class MinerClient:
    """Talks to one miner over a shared :class:`aiohttp.ClientSession` owned by the caller.

    ``timeout_s`` is the deadline of each whole request (connect, send, wait, read). ``max_response_bytes``
    caps a response body (also used as the cap of decoded audio); ``max_text_chars`` caps returned text.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 60.0,
        max_response_bytes: int = 4 * 2**20,
        max_text_chars: int = 8_000,
    ) -> None:
        if timeout_s <= 0 or max_response_bytes <= 0 or max_text_chars <= 0:
            raise ValueError("timeout_s, max_response_bytes and max_text_chars must be positive")
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._max_text_chars = max_text_chars

    @property
    def base_url(self) -> str:
        """The miner's base URL, without a trailing slash."""
        return self._base_url

    async def health(self) -> Health:
        """``GET /api/v1/health``.

        A body that is not a JSON object is reported as a not-ready :class:`Health` (``health_from_body``
        never raises); an HTTP error status or a transport fault raises MinerResponseError, which a
        caller polling a starting container treats as "not up yet".
        """
        return health_from_body(await self._request("GET", HEALTH_PATH, None))

    async def v2t(self, audio: np.ndarray, sample_rate: int) -> str:
        """Voice to text: send ``audio`` (1-D, at ``sample_rate`` Hz) and return the miner's text.

        The text is cleaned of control characters (newline and tab kept) and cut to ``max_text_chars``.
        Raises MinerResponseError for any miner fault.
        """
        payload = await self._post_audio(V2T_PATH, audio, sample_rate)
        if "text" not in payload:
            raise MinerResponseError("v2t: response has no 'text'")
        text = payload["text"]
        if not isinstance(text, str):
            raise MinerResponseError(f"v2t: 'text' must be a string, got {_type_name(text)}")
        return self._clean_text(text)

    async def inference(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        path: str = INFERENCE_PATH,
        max_audio_s: float = 120.0,
        max_response_bytes: int | None = None,
    ) -> SpokenAnswer:
        """Voice to voice: send ``audio`` to ``path`` (``/api/v1/inference`` or ``/api/v1/v2v``).

        The response is ``{"audio_data": <base64 .npy>, "text": <optional str>}``; the miner guide's API
        carries no output sample rate, so the audio is taken to be at the request's rate unless the
        response adds an integer ``sample_rate`` (8-48 kHz). The audio must be a finite, non-empty 1-D
        float array (float16/32/64; never pickled) of at most ``max_audio_s`` seconds, in a body of at
        most ``max_response_bytes`` (default: the client's cap). Raises MinerResponseError for any
        miner fault.
        """
        if path not in VOICE_TO_VOICE_PATHS:
            raise ValueError(f"path must be one of {VOICE_TO_VOICE_PATHS}, got {path!r}")
        if max_audio_s <= 0:
            raise ValueError("max_audio_s must be positive")
        cap = max_response_bytes or self._max_response_bytes
        payload = await self._post_audio(path, audio, sample_rate, max_bytes=cap)
        if "audio_data" not in payload:
            raise MinerResponseError(f"{path}: response has no 'audio_data'")
        audio_data = payload["audio_data"]
        if not isinstance(audio_data, str):
            got = _type_name(audio_data)
            raise MinerResponseError(f"{path}: 'audio_data' must be a string, got {got}")
        rate = payload.get("sample_rate", sample_rate)
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise MinerResponseError(f"{path}: 'sample_rate' must be an integer, got {_type_name(rate)}")
        if not MIN_ANSWER_SAMPLE_RATE <= rate <= MAX_ANSWER_SAMPLE_RATE:
            raise MinerResponseError(
                f"{path}: sample_rate {rate} is outside {MIN_ANSWER_SAMPLE_RATE}-{MAX_ANSWER_SAMPLE_RATE} Hz"
            )
        try:
            # The length cap is checked on the npy header, before the samples are read. Decoding up to
            # 16 MiB takes tens of milliseconds: off the event loop, which serves other requests meanwhile.
            decoded = await asyncio.to_thread(
                decode_npy_b64, audio_data, max_bytes=cap, max_samples=int(max_audio_s * rate)
            )
        except ValueError as exc:
            raise MinerResponseError(f"{path}: bad audio_data: {exc}") from exc
        text = payload.get("text")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise MinerResponseError(f"{path}: 'text' must be a string, got {_type_name(text)}")
        cleaned = self._clean_text(text).strip()
        return SpokenAnswer(audio=decoded, sample_rate=rate, text=cleaned or None)

    async def _post_audio(
        self, path: str, audio: np.ndarray, sample_rate: int, *, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """POST audio in the miner's request shape and return the response's JSON object (the body read
        up to ``max_bytes``, default the client's cap)."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        body = await self._request(
            "POST", path, audio_request_body(audio, int(sample_rate)), max_bytes=max_bytes
        )
        try:
            # A spoken answer's body runs to megabytes of base64: parsed off the event loop.
            payload = (
                json.loads(body)
                if len(body) <= _INLINE_JSON_BYTES
                else await asyncio.to_thread(json.loads, body)
            )
        except (ValueError, RecursionError) as exc:
            # ValueError covers both malformed JSON and undecodable bytes; deep nesting recurses.
            raise MinerResponseError(f"{path}: response is not JSON ({type(exc).__name__})") from exc
        if not isinstance(payload, dict):
            raise MinerResponseError(f"{path}: response is not a JSON object")
        return payload

    async def _request(
        self, method: str, path: str, json_body: bytes | None, *, max_bytes: int | None = None
    ) -> bytes:
        """Send one request (``json_body``: encoded JSON) under the deadline and return the body, read up
        to ``max_bytes`` (default: the client's cap)."""
        url = self._base_url + path
        # Ask for an uncompressed body so the byte cap measures what is actually sent.
        headers = {"Accept-Encoding": "identity"}
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method,
                url,
                data=json_body,
                timeout=self._timeout,
                # A redirect would make the validator fetch a URL of the miner's choosing.
                allow_redirects=False,
                headers=headers,
            ) as response:
                if not 200 <= response.status < 300:
                    reason = _strip_controls(_clip(response.reason or "", _MAX_REASON_CHARS))
                    raise MinerResponseError(f"{path}: HTTP {response.status} {reason}".rstrip())
                return await self._read_capped(response, path, max_bytes or self._max_response_bytes)
        except MinerResponseError:
            raise
        except TimeoutError as exc:
            raise MinerResponseError(f"{path}: no complete answer within {self._timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise MinerResponseError(f"{path}: connection failed ({_describe_client_error(exc)})") from exc
        except OSError as exc:
            # aiohttp wraps socket errors as ClientOSError, but a reset mid-read can surface bare.
            raise MinerResponseError(f"{path}: connection failed ({type(exc).__name__})") from exc

    async def _read_capped(self, response: aiohttp.ClientResponse, path: str, cap: int) -> bytes:
        """Read the body in chunks and give up as soon as it passes ``cap``, without draining it."""
        declared = response.content_length
        if declared is not None and declared > cap:
            response.close()
            raise MinerResponseError(f"{path}: response declares {declared} bytes, cap is {cap}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > cap:
                # close() drops the connection; release() would try to read the rest.
                response.close()
                raise MinerResponseError(f"{path}: response larger than the {cap}-byte cap")
        return bytes(body)

    def _clean_text(self, text: str) -> str:
        # Clipped first: the cleaning's cost must not scale with what the miner chose to send.
        return _strip_controls(_clip(text, self._max_text_chars))


def audio_request_body(audio: np.ndarray, sample_rate: int) -> bytes:
    """The JSON body of an audio request, ``{"audio_data": <base64 npy>, "sample_rate": <int>}``.

    Assembled as bytes: base64 text needs no JSON escaping, while ``json.dumps`` would scan the
    megabytes of it character by character (3 ms of CPU per 10 s clip, more than all the validator's
    other work per sample; see benchmarks/harness.py).
    """
    return b"".join(
        (
            b'{"audio_data": "',
            encode_npy_b64_bytes(audio),
            b'", "sample_rate": ',
            str(int(sample_rate)).encode("ascii"),
            b"}",
        )
    )


def _strip_controls(text: str) -> str:
    """Drop control and invisible format characters (newline and tab kept) and lone surrogates.

    NULs break SQLite text and C-backed loggers, escape sequences garble terminals, lone surrogates
    (valid in JSON escapes) cannot be encoded as UTF-8 further down, and bidi overrides or tag
    characters would carry text into the judge's prompt that no reader of the answer sees.
    """
    return for_judge(text)


def _clip(text: str, limit: int) -> str:
    return text[:limit]


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    """A short, stable description: the exception's class, plus the OS error text for connect faults."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {_clip(exc.strerror or '', _MAX_REASON_CHARS)}".rstrip(": ")
    return type(exc).__name__
