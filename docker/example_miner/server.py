"""The example miner's HTTP server: the API the validator calls.

Endpoints (see the miner guide):
  GET  /api/v1/health     {"status": "healthy"|"initializing", "initialization_status": {...}}
  POST /api/v1/v2t        {"audio_data": b64 .npy, "sample_rate": int} -> {"text": str}
  POST /api/v1/inference  same request -> {"audio_data": b64 .npy float32, "text": str, "sample_rate": int}
  POST /api/v1/v2v        the same as /api/v1/inference (the name some validators call)

The model loads in a background thread so that health answers "initializing" at once and the validator
waits for ``model_loaded`` instead of timing out on a server that is not listening yet.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException
from inference import InvalidAudio, Model, decode_audio, encode_audio, load_model
from pydantic import BaseModel

logger = logging.getLogger("miner")


class AudioRequest(BaseModel):
    """What the validator sends."""

    audio_data: str
    sample_rate: int


class TextResponse(BaseModel):
    """Answer of the voice-to-text endpoint."""

    text: str


class AudioResponse(BaseModel):
    """Answer of the voice-to-voice endpoint."""

    audio_data: str
    text: str = ""
    # Not in the miner guide's response: the validator reads it when present, and otherwise takes the
    # audio to be at the request's rate.
    sample_rate: int


class ModelState:
    """The model once loaded, or the reason it failed to load; shared by the loader thread and requests."""

    def __init__(self) -> None:
        self.model: Model | None = None
        self.error: str | None = None

    def load(self, model_dir: Path) -> None:
        """Load the model; meant to run in a background thread."""
        try:
            self.model = load_model(model_dir)
            logger.info("model %s loaded", self.model.name)
        except Exception as exc:  # report any load failure through /health rather than dying silently
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("model failed to load")

    def require(self) -> Model:
        """The loaded model, or HTTP 503 while it is not ready."""
        if self.model is None:
            raise HTTPException(status_code=503, detail=self.error or "model is still loading")
        return self.model


def create_app(state: ModelState) -> FastAPI:
    """Build the FastAPI application around ``state``."""
    app = FastAPI(title="example voice miner")

    @app.get("/api/v1/health")
    def health() -> dict:
        return {
            "status": "healthy" if state.model is not None else "initializing",
            "initialization_status": {"model_loaded": state.model is not None, "error": state.error},
        }

    # Plain (non-async) handlers: FastAPI runs them in a thread pool, so heavy inference in a real
    # model does not stall the health endpoint.
    @app.post("/api/v1/v2t", response_model=TextResponse)
    def voice_to_text(request: AudioRequest) -> TextResponse:
        model = state.require()
        try:
            audio = decode_audio(request.audio_data, request.sample_rate)
        except InvalidAudio as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return TextResponse(text=model.voice_to_text(audio, request.sample_rate))

    @app.post("/api/v1/inference", response_model=AudioResponse)
    @app.post("/api/v1/v2v", response_model=AudioResponse)
    def voice_to_voice(request: AudioRequest) -> AudioResponse:
        model = state.require()
        try:
            audio = decode_audio(request.audio_data, request.sample_rate)
        except InvalidAudio as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        reply, text, rate = model.voice_to_voice(audio, request.sample_rate)
        return AudioResponse(audio_data=encode_audio(reply), text=text, sample_rate=rate)

    return app


def main() -> None:
    """Start loading the model, then serve on 0.0.0.0:$PORT (default 8000)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = Path(os.environ.get("MODEL_DIR", Path(__file__).resolve().parent / "model"))
    state = ModelState()
    threading.Thread(target=state.load, args=(model_dir,), name="model-loader", daemon=True).start()
    uvicorn.run(create_app(state), host="0.0.0.0", port=int(os.environ.get("PORT", "8000")), log_level="info")


if __name__ == "__main__":
    main()
