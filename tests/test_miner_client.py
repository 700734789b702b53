"""MinerClient against a real aiohttp server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from evaluation.audio import decode_npy_b64, encode_npy_b64
from evaluation.errors import MinerResponseError
from evaluation.miner_client import MinerClient, audio_request_body

FIFTY_MB = 50 * 2**20
CHUNK = 2**20


@dataclass
class ServerState:
    """What the handlers saw and did, for the assertions."""

    mode: str = "good"
    requests: list[dict[str, object]] = field(default_factory=list)
    bytes_sent: int = 0
    big_body_finished: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)


STATE_KEY: web.AppKey[ServerState] = web.AppKey("state", ServerState)


def _npy_b64(array: np.ndarray, *, allow_pickle: bool = False) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def _stream_big(
    request: web.Request, state: ServerState, *, declare_length: bool
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if declare_length:
        response.content_length = FIFTY_MB
    await response.prepare(request)
    block = b" " * CHUNK
    try:
        while state.bytes_sent < FIFTY_MB:
            await response.write(block)
            state.bytes_sent += CHUNK
        await response.write_eof()
        state.big_body_finished = True
    except (ConnectionError, asyncio.CancelledError):
        pass
    return response


async def _answer(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await request.json()
    state.requests.append(body)
    mode = state.mode
    if mode == "good":
        audio = decode_npy_b64(body["audio_data"], max_bytes=2**26, max_samples=2**24)
        return web.json_response({"text": f"heard {audio.size} samples at {body['sample_rate']} Hz"})
    if mode == "echo_audio":
        return web.json_response({"audio_data": body["audio_data"], "text": "echo"})
    if mode == "audio_no_text":
        return web.json_response({"audio_data": body["audio_data"]})
    if mode == "pickled_audio":
        return web.json_response({"audio_data": _npy_b64(np.array([object()]), allow_pickle=True)})
    if mode == "int16_audio":
        return web.json_response({"audio_data": _npy_b64(np.zeros(16_000, np.int16)), "text": "hi"})
    if mode == "stereo_audio":
        return web.json_response({"audio_data": _npy_b64(np.zeros((2, 8_000), np.float32))})
    if mode == "wav_not_npy":
        return web.json_response({"audio_data": base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()})
    if mode == "declared_rate":
        return web.json_response({"audio_data": body["audio_data"], "text": "hi", "sample_rate": 24_000})
    if mode.startswith("rate="):
        rate = json.loads(mode.removeprefix("rate="))
        return web.json_response({"audio_data": body["audio_data"], "sample_rate": rate})
    if mode == "long_audio":
        return web.json_response({"audio_data": _npy_b64(np.zeros(16_000 * 3, np.float32))})
    if mode == "blank_text":
        return web.json_response({"audio_data": body["audio_data"], "text": " \x00\n "})
    if mode == "nan_audio":
        return web.json_response({"audio_data": _npy_b64(np.array([0.0, np.nan], dtype=np.float32))})
    if mode == "status_500":
        return web.Response(status=500, text="Traceback: CUDA out of memory")
    if mode == "redirect":
        raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
    if mode == "not_json":
        return web.Response(text="<html>hello</html>", content_type="text/html")
    if mode == "not_utf8":
        return web.Response(body=b'{"text": "caf\xe9 \xff"}', content_type="application/json")
    if mode == "json_list":
        return web.json_response(["text", "hi"])
    if mode == "deep_json":
        return web.Response(text="[" * 200_000 + "]" * 200_000, content_type="application/json")
    if mode == "missing_text":
        return web.json_response({"answer": "B"})
    if mode == "text_not_string":
        return web.json_response({"text": ["B"]})
    if mode == "control_chars":
        return web.json_response({"text": "The\x00 answer\x1b[31m is\r\n B\tok\x7f\ud800!"})
    if mode == "long_text":
        return web.json_response({"text": "x" * 100_000})
    if mode == "big_declared":
        return await _stream_big(request, state, declare_length=True)
    if mode == "big_chunked":
        return await _stream_big(request, state, declare_length=False)
    if mode == "slow":
        try:
            await asyncio.wait_for(state.release.wait(), timeout=30)
        except TimeoutError:
            pass
        return web.json_response({"text": "too late"})
    if mode == "reset":
        assert request.transport is not None
        request.transport.abort()
        return web.json_response({"text": "never delivered"})
    raise AssertionError(f"unknown mode {mode}")


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.mode == "good":
        return web.json_response({"status": "healthy", "initialization_status": {"model_loaded": True}})
    if state.mode == "loading":
        return web.json_response({"status": "initializing", "initialization_status": {"model_loaded": False}})
    if state.mode == "not_json":
        return web.Response(text="ok")
    return web.Response(status=503, reason="Service Unavailable")


@dataclass
class Miner:
    url: str
    state: ServerState
    session: aiohttp.ClientSession

    def client(self, **kwargs: float) -> MinerClient:
        return MinerClient(self.url, self.session, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def miner() -> AsyncIterator[Miner]:
    state = ServerState()
    app = web.Application(client_max_size=2**26)
    app[STATE_KEY] = state
    app.router.add_get("/api/v1/health", _health)
    app.router.add_post("/api/v1/v2t", _answer)
    app.router.add_post("/api/v1/inference", _answer)
    app.router.add_post("/api/v1/v2v", _answer)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield Miner(f"http://127.0.0.1:{port}/", state, session)
    state.release.set()
    await runner.cleanup()


AUDIO = np.sin(np.linspace(0, 100, 16_000)).astype(np.float32)


async def test_v2t_good_answer_and_request_shape(miner: Miner) -> None:
    text = await miner.client().v2t(AUDIO, 16_000)
    assert text == "heard 16000 samples at 16000 Hz"
    (sent,) = miner.state.requests
    assert set(sent) == {"audio_data", "sample_rate"}
    assert sent["sample_rate"] == 16_000
    assert sent["audio_data"] == encode_npy_b64(AUDIO)


def test_audio_request_body_is_the_json_a_json_encoder_would_write() -> None:
    # Built by hand for speed (json.dumps of the base64 text dominated the validator's CPU per sample).
    for audio, rate in ((AUDIO, 16_000), (np.zeros(1, np.float64), 8_000), (AUDIO[:7], np.int64(44_100))):
        body = audio_request_body(audio, rate)
        assert json.loads(body) == {"audio_data": encode_npy_b64(audio), "sample_rate": int(rate)}
        assert body.isascii()


async def test_inference_round_trips_audio_and_text(miner: Miner) -> None:
    miner.state.mode = "echo_audio"
    answer = await miner.client().inference(AUDIO, 16_000)
    np.testing.assert_array_equal(answer.audio, AUDIO)
    assert answer.text == "echo" and answer.sample_rate == 16_000 and answer.duration_s == 1.0


@pytest.mark.parametrize("mode", ["audio_no_text", "blank_text"])
async def test_inference_text_is_optional(miner: Miner, mode: str) -> None:
    miner.state.mode = mode
    answer = await miner.client().inference(AUDIO, 16_000)
    assert answer.audio.shape == AUDIO.shape and answer.text is None


async def test_inference_on_the_alternative_path_with_a_declared_rate(miner: Miner) -> None:
    miner.state.mode = "declared_rate"
    answer = await miner.client().inference(AUDIO, 16_000, path="/api/v1/v2v")
    assert answer.sample_rate == 24_000 and answer.text == "hi"
    with pytest.raises(ValueError, match="path must be"):
        await miner.client().inference(AUDIO, 16_000, path="/api/v1/v2t")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("pickled_audio", "pickle"),
        ("nan_audio", "NaN"),
        ("good", "no 'audio_data'"),
        ("int16_audio", "floating point"),
        ("stereo_audio", "1-D"),
        ("wav_not_npy", "not a valid npy"),
        ("rate=1000", "outside 8000-48000"),
        ("rate=192000", "outside 8000-48000"),
        ('rate="16000"', "must be an integer"),
        ("rate=true", "must be an integer"),
        ("rate=16000.5", "must be an integer"),
    ],
)
async def test_inference_rejects_bad_audio(miner: Miner, mode: str, message: str) -> None:
    miner.state.mode = mode
    with pytest.raises(MinerResponseError, match=message):
        await miner.client().inference(AUDIO, 16_000)


async def test_inference_audio_longer_than_allowed_is_refused_from_its_header(miner: Miner) -> None:
    miner.state.mode = "long_audio"  # 3 s
    assert (await miner.client().inference(AUDIO, 16_000, max_audio_s=3.0)).duration_s == 3.0
    with pytest.raises(MinerResponseError, match="too long"):
        await miner.client().inference(AUDIO, 16_000, max_audio_s=2.5)


async def test_inference_audio_over_the_cap_is_refused(miner: Miner) -> None:
    miner.state.mode = "echo_audio"
    with pytest.raises(MinerResponseError, match="cap"):
        await miner.client(max_response_bytes=10_000).inference(AUDIO, 16_000)
    # The per-call cap replaces the client's (voice answers are larger than text ones).
    with pytest.raises(MinerResponseError, match="cap"):
        await miner.client().inference(AUDIO, 16_000, max_response_bytes=10_000)
    small = miner.client(max_response_bytes=10_000)
    assert (await small.inference(AUDIO, 16_000, max_response_bytes=2**20)).text


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("status_500", "HTTP 500"),
        ("redirect", "HTTP 302"),
        ("not_json", "not JSON"),
        ("deep_json", "not JSON"),
        ("not_utf8", "not JSON"),
        ("json_list", "not a JSON object"),
        ("missing_text", "no 'text'"),
        ("text_not_string", "'text' must be a string, got list"),
    ],
)
async def test_v2t_miner_faults(miner: Miner, mode: str, message: str) -> None:
    miner.state.mode = mode
    with pytest.raises(MinerResponseError, match=message):
        await miner.client().v2t(AUDIO, 16_000)


async def test_declared_50mb_body_is_refused_from_the_header(miner: Miner) -> None:
    miner.state.mode = "big_declared"
    with pytest.raises(MinerResponseError, match=r"declares 52428800 bytes"):
        await miner.client().v2t(AUDIO, 16_000)
    assert not miner.state.big_body_finished


async def test_streamed_50mb_body_is_cut_off_at_the_cap(miner: Miner) -> None:
    miner.state.mode = "big_chunked"
    with pytest.raises(MinerResponseError, match="larger than the 4194304-byte cap"):
        await miner.client().v2t(AUDIO, 16_000)
    # The client hung up after ~4 MB: the server can never finish pushing 50 MB into a closed socket.
    await asyncio.sleep(0.2)
    assert not miner.state.big_body_finished
    assert miner.state.bytes_sent < FIFTY_MB


async def test_slow_miner_hits_the_deadline(miner: Miner) -> None:
    miner.state.mode = "slow"
    started = time.monotonic()
    with pytest.raises(MinerResponseError, match=r"no complete answer within 0.3s"):
        await miner.client(timeout_s=0.3).v2t(AUDIO, 16_000)
    assert time.monotonic() - started < 3


async def test_connection_reset_is_a_miner_fault(miner: Miner) -> None:
    miner.state.mode = "reset"
    with pytest.raises(MinerResponseError, match="connection failed"):
        await miner.client().v2t(AUDIO, 16_000)


async def test_connection_refused_is_a_miner_fault() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        client = MinerClient(f"http://127.0.0.1:{port}", session, timeout_s=5)
        with pytest.raises(MinerResponseError, match="connection failed"):
            await client.v2t(AUDIO, 16_000)
        with pytest.raises(MinerResponseError, match="connection failed"):
            await client.health()


async def test_control_characters_are_stripped(miner: Miner) -> None:
    miner.state.mode = "control_chars"
    text = await miner.client().v2t(AUDIO, 16_000)
    assert text == "The answer[31m is\n B\tok!"


async def test_text_is_truncated(miner: Miner) -> None:
    miner.state.mode = "long_text"
    assert await miner.client(max_text_chars=100).v2t(AUDIO, 16_000) == "x" * 100


async def test_health_states(miner: Miner) -> None:
    client = miner.client()
    assert (await client.health()).ready
    miner.state.mode = "loading"
    health = await client.health()
    assert not health.ready and health.status == "initializing"
    miner.state.mode = "not_json"
    assert (await client.health()).status == "malformed"
    miner.state.mode = "down"
    with pytest.raises(MinerResponseError, match="HTTP 503 Service Unavailable"):
        await client.health()


async def test_bad_arguments_are_caller_errors(miner: Miner) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        await miner.client().v2t(AUDIO, 0)
    with pytest.raises(ValueError, match="positive"):
        miner.client(timeout_s=0)
    assert json.dumps(miner.state.requests) == "[]"
