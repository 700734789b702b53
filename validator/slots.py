"""Evaluation workers and the GPUs each one may give its miner containers.

One worker per configured GPU slot, each pinned to its slot's device ids; with no slots configured the
validator runs ``eval-workers`` workers that all get ``gpu-device-ids`` (empty: no GPU at all, the
CPU-only case). Pure functions, so the mapping is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

Slot = tuple[str, ...]


def worker_slots(
    gpu_slots: Sequence[Sequence[str]] | None, eval_workers: int, gpu_device_ids: Sequence[str] = ()
) -> list[Slot]:
    """The device ids of each evaluation worker, worker 0 first; the list's length is the worker count.

    * ``gpu_slots`` set: one worker per slot, pinned to exactly that slot's ids (``eval_workers`` is
      not used: the slots decide how many miners run at once).
    * otherwise ``eval_workers`` workers, each with ``gpu_device_ids`` (all the same GPUs, or none).

    Raises ValueError for a slot without ids, a blank id, or an id repeated inside one slot.
    """
    if eval_workers < 1:
        raise ValueError("eval_workers must be at least 1")
    if not gpu_slots:
        return [tuple(gpu_device_ids)] * eval_workers
    slots: list[Slot] = []
    for n, slot in enumerate(gpu_slots):
        ids = tuple(str(i).strip() for i in slot)
        if not ids:
            raise ValueError(f"GPU slot {n} names no device; leave gpu-slots empty for CPU-only workers")
        if any(not i for i in ids):
            raise ValueError(f"GPU slot {n} has a blank device id")
        if len(set(ids)) != len(ids):
            raise ValueError(f"GPU slot {n} names a device twice: {list(ids)}")
        slots.append(ids)
    return slots


def shared_devices(slots: Sequence[Slot]) -> set[str]:
    """Device ids that more than one worker uses (allowed: two small miners may share a large card)."""
    seen: set[str] = set()
    shared: set[str] = set()
    for slot in slots:
        for device in set(slot):
            (shared if device in seen else seen).add(device)
    return shared
