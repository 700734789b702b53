"""Build a small local VoiceBench look-alike: our own questions, spoken by espeak-ng, in the hub's layout.

The result is read by the same code path as ``hlt-lab/voicebench`` (``datasets`` parquet loader,
``{out_dir}/{subset}/{split}-00000-of-00001.parquet``), so tests, the demo and miners' local checks
exercise the real loader without the hub. Every subset of :data:`~evaluation.voicebench.subsets.SUBSETS`
has a question file ``fixtures/{subset}.json``: a list of rows (the ``test`` split) or an object mapping
split names to lists of rows (sd-qa's regions, mmsu's subjects). Rows hold the subset's columns of
VoiceBench's schema except ``audio`` (see :data:`SUBSET_COLUMNS`). Output is deterministic for a given
espeak-ng version and resampler; a hidden manifest in each subset's folder lets a rebuild with the same
questions and voice settings skip the subset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import soundfile as sf

from evaluation.audio import decode_audio_bytes
from evaluation.errors import InfrastructureError
from evaluation.voicebench.dataset import resample_audio, resampler_name
from evaluation.voicebench.subsets import SUBSETS

SAMPLE_RATE = 16_000
SHARD_SUFFIX = "-00000-of-00001.parquet"
# The single-split subsets' file name (kept as a constant: the tests and older callers use it).
PARQUET_NAME = f"test{SHARD_SUFFIX}"
# Hidden: ``datasets`` skips dot-files when it resolves a folder, so the manifest never looks like data.
MANIFEST_NAME = ".fixture-manifest.json"
# Bump when the output format changes so that old caches are rebuilt.
FORMAT_VERSION = 2
ESPEAK_TIMEOUT_S = 60.0
# espeak-ng is single-threaded and short-lived; a few at once keep 2 cores busy without thrashing.
DEFAULT_WORKERS = 4
INSTALL_HINT = "install espeak-ng: apt-get install espeak-ng"

# VoiceBench's columns after ``audio`` and ``prompt``, per subset. openbookqa also keeps the ``id``
# column this fixture has always had (its item ids are used by other tests).
SUBSET_COLUMNS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "alpacaeval_full": (),
        "commoneval": (),
        "wildvoice": (),
        "sd-qa": ("reference",),
        "mmsu": ("reference",),
        "openbookqa": ("reference", "id"),
        "bbh": ("reference", "id"),
        "ifeval": ("key", "instruction_id_list", "kwargs"),
        "advbench": (),
    }
)

# IFEval's ``kwargs`` struct: every key is present in every dict, null where the instruction doesn't use
# it (the layout of Google's IFEval data), so all rows share one parquet schema. "int", "str" or "list".
IFEVAL_KWARGS: MappingProxyType[str, str] = MappingProxyType(
    {
        "num_highlights": "int",
        "relation": "str",
        "num_words": "int",
        "num_placeholders": "int",
        "prompt_to_repeat": "str",
        "num_paragraphs": "int",
        "nth_paragraph": "int",
        "first_word": "str",
        "num_bullets": "int",
        "section_spliter": "str",
        "num_sections": "int",
        "capital_relation": "str",
        "capital_frequency": "int",
        "keywords": "list",
        "num_sentences": "int",
        "keyword": "str",
        "frequency": "int",
        "letter": "str",
        "let_frequency": "int",
        "let_relation": "str",
        "end_phrase": "str",
        "forbidden_words": "list",
        "postscript_marker": "str",
        "language": "str",
    }
)
_INSTRUCTION_ID = re.compile(r"^[a-z_]+:[a-z_]+$")
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class FixtureBuildError(InfrastructureError):
    """The fixture could not be built (espeak-ng missing or failing, bad question file)."""


def parquet_name(split: str) -> str:
    """File name of a split's only shard, as on the hub: ``{split}-00000-of-00001.parquet``."""
    return f"{split}{SHARD_SUFFIX}"


def available_subsets() -> list[str]:
    """Subsets that have a question file in ``evaluation/voicebench/fixtures``."""
    folder = resources.files("evaluation.voicebench") / "fixtures"
    return sorted(
        entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def build_fixture(
    out_dir: Path,
    subsets: Sequence[str] | None = None,
    *,
    voice: str = "en-us",
    rate_wpm: int = 160,
    workers: int = DEFAULT_WORKERS,
) -> Path:
    """Synthesize the subsets' questions and write ``out_dir/{subset}/{split}-00000-of-00001.parquet``.

    ``subsets`` None builds every subset that has a question file. Columns: ``audio`` (``{bytes: 16 kHz
    PCM-16 WAV, path}``, ``datasets``' Audio storage), ``prompt``, then the subset's
    :data:`SUBSET_COLUMNS`. A subset whose manifest matches its question file's hash and the voice
    settings (and whose parquet files all exist) is left as it is. Prompts are spoken by up to
    ``workers`` espeak-ng processes at once. Returns ``out_dir``. Raises FixtureBuildError when
    espeak-ng is missing or fails or a question file is malformed, ValueError for an unknown subset or
    bad settings.
    """
    if not 80 <= rate_wpm <= 450:
        raise ValueError(f"rate_wpm must be in [80, 450], got {rate_wpm}")
    if not voice or voice.startswith("-") or any(ch.isspace() for ch in voice):
        raise ValueError(f"invalid espeak-ng voice name {voice!r}")
    if not 1 <= workers <= 64:
        raise ValueError(f"workers must be in [1, 64], got {workers}")
    known = available_subsets()
    names = list(dict.fromkeys(subsets)) if subsets is not None else known
    unknown = [name for name in names if name not in known or name not in SUBSET_COLUMNS]
    if unknown:
        raise ValueError(f"no fixture questions for {unknown}; available: {known}")

    out_dir = Path(out_dir)
    plans: list[tuple[str, dict[str, Any], dict[str, list[dict[str, Any]]]]] = []
    for subset in names:
        raw = (resources.files("evaluation.voicebench") / "fixtures" / f"{subset}.json").read_bytes()
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "subset": subset,
            "questions_sha256": hashlib.sha256(raw).hexdigest(),
            "voice": voice,
            "rate_wpm": rate_wpm,
            "sample_rate": SAMPLE_RATE,
        }
        if _cache_matches(out_dir / subset, manifest):
            continue
        plans.append((subset, manifest, _parse_questions(raw, subset)))
    if not plans:
        return out_dir

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FixtureBuildError(f"espeak-ng not found on PATH; {INSTALL_HINT}")
    prompts = [row["prompt"] for _, _, splits in plans for rows in splits.values() for row in rows]
    # One pool for all subsets: a cold build is dominated by espeak-ng start-up, which parallelises well.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="espeak") as pool:
        wavs = iter(list(pool.map(lambda text: _synthesize(espeak, text, voice, rate_wpm), prompts)))
    version = _espeak_version(espeak)
    for subset, manifest, splits in plans:
        target = out_dir / subset
        # Recorded for information only: a cache built elsewhere stays usable here.
        manifest["espeak_version"] = version
        manifest["resampler"] = resampler_name()
        manifest["splits"] = sorted(splits)
        # Drop the old manifest first: a crash between the writes must not leave a stale match.
        (target / MANIFEST_NAME).unlink(missing_ok=True)
        for split, rows in splits.items():
            _write_parquet(target, subset, split, rows, [next(wavs) for _ in rows])
        # A split removed from the question file must not linger as data the loader would pool.
        for stale in target.glob(f"*{SHARD_SUFFIX}"):
            if stale.name.removesuffix(SHARD_SUFFIX) not in splits:
                stale.unlink()
        _write_atomic(target / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return out_dir


def _cache_matches(target: Path, manifest: dict[str, Any]) -> bool:
    """True when a previous build with the same inputs left its manifest and every split's parquet."""
    try:
        stored = json.loads((target / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    splits = stored.get("splits")
    if not isinstance(splits, list) or not splits:
        return False
    if not all(isinstance(split, str) and (target / parquet_name(split)).is_file() for split in splits):
        return False
    return all(stored.get(key) == value for key, value in manifest.items())


def _parse_questions(raw: bytes, subset: str) -> dict[str, list[dict[str, Any]]]:
    """Read and check a question file; returns its rows by split (a bare list is the ``test`` split)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FixtureBuildError(f"{subset}.json is not valid JSON: {exc}") from exc
    splits = {"test": data} if isinstance(data, list) else data
    if not isinstance(splits, dict) or not splits:
        raise FixtureBuildError(f"{subset}.json must hold a list of rows or an object of split -> rows")
    allowed = SUBSETS[subset].all_splits
    for split, rows in splits.items():
        where = f"{subset}.json[{split}]"
        if not _SPLIT_NAME.match(split) or split not in allowed:
            raise FixtureBuildError(f"{where}: split is not one of {subset}'s splits {list(allowed)}")
        if not isinstance(rows, list) or not rows:
            raise FixtureBuildError(f"{where}: must be a non-empty list of rows")
        columns = ("prompt", *SUBSET_COLUMNS[subset])
        for index, row in enumerate(rows):
            if not isinstance(row, dict) or set(row) != set(columns):
                raise FixtureBuildError(f"{where}[{index}]: a row has exactly the keys {list(columns)}")
            for column in columns:
                _check_cell(f"{where}[{index}].{column}", column, row[column], row)
        for column in ("id", "key"):
            if column in columns and len({row[column] for row in rows}) != len(rows):
                raise FixtureBuildError(f"{where}: {column} values are not unique")
    return splits


def _check_cell(where: str, column: str, value: object, row: dict[str, Any]) -> None:
    """Raise FixtureBuildError unless ``value`` has the type VoiceBench's column ``column`` has."""
    if column in ("prompt", "reference", "id"):
        ok = isinstance(value, str) and bool(value.strip())
    elif column == "key":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif column == "instruction_id_list":
        ok = (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(v, str) and _INSTRUCTION_ID.match(v) for v in value)
        )
    elif column == "kwargs":
        ok = (
            isinstance(value, list)
            and len(value) == len(row.get("instruction_id_list") or [])
            and all(isinstance(entry, dict) and _kwargs_ok(entry) for entry in value)
        )
    else:  # pragma: no cover - SUBSET_COLUMNS names only the columns above
        ok = False
    if not ok:
        raise FixtureBuildError(f"{where}: invalid value {value!r}")


def _kwargs_ok(entry: dict[str, Any]) -> bool:
    """True when an IFEval kwargs dict uses only known keys, each with its type."""
    for key, value in entry.items():
        kind = IFEVAL_KWARGS.get(key)
        if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        if kind == "str" and not isinstance(value, str):
            return False
        if kind == "list" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return False
        if kind is None:
            return False
    return True


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
    audio = resample_audio(audio, rate, SAMPLE_RATE)
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


def _features(columns: Sequence[str]) -> Any:
    """``datasets`` Features for ``audio``, ``prompt`` and ``columns``, with VoiceBench's types."""
    from datasets import Audio, Features, List, Value

    kwargs_struct = {
        key: List(Value("string")) if kind == "list" else Value("int64" if kind == "int" else "string")
        for key, kind in IFEVAL_KWARGS.items()
    }
    types = {
        "reference": Value("string"),
        "id": Value("string"),
        "key": Value("int64"),
        "instruction_id_list": List(Value("string")),
        "kwargs": List(kwargs_struct),
    }
    return Features(
        {"audio": Audio(sampling_rate=SAMPLE_RATE), "prompt": Value("string")}
        | {column: types[column] for column in columns}
    )


def _write_parquet(
    target: Path, subset: str, split: str, rows: list[dict[str, Any]], wavs: list[bytes]
) -> None:
    """Write one split with ``datasets``' feature metadata, so the loader sees an Audio column."""
    # Imported here: heavy libraries, needed only when a fixture is actually (re)built.
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = SUBSET_COLUMNS[subset]
    names = [str(row.get("id") or f"{subset}-{split}-{index}") for index, row in enumerate(rows)]
    data: dict[str, list[Any]] = {
        "audio": [{"bytes": wav, "path": f"{name}.wav"} for name, wav in zip(names, wavs, strict=True)],
        "prompt": [row["prompt"] for row in rows],
    }
    for column in columns:
        if column == "kwargs":
            # Every key in every dict, None where unused: one struct schema for all rows, as IFEval's.
            data[column] = [
                [{key: entry.get(key) for key in IFEVAL_KWARGS} for entry in row[column]] for row in rows
            ]
        else:
            data[column] = [row[column] for row in rows]
    # Building the Arrow table directly: datasets' own encoder needs torchcodec even for raw bytes.
    table = pa.Table.from_pydict(data, schema=_features(columns).arrow_schema)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    _write_atomic(target / parquet_name(split), buffer.getvalue().to_pybytes())


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
