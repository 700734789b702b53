"""VoiceBench items: load one subset from the hub's parquet layout, and sample reproducibly.

The layout is the one of ``hlt-lab/voicebench``: ``{root}/{subset}/{split}-00000-of-00001.parquet`` with an
``audio`` column in ``datasets``' Audio storage (``{bytes, path}``), ``prompt``, and per-subset extras
(``reference``, ``id``, ``key``, ...). Audio is read with ``Audio(decode=False)`` and decoded with
soundfile, so neither torch nor torchcodec is needed.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.audio import decode_audio_bytes, resample

SAMPLE_RATE = 16_000
# Columns that become Item fields; every other column lands in Item.extra.
_CORE_COLUMNS = frozenset({"audio", "prompt", "reference", "id"})


@dataclass(frozen=True, eq=False)
class Item:
    """One benchmark item: what is sent to the miner (``audio``) and what judges the answer.

    ``audio`` is mono float32 at ``sample_rate`` (16 kHz from :func:`load_subset`) and read-only.
    ``prompt`` is the text the audio speaks; ``reference`` the expected answer where the subset has one;
    ``extra`` the subset's remaining columns (read-only). Items compare by identity: value equality on
    an audio array is neither cheap nor meaningful; compare ``(subset, item_id)`` instead.
    """

    subset: str
    item_id: str
    audio: np.ndarray
    sample_rate: int
    prompt: str
    reference: str | None
    extra: Mapping[str, Any]


def load_subset(root: Path, subset: str, split: str = "test", *, cache_dir: Path | None = None) -> list[Item]:
    """Load ``subset``/``split`` from a hub-layout folder at ``root``; audio resampled to 16 kHz.

    ``item_id`` is the ``id`` column when present and unique, else ``{subset}-{row index}`` (a repeating
    ``id`` then stays in ``extra``). ``cache_dir`` is passed
    to ``datasets`` (its Arrow cache); None uses the library default. Raises FileNotFoundError when no
    parquet file matches and ValueError when a row's audio is missing or undecodable.
    """
    # Imported here: ``datasets`` is heavy, and only loading needs it (evaluators and tests of them don't).
    import datasets

    folder = Path(root) / subset
    files = sorted(folder.glob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files for {subset}/{split} under {folder}")
    # Progress bars are for notebooks; in a daemon's log they are noise between JSON lines.
    datasets.disable_progress_bars()
    dataset = datasets.load_dataset(
        "parquet",
        data_files={split: [str(path) for path in files]},
        split=split,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))

    # Item ids key the result store, so they must be unique; an ``id`` column that repeats (bbh's carries
    # the task name) is kept in ``extra`` and the row index names the item instead.
    ids = list(dataset["id"]) if "id" in dataset.column_names else None
    unique_ids = ids is not None and None not in ids and len({str(v) for v in ids}) == len(ids)
    core = _CORE_COLUMNS if unique_ids else _CORE_COLUMNS - {"id"}

    items: list[Item] = []
    for index, row in enumerate(dataset):
        item_id = str(row["id"]) if unique_ids else f"{subset}-{index}"
        audio = _row_audio(row.get("audio"), item_id)
        reference = row.get("reference")
        extra = {key: value for key, value in row.items() if key not in core}
        items.append(
            Item(
                subset=subset,
                item_id=item_id,
                audio=audio,
                sample_rate=SAMPLE_RATE,
                prompt=str(row.get("prompt") or ""),
                reference=None if reference is None else str(reference),
                extra=types.MappingProxyType(extra),
            )
        )
    return items


def _row_audio(cell: object, item_id: str) -> np.ndarray:
    """Decode one Audio cell to read-only mono float32 at 16 kHz."""
    if not isinstance(cell, dict) or not cell.get("bytes"):
        # The hub's parquet files embed the bytes; a bare path would point outside the dataset folder.
        raise ValueError(f"{item_id}: audio has no embedded bytes")
    try:
        audio, rate = decode_audio_bytes(cell["bytes"])
    except ValueError as exc:
        raise ValueError(f"{item_id}: {exc}") from exc
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate, SAMPLE_RATE)
    audio.flags.writeable = False
    return audio


def sample_items(items: Sequence[Item], n: int | None, seed: int) -> list[Item]:
    """Pick ``n`` distinct items reproducibly: the same items, seed and ``n`` give the same list.

    The choice comes from ``numpy.random.default_rng(seed)`` (seed >= 0) and the result keeps the
    items' original order. ``n`` None or >= ``len(items)`` returns all items. The choice depends on the
    number of items, so a changed dataset gives a different sample for the same seed.
    """
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n is None or n >= len(items):
        return list(items)
    generator = np.random.default_rng(seed)
    chosen = np.sort(generator.choice(len(items), size=n, replace=False))
    return [items[int(i)] for i in chosen]
