"""Build a small local VoiceBench look-alike: our own questions, spoken by espeak-ng, in the hub's layout.

The result is read by the same code path as ``hlt-lab/voicebench`` (``datasets`` parquet loader,
``{out_dir}/{subset}/test-00000-of-00001.parquet``), so tests, the demo and miners' local checks exercise
the real loader without the hub. Output is deterministic for a given espeak-ng version; a hidden
manifest next to each parquet file lets a rebuild with the same questions and voice settings skip work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from evaluation.audio import decode_audio_bytes, resample
from evaluation.errors import InfrastructureError

SAMPLE_RATE = 16_000
PARQUET_NAME = "test-00000-of-00001.parquet"
# Hidden: ``datasets`` skips dot-files when it resolves a folder, so the manifest never looks like data.
MANIFEST_NAME = ".fixture-manifest.json"
# Bump when the output format changes so that old caches are rebuilt.
FORMAT_VERSION = 1
ESPEAK_TIMEOUT_S = 60.0
INSTALL_HINT = "install espeak-ng: apt-get install espeak-ng"


class FixtureBuildError(InfrastructureError):
    """The fixture could not be built (espeak-ng missing or failing, bad question file)."""


def available_subsets() -> list[str]:
    """Subsets that have a question file in ``evaluation/voicebench/fixtures``."""
    folder = resources.files("evaluation.voicebench") / "fixtures"
    return sorted(
        entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def build_fixture(
    out_dir: Path,
    subsets: Sequence[str] = ("openbookqa",),
    *,
    voice: str = "en-us",
    rate_wpm: int = 160,
) -> Path:
    """Synthesize each subset's questions and write ``out_dir/{subset}/test-00000-of-00001.parquet``.

    Columns: ``audio`` (``{bytes: 16 kHz PCM-16 WAV, path}``, ``datasets``' Audio storage), ``prompt``,
    ``reference``, ``id``. A subset whose parquet exists and whose manifest matches the question file's
    hash and the voice settings is left as it is. Returns ``out_dir``. Raises FixtureBuildError when
    espeak-ng is missing or fails, ValueError for an unknown subset or bad settings.
    """
    if not 80 <= rate_wpm <= 450:
        raise ValueError(f"rate_wpm must be in [80, 450], got {rate_wpm}")
    if not voice or voice.startswith("-") or any(ch.isspace() for ch in voice):
        raise ValueError(f"invalid espeak-ng voice name {voice!r}")
    known = available_subsets()
    unknown = [name for name in subsets if name not in known]
    if unknown:
        raise ValueError(f"no fixture questions for {unknown}; available: {known}")

    out_dir = Path(out_dir)
    for subset in subsets:
        raw = (resources.files("evaluation.voicebench") / "fixtures" / f"{subset}.json").read_bytes()
        manifest = {
            "format_version": FORMAT_VERSION,
            "subset": subset,
            "questions_sha256": hashlib.sha256(raw).hexdigest(),
            "voice": voice,
            "rate_wpm": rate_wpm,
            "sample_rate": SAMPLE_RATE,
        }
        target = out_dir / subset
        if _cache_matches(target, manifest):
            continue
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise FixtureBuildError(f"espeak-ng not found on PATH; {INSTALL_HINT}")
        questions = _parse_questions(raw, subset)
        rows = [_synthesize(espeak, question["prompt"], voice, rate_wpm) for question in questions]
        manifest["espeak_version"] = _espeak_version(espeak)
        # Drop the old manifest first: a crash between the two writes must not leave a stale match.
        (target / MANIFEST_NAME).unlink(missing_ok=True)
        _write_parquet(target, subset, questions, rows)
        _write_atomic(target / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return out_dir


def _cache_matches(target: Path, manifest: dict[str, Any]) -> bool:
    """True when a previous build with the same inputs left its parquet and manifest."""
    try:
        stored = json.loads((target / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not (target / PARQUET_NAME).is_file():
        return False
    # espeak_version is recorded for information only: a cache built elsewhere stays usable here.
    return all(stored.get(key) == value for key, value in manifest.items())


def _parse_questions(raw: bytes, subset: str) -> list[dict[str, str]]:
    """Read and check a question file: a list of {id, prompt, reference} with unique ids."""
    try:
        questions = json.loads(raw)
    except ValueError as exc:
        raise FixtureBuildError(f"{subset}.json is not valid JSON: {exc}") from exc
    if not isinstance(questions, list) or not questions:
        raise FixtureBuildError(f"{subset}.json must hold a non-empty list")
    for question in questions:
        if not isinstance(question, dict) or not all(
            isinstance(question.get(key), str) and question[key] for key in ("id", "prompt", "reference")
        ):
            raise FixtureBuildError(f"{subset}.json: every entry needs string id, prompt and reference")
    ids = [question["id"] for question in questions]
    if len(set(ids)) != len(ids):
        raise FixtureBuildError(f"{subset}.json: ids are not unique")
    return questions


def _synthesize(espeak: str, text: str, voice: str, rate_wpm: int) -> bytes:
    """Speak ``text`` with espeak-ng and return 16 kHz mono PCM-16 WAV bytes."""
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        text_file = Path(tmp) / "prompt.txt"
        wav_file = Path(tmp) / "prompt.wav"
        text_file.write_text(text, encoding="utf-8")
        # Text from a file (-f), not argv: a prompt starting with "-" must not read as an option.
        command = [espeak, "-v", voice, "-s", str(rate_wpm), "-w", str(wav_file), "-f", str(text_file)]
        try:
            result = subprocess.run(command, capture_output=True, timeout=ESPEAK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise FixtureBuildError(f"espeak-ng took longer than {ESPEAK_TIMEOUT_S:g}s") from exc
        except OSError as exc:
            raise FixtureBuildError(f"cannot run espeak-ng ({exc}); {INSTALL_HINT}") from exc
        if result.returncode != 0 or not wav_file.is_file():
            detail = result.stderr.decode(errors="replace").strip()[:300]
            raise FixtureBuildError(f"espeak-ng failed (exit {result.returncode}): {detail}")
        try:
            audio, rate = decode_audio_bytes(wav_file.read_bytes())
        except ValueError as exc:
            raise FixtureBuildError(f"espeak-ng wrote unreadable audio: {exc}") from exc
    audio = resample(audio, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else audio
    # The sinc filter can overshoot full scale by a hair; clip so PCM-16 conversion never wraps.
    audio = np.clip(audio, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _espeak_version(espeak: str) -> str:
    try:
        result = subprocess.run([espeak, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.decode(errors="replace").strip()[:200] or "unknown"


def _write_parquet(target: Path, subset: str, questions: list[dict[str, str]], wavs: list[bytes]) -> None:
    """Write the rows with ``datasets``' feature metadata, so the loader sees an Audio column."""
    # Imported here: heavy libraries, needed only when a fixture is actually (re)built.
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    features = Features(
        {
            "audio": Audio(sampling_rate=SAMPLE_RATE),
            "prompt": Value("string"),
            "reference": Value("string"),
            "id": Value("string"),
        }
    )
    # Building the Arrow table directly: datasets' own encoder needs torchcodec even for raw bytes.
    table = pa.Table.from_pydict(
        {
            "audio": [
                {"bytes": wav, "path": f"{q['id']}.wav"} for q, wav in zip(questions, wavs, strict=True)
            ],
            "prompt": [q["prompt"] for q in questions],
            "reference": [q["reference"] for q in questions],
            "id": [q["id"] for q in questions],
        },
        schema=features.arrow_schema,
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    _write_atomic(target / PARQUET_NAME, buffer.getvalue().to_pybytes())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the fixture is meant to be read by other users
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
