"""HTTP client for a miner container's API (``/api/v1/health``, ``/api/v1/v2t``, ``/api/v1/inference``).

The miner is untrusted: every answer is read with a deadline and a byte cap, checked for shape, and
cleaned before it leaves this module. Every fault that is the miner's (HTTP error, timeout, dropped
connection, malformed or oversized body) raises :class:`MinerResponseError` with a short message meant
for logs and the result store; no aiohttp exception escapes.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import aiohttp
import numpy as np

from evaluation.audio import decode_npy_b64, encode_npy_b64_bytes
from evaluation.errors import MinerResponseError
from evaluation.health import Health, parse_health

HEALTH_PATH = "/api/v1/health"
V2T_PATH = "/api/v1/v2t"
INFERENCE_PATH = "/api/v1/inference"

_READ_CHUNK = 64 * 1024
# Reason phrases and error snippets are miner-controlled: keep what reaches the logs short.
_MAX_REASON_CHARS = 80
_KEEP_CONTROL_CHARS = frozenset("\n\t")


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

        A body that is not a JSON object is reported as a not-ready :class:`Health` (``parse_health``
        never raises); an HTTP error status or a transport fault raises MinerResponseError, which a
        caller polling a starting container treats as "not up yet".
        """
        body = await self._request("GET", HEALTH_PATH, None)
        try:
            payload: object = json.loads(body)
        except (ValueError, RecursionError):
            payload = None
        return parse_health(payload)

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

    async def inference(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str]:
        """Voice to voice: return ``(audio, text)``; the text is optional and ``""`` when absent.

        The returned audio is a finite 1-D float32 array decoded under the response byte cap. The API
        carries no output sample rate. Raises MinerResponseError for any miner fault.
        """
        payload = await self._post_audio(INFERENCE_PATH, audio, sample_rate)
        if "audio_data" not in payload:
            raise MinerResponseError("inference: response has no 'audio_data'")
        audio_data = payload["audio_data"]
        if not isinstance(audio_data, str):
            got = _type_name(audio_data)
            raise MinerResponseError(f"inference: 'audio_data' must be a string, got {got}")
        try:
            # float16 is the smallest float an npy can hold: two bytes per sample bound the count.
            decoded = decode_npy_b64(
                audio_data,
                max_bytes=self._max_response_bytes,
                max_samples=self._max_response_bytes // 2,
            )
        except ValueError as exc:
            raise MinerResponseError(f"inference: bad audio_data: {exc}") from exc
        text = payload.get("text")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise MinerResponseError(f"inference: 'text' must be a string, got {_type_name(text)}")
        return decoded, self._clean_text(text)

    async def _post_audio(self, path: str, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """POST audio in the miner's request shape and return the response's JSON object."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        body = await self._request("POST", path, audio_request_body(audio, int(sample_rate)))
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            # ValueError covers both malformed JSON and undecodable bytes; deep nesting recurses.
            raise MinerResponseError(f"{path}: response is not JSON ({type(exc).__name__})") from exc
        if not isinstance(payload, dict):
            raise MinerResponseError(f"{path}: response is not a JSON object")
        return payload

    async def _request(self, method: str, path: str, json_body: bytes | None) -> bytes:
        """Send one request (``json_body``: encoded JSON) under the deadline and return the body, read up
        to the byte cap."""
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
                    reason = _clip(_strip_controls(response.reason or ""), _MAX_REASON_CHARS)
                    raise MinerResponseError(f"{path}: HTTP {response.status} {reason}".rstrip())
                return await self._read_capped(response, path)
        except MinerResponseError:
            raise
        except TimeoutError as exc:
            raise MinerResponseError(f"{path}: no complete answer within {self._timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise MinerResponseError(f"{path}: connection failed ({_describe_client_error(exc)})") from exc
        except OSError as exc:
            # aiohttp wraps socket errors as ClientOSError, but a reset mid-read can surface bare.
            raise MinerResponseError(f"{path}: connection failed ({type(exc).__name__})") from exc

    async def _read_capped(self, response: aiohttp.ClientResponse, path: str) -> bytes:
        """Read the body in chunks and give up as soon as it passes the cap, without draining it."""
        cap = self._max_response_bytes
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
        return _clip(_strip_controls(text), self._max_text_chars)


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
    """Drop control characters (except newline and tab) and lone surrogates.

    NULs break SQLite text and C-backed loggers, escape sequences garble terminals, and lone surrogates
    (valid in JSON escapes) cannot be encoded as UTF-8 further down.
    """
    return "".join(
        ch for ch in text if ch in _KEEP_CONTROL_CHARS or unicodedata.category(ch) not in ("Cc", "Cs")
    )


def _clip(text: str, limit: int) -> str:
    return text[:limit]


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    """A short, stable description: the exception's class, plus the OS error text for connect faults."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {_clip(exc.strerror or '', _MAX_REASON_CHARS)}".rstrip(": ")
    return type(exc).__name__
