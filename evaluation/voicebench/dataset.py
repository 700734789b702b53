"""VoiceBench items: load a subset from the hub's parquet layout, pool its splits, and sample reproducibly.

The layout is the one of ``hlt-lab/voicebench``: ``{root}/{subset}/{split}-00000-of-00001.parquet`` with an
``audio`` column in ``datasets``' Audio storage (``{bytes, path}``), ``prompt``, and per-subset extras
(``reference``, ``id``, ``key``, ``instruction_id_list``, ``kwargs``). Audio is read with
``Audio(decode=False)`` and decoded with soundfile, so neither torch nor torchcodec is needed; it is
resampled to 16 kHz with soxr's high-quality mode when ``soxr`` is installed, else with the numpy
Kaiser-sinc resampler of :mod:`evaluation.audio`.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import audio as audio_lib
from evaluation.audio import decode_audio_bytes
from evaluation.voicebench.subsets import SubsetSpec

SAMPLE_RATE = 16_000
# Columns that become Item fields; every other column lands in Item.extra.
_CORE_COLUMNS = frozenset({"audio", "prompt", "reference", "id"})


def resampler_name() -> str:
    """Which resampler :func:`resample_audio` uses here: ``"soxr-hq"`` or ``"numpy-kaiser-sinc"``."""
    try:
        import soxr  # noqa: F401  # optional dependency: only its presence is asked
    except ImportError:
        return "numpy-kaiser-sinc"
    return "soxr-hq"


def resample_audio(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono audio to ``target_sr`` as float32: soxr ("HQ") when importable, else numpy.

    soxr (libsoxr, a small compiled wheel) is faster and has a flatter passband than the numpy
    fallback, :func:`evaluation.audio.resample`; both are deterministic. Equal rates return the input as
    float32 without filtering. Raises ValueError for a non 1-D signal or rates outside 1-384 kHz.
    """
    signal = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        if signal.ndim != 1:
            raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
        return signal
    try:
        import soxr
    except ImportError:
        return audio_lib.resample(signal, orig_sr, target_sr)
    # The numpy path validates rates and shape; do the same here so both paths refuse the same input.
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if not isinstance(rate, int | np.integer) or not 1_000 <= rate <= 384_000:
            raise ValueError(f"{name} must be an integer in [1000, 384000]")
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
    if signal.size == 0:
        return signal
    out = soxr.resample(signal, int(orig_sr), int(target_sr), quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


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
    ``id`` then stays in ``extra``). ``extra`` holds the other non-core columns, IFEval's ``kwargs``
    normalised as in :func:`load_spec`. ``cache_dir`` is passed to ``datasets`` (its Arrow cache); None
    uses the library default. Raises FileNotFoundError when no parquet file matches and ValueError when
    a row's audio is missing or undecodable.
    """
    folder = Path(root) / subset
    files = sorted(folder.glob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files for {subset}/{split} under {folder}")
    rows = _read_splits({split: files}, cache_dir)[split]

    # Item ids key the result store, so they must be unique; an ``id`` column that repeats (bbh's carries
    # the task name) is kept in ``extra`` and the row index names the item instead.
    unique_ids = _ids_are_unique(rows)
    core = _CORE_COLUMNS if unique_ids else _CORE_COLUMNS - {"id"}
    items: list[Item] = []
    for index, row in enumerate(rows):
        item_id = str(row["id"]) if unique_ids else f"{subset}-{index}"
        extra = {key: value for key, value in row.items() if key not in core}
        items.append(_make_item(subset, item_id, row, extra))
    return items


def load_spec(
    root: Path, spec: SubsetSpec, splits: Sequence[str] | None = None, *, cache_dir: Path | None = None
) -> list[Item]:
    """Load and pool ``splits`` of ``spec``'s config from a hub-layout folder; audio at 16 kHz.

    ``splits`` None means those of ``spec.splits`` that are present (at least one must be); splits
    named explicitly must all be present.

    Items keep the order of ``splits``, rows in file order within each. Item ids are unique across
    splits and do not depend on which splits were asked for: for a config with one split (``test``)
    they are the ``id`` column when present and unique, else ``{subset}-{row}``; for a config with several
    splits (sd-qa regions, mmsu subjects) ``{split}/{id}`` or ``{split}/{row}`` (e.g. ``usa/3``).
    ``extra`` holds ``split``, the dataset's ``id`` when it has one (always, even when it also names the
    item: bbh's evaluator reads the task from it), and every other non-core column: ifeval's ``key``
    (int), ``instruction_id_list`` (list of str) and ``kwargs`` as plain lists of plain dicts with the
    None entries of each dict dropped (parquet stores one struct with every IFEval key, null where an
    instruction does not use it, so the checkers see only the arguments that apply).

    Raises ValueError for an empty or repeated split list, FileNotFoundError naming every missing split
    (and the splits present), ValueError when a row's audio is unusable.
    """
    wanted = list(spec.splits if splits is None else splits)
    if not wanted:
        raise ValueError(f"{spec.name}: no splits requested")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"{spec.name}: splits repeat in {wanted}")
    folder = Path(root) / spec.name
    found = {split: sorted(folder.glob(f"{split}-*.parquet")) for split in wanted}
    missing = [split for split, paths in found.items() if not paths]
    # Defaults are lenient (a small local copy may hold a few of mmsu's subjects); splits asked for by
    # name are not: a missing one would silently shrink the benchmark.
    if missing and (splits is not None or len(missing) == len(wanted)):
        present = sorted({path.name.split("-", 1)[0] for path in folder.glob("*.parquet")})
        raise FileNotFoundError(
            f"{spec.name}: no parquet files for split(s) {missing} under {folder}; "
            f"present: {present or 'none'}"
        )
    wanted = [split for split in wanted if found[split]]
    files = {split: found[split] for split in wanted}
    by_split = _read_splits(files, cache_dir)
    multi = len(spec.all_splits) > 1
    items: list[Item] = []
    for split in wanted:
        rows = by_split[split]
        unique_ids = _ids_are_unique(rows)
        for index, row in enumerate(rows):
            local = str(row["id"]) if unique_ids else (str(index) if multi else f"{spec.name}-{index}")
            item_id = f"{split}/{local}" if multi else local
            extra = {"split": split} | {
                key: value for key, value in row.items() if key not in _CORE_COLUMNS or key == "id"
            }
            items.append(_make_item(spec.name, item_id, row, extra))
    return items


def _read_splits(
    files: Mapping[str, Sequence[Path]], cache_dir: Path | None
) -> dict[str, list[dict[str, Any]]]:
    """Read the parquet files of each split through ``datasets`` (one call), audio left undecoded."""
    # Imported here: ``datasets`` is heavy, and only loading needs it (evaluators and tests of them don't).
    import datasets

    # Progress bars are for notebooks; in a daemon's log they are noise between JSON lines.
    datasets.disable_progress_bars()
    loaded = datasets.load_dataset(
        "parquet",
        data_files={split: [str(path) for path in paths] for split, paths in files.items()},
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    result: dict[str, list[dict[str, Any]]] = {}
    for split in files:
        dataset = loaded[split]
        if "audio" in dataset.column_names:
            dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
        result[split] = [dict(row) for row in dataset]
    return result


def _ids_are_unique(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when every row has a non-null ``id`` and no two are equal as text."""
    ids = [row.get("id") for row in rows]
    return bool(rows) and "id" in rows[0] and None not in ids and len({str(v) for v in ids}) == len(ids)


def _make_item(subset: str, item_id: str, row: Mapping[str, Any], extra: dict[str, Any]) -> Item:
    """Build a read-only Item from one row; ``extra`` is the part of the row kept beside the fields."""
    if "kwargs" in extra:
        extra["kwargs"] = normalize_ifeval_kwargs(extra["kwargs"], item_id)
    reference = row.get("reference")
    return Item(
        subset=subset,
        item_id=item_id,
        audio=_row_audio(row.get("audio"), item_id),
        sample_rate=SAMPLE_RATE,
        prompt=str(row.get("prompt") or ""),
        reference=None if reference is None else str(reference),
        extra=types.MappingProxyType(extra),
    )


def normalize_ifeval_kwargs(value: object, item_id: str = "?") -> list[dict[str, Any]]:
    """IFEval ``kwargs`` as a list of plain dicts without None entries, one dict per instruction.

    Accepts the parquet form (a list of structs with every key, nulls where unused), a list of JSON
    object strings, or one JSON string holding the list (other exports of the data). Raises ValueError
    for anything else.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{item_id}: kwargs is not JSON: {exc}") from exc
    if not isinstance(value, list):
        raise ValueError(f"{item_id}: kwargs must be a list, got {type(value).__name__}")
    result: list[dict[str, Any]] = []
    for entry in value:
        if isinstance(entry, str):
            try:
                entry = json.loads(entry)
            except ValueError as exc:
                raise ValueError(f"{item_id}: a kwargs entry is not JSON: {exc}") from exc
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ValueError(f"{item_id}: a kwargs entry must be a mapping, got {type(entry).__name__}")
        result.append({str(key): item for key, item in entry.items() if item is not None})
    return result


def _row_audio(cell: object, item_id: str) -> np.ndarray:
    """Decode one Audio cell to read-only mono float32 at 16 kHz."""
    if not isinstance(cell, dict) or not cell.get("bytes"):
        # The hub's parquet files embed the bytes; a bare path would point outside the dataset folder.
        raise ValueError(f"{item_id}: audio has no embedded bytes")
    try:
        audio, rate = decode_audio_bytes(cell["bytes"])
    except ValueError as exc:
        raise ValueError(f"{item_id}: {exc}") from exc
    audio = resample_audio(audio, rate, SAMPLE_RATE)
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
