"""Download VoiceBench's parquet files from a Hugging Face hub into the layout the loader reads.

:func:`download_voicebench` fetches ``{config}/{split}-*.parquet`` of the requested subsets with
``huggingface_hub.snapshot_download`` into ``dest`` (``dest/{config}/{split}-00000-of-00001.parquet``, as
:func:`evaluation.voicebench.dataset.load_spec` expects). It blocks: async callers run it in a thread
(``asyncio.to_thread``). The download itself runs in a daemon worker thread so that ``timeout_s`` bounds
the call; on timeout the worker cannot be stopped and finishes or fails on its own, and a later call
resumes from the files already in ``dest``.

Testing: tests/test_voicebench_download.py publishes the team's fixture as a dataset on
:class:`evaluation.localhub.LocalHub` and downloads it with the real client, end to end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from evaluation.errors import InfrastructureError
from evaluation.voicebench.subsets import SubsetSpec

DEFAULT_REPO_ID = "hlt-lab/voicebench"
DEFAULT_TIMEOUT_S = 3600.0
# A whole download of every config is a few GB; more than a day means something is wrong, not slow.
MAX_TIMEOUT_S = 86_400.0


def voicebench_patterns(subsets: Sequence[SubsetSpec], all_regions: bool = False) -> list[str]:
    """``allow_patterns`` for the parquet shards of ``subsets``: ``{config}/{split}-*.parquet``.

    Each subset contributes its evaluated ``splits``, or every split it has (``all_splits``: sd-qa's eleven
    regions) when ``all_regions`` is true. Patterns are unique and in the order of ``subsets``. Raises
    ValueError when ``subsets`` is empty.
    """
    if not subsets:
        raise ValueError("no VoiceBench subsets requested")
    patterns: list[str] = []
    for spec in subsets:
        for split in spec.all_splits if all_regions else spec.splits:
            pattern = f"{spec.name}/{split}-*.parquet"
            if pattern not in patterns:
                patterns.append(pattern)
    return patterns


def download_voicebench(
    dest: Path,
    *,
    repo_id: str = DEFAULT_REPO_ID,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    subsets: Sequence[SubsetSpec],
    all_regions: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download the parquet files of ``subsets`` from dataset repo ``repo_id`` into ``dest``; returns dest.

    ``revision`` pins a commit (recommended: the data then never changes under a running validator);
    ``endpoint`` None uses huggingface_hub's default (or ``HF_ENDPOINT``); ``token`` None uses the
    library's stored login, if any. Files already in ``dest`` with the right content are not fetched
    again. Blocks for at most about ``timeout_s`` seconds. Raises ValueError for bad arguments and
    InfrastructureError when the repo or revision is not found, access is refused, the network or disk
    fails, the deadline passes, or a requested split has no parquet file after the download.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {timeout_s}")
    patterns = voicebench_patterns(subsets, all_regions)
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfrastructureError(f"cannot create VoiceBench folder {dest}: {exc}") from exc

    outcome: list[BaseException | None] = []

    def worker() -> None:
        # Imported in the worker: huggingface_hub is only needed when data is actually downloaded.
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(
                repo_id,
                repo_type="dataset",
                revision=revision,
                endpoint=endpoint,
                token=token,
                local_dir=dest,
                allow_patterns=patterns,
            )
        except BaseException as exc:  # handed to the caller's thread and re-raised there
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=worker, name="voicebench-download", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise InfrastructureError(
            f"VoiceBench download of {repo_id} did not finish within {timeout_s:g}s "
            "(it goes on in the background; a later call resumes from the files already fetched)"
        )
    error = outcome[0] if outcome else RuntimeError("download worker ended without a result")
    if error is not None:
        raise _as_infrastructure_error(error, repo_id, revision) from error

    missing = [pattern for pattern in patterns if not any(dest.glob(pattern))]
    if missing:
        raise InfrastructureError(
            f"VoiceBench repo {repo_id} at {revision or 'its default branch'} has no files for {missing}"
        )
    return dest


def _as_infrastructure_error(error: BaseException, repo_id: str, revision: str | None) -> InfrastructureError:
    """A clear InfrastructureError for a download failure (most specific cause first)."""
    from huggingface_hub import errors as hub_errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(error, hub_errors.GatedRepoError):
        message = f"access to the VoiceBench dataset {where} is gated; accept its terms and pass a token"
    elif isinstance(error, hub_errors.RepositoryNotFoundError):
        message = f"VoiceBench dataset repo {repo_id} not found (or no access with this token)"
    elif isinstance(error, hub_errors.RevisionNotFoundError):
        message = f"revision {revision!r} of the VoiceBench dataset {repo_id} not found"
    elif isinstance(error, hub_errors.HfHubHTTPError):
        message = f"the hub refused the VoiceBench download of {where}: {error}"
    elif isinstance(error, hub_errors.LocalEntryNotFoundError):
        message = f"cannot reach the hub to download VoiceBench {where} (offline or unreachable): {error}"
    elif isinstance(error, OSError):
        message = f"VoiceBench download of {where} failed (network or disk): {error}"
    else:
        message = f"VoiceBench download of {where} failed: {type(error).__name__}: {error}"
    return InfrastructureError(message[:1000])
