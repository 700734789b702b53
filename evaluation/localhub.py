"""A small file server that speaks enough of the HuggingFace Hub protocol for the real client.

It exists for the demo and the tests: ``huggingface_hub.snapshot_download`` and ``HfApi.model_info`` run
their real code paths against it (``endpoint=`` or ``HF_ENDPOINT``), so the fetch adapter is exercised
without any outside network. It listens on loopback only.

Storage layout under ``root``::

    {namespace}/{name}/{revision}/...files             a model: one immutable folder per revision (40 hex)
    {namespace}/{name}/refs.json                       {"main": revision, ...}
    datasets/{namespace}/{name}/{revision}/...files    a dataset, same layout under its own folder
    datasets/{namespace}/{name}/refs.json

``datasets`` is therefore a reserved model namespace (as on the real hub, where ``/datasets/...`` URLs
belong to dataset repos): a model and a dataset with the same id never share a folder.

Served endpoints (GET, and HEAD where the client uses it), ``{kind}`` being ``models`` or ``datasets``:

- ``/api/{kind}/{ns}/{name}`` and ``/api/{kind}/{ns}/{name}/revision/{rev}``: repo info with siblings
  (sizes, blob ids and LFS details when ``?blobs=true``);
- ``/api/{kind}/{ns}/{name}/tree/{rev}[/{path}]`` with ``?recursive=true``;
- ``/{ns}/{name}/resolve/{rev}/{path}`` (models) and ``/datasets/{ns}/{name}/resolve/{rev}/{path}``
  (datasets): the file, with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``.

Errors carry the ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that
the client maps to its exception types. Only files found by walking a revision folder are ever served,
looked up by their relative name, so a URL cannot name anything outside a revision.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from aiohttp import web

# Files at least this large are described as LFS files (sha256 ETag, ``lfs`` block), like the real hub
# does for model weights. Tests lower it to exercise both kinds with tiny files.
DEFAULT_LFS_THRESHOLD_BYTES = 1 * 2**20

_CHUNK_BYTES = 1 * 2**20
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHA_RE = re.compile(r"[0-9a-f]{40}")
# A git-lfs pointer is "version <spec url>\n" (43 bytes), "oid sha256:<64 hex>\n" (76 bytes) and
# "size <n>\n" (6 bytes plus the digits); only its length is reported, so the text is not built here.
_LFS_POINTER_FIXED_BYTES = 43 + 76 + 6
_MAX_COMPONENT_CHARS = 255
_TRUTHY = frozenset({"1", "true", "True", "yes"})
# Folder under the store root that holds dataset repos; also the URL prefix of dataset files.
DATASETS_DIR = "datasets"
REPO_TYPES = ("model", "dataset")
# The client's plural URL names (``/api/models``, ``/api/datasets``) for each repo type.
_API_KINDS = {"models": "model", "datasets": "dataset"}


class HubPathError(ValueError):
    """A repo id, revision or path that can never name anything in the store."""


@dataclass(frozen=True)
class _FileEntry:
    """One file of one revision, with the digests the client expects."""

    path: Path
    size: int
    blob_id: str
    sha256: str
    lfs: bool


@dataclass(frozen=True)
class _RevisionIndex:
    """Every file of one revision, keyed by its POSIX path relative to the revision folder."""

    revision: str
    files: dict[str, _FileEntry]
    folders: frozenset[str]


class _HubError(Exception):
    """Carries an HTTP status and a hub error code up to the request handler."""

    def __init__(self, status: int, code: str | None, message: str, *, commit: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.commit = commit


def _check_name(part: str, what: str) -> str:
    if not _NAME_RE.fullmatch(part):
        raise HubPathError(f"invalid {what}: {part!r}")
    return part


def split_repo_id(repo_id: str) -> tuple[str, str]:
    """Split ``namespace/name`` and validate both parts; raises HubPathError when malformed."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise HubPathError(f"repo id must be 'namespace/name': {repo_id!r}")
    return _check_name(parts[0], "namespace"), _check_name(parts[1], "name")


def repo_dir(root: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Folder of ``repo_id`` (validated) in the store at ``root``: models at the top, datasets below
    ``datasets/``. Raises HubPathError for a malformed id, for a model in the reserved ``datasets``
    namespace (its folder would be a dataset namespace) and ValueError for an unknown ``repo_type``."""
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    namespace, name = split_repo_id(repo_id)
    if repo_type == "dataset":
        return Path(root) / DATASETS_DIR / namespace / name
    if namespace == DATASETS_DIR:
        raise HubPathError(f"namespace {DATASETS_DIR!r} is reserved for dataset repos: {repo_id!r}")
    return Path(root) / namespace / name


def _check_relative_path(components: list[str]) -> list[str]:
    """Reject anything but plain names: no empty, '.', '..', backslash, NUL or control characters."""
    if not components:
        raise HubPathError("empty path")
    for part in components:
        if part in ("", ".", "..") or len(part) > _MAX_COMPONENT_CHARS:
            raise HubPathError(f"invalid path component {part!r}")
        if "\\" in part or any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            raise HubPathError(f"invalid character in path component {part!r}")
    return components


def _iter_source_files(source_dir: Path) -> list[tuple[str, Path]]:
    """Regular files under ``source_dir`` (``.git`` skipped), sorted by relative POSIX path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source_dir, followlinks=False):
        base = Path(dirpath)
        # A hub revision has no .git folder, and symlinked folders would escape the copy.
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for d in dirnames:
            if (base / d).is_symlink():
                raise ValueError(f"symlinked folder not allowed in a published repo: {base / d}")
        for name in filenames:
            full = base / name
            mode = full.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ValueError(f"only regular files can be published: {full}")
            found.append((full.relative_to(source_dir).as_posix(), full))
    found.sort(key=lambda item: item[0])
    return found


def _revision_of(files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for rel, full in files:
        size = full.stat().st_size
        # Path and length framing keep (a, "bc") and (ab, "c") from hashing alike.
        digest.update(rel.encode("utf-8") + b"\0" + size.to_bytes(8, "big"))
        with full.open("rb") as fh:
            while chunk := fh.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".refs-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def publish(root: Path, repo_id: str, source_dir: Path, *, repo_type: str = "model") -> str:
    """Store ``source_dir`` as a revision of ``repo_id`` under ``root`` and point ``main`` at it.

    ``repo_type`` is ``"model"`` (the default) or ``"dataset"``; see :func:`repo_dir` for where each
    is stored.

    The revision id is a sha1 over the sorted (relative path, size, bytes) of every file, so the same
    content always gets the same revision and publishing it again only moves ``main``. ``.git`` is
    skipped; symlinks and special files are refused (the hub has neither). Blocking: call it from a
    thread when an event loop is running.
    """
    repo_folder = repo_dir(root, repo_id, repo_type)
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise ValueError(f"not a directory: {source_dir}")
    files = _iter_source_files(source_dir)
    revision = _revision_of(files)

    repo_folder.mkdir(parents=True, exist_ok=True)
    target = repo_folder / revision
    if not target.exists():
        # Copy into a hidden folder and rename, so a reader never sees half a revision.
        staging = Path(tempfile.mkdtemp(dir=repo_folder, prefix=".publish-"))
        try:
            for rel, full in files:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(full, dest)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():  # someone else published the same content meanwhile
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    refs_path = repo_folder / "refs.json"
    refs = _read_refs(refs_path) if refs_path.exists() else {}
    refs["main"] = revision
    _write_json_atomic(refs_path, refs)
    return revision


def _read_refs(refs_path: Path) -> dict[str, str]:
    with refs_path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"refs file is not an object: {refs_path}")
    return {str(k): str(v) for k, v in data.items()}


def _git_blob_sha1(size: int, path: Path) -> tuple[str, str]:
    """Git blob id (sha1 of "blob <size>\\0" + bytes) and sha256 of one file, in one pass."""
    git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            git.update(chunk)
            sha256.update(chunk)
    return git.hexdigest(), sha256.hexdigest()


def _build_index(revision_dir: Path, revision: str, lfs_threshold: int) -> _RevisionIndex:
    files: dict[str, _FileEntry] = {}
    folders: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(revision_dir, followlinks=False):
        base = Path(dirpath)
        # Only real folders and regular files are served: a symlink planted in the store stays invisible.
        dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
        for d in dirnames:
            folders.add((base / d).relative_to(revision_dir).as_posix())
        for name in filenames:
            full = base / name
            st = full.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            blob_id, sha256 = _git_blob_sha1(st.st_size, full)
            rel = full.relative_to(revision_dir).as_posix()
            files[rel] = _FileEntry(full, st.st_size, blob_id, sha256, st.st_size >= lfs_threshold)
    return _RevisionIndex(revision, dict(sorted(files.items())), frozenset(folders))


def _file_json(rel: str, entry: _FileEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": rel}
    if entry.lfs:
        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": _lfs_pointer_size(entry.size)}
    return item


def _sibling_json(rel: str, entry: _FileEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"rfilename": rel, "size": entry.size, "blobId": entry.blob_id}
    if entry.lfs:
        item["lfs"] = {
            "sha256": entry.sha256,
            "size": entry.size,
            "pointerSize": _lfs_pointer_size(entry.size),
        }
    return item


def _lfs_pointer_size(size: int) -> int:
    return _LFS_POINTER_FIXED_BYTES + len(str(size))


def _folder_oid(index: _RevisionIndex, folder: str) -> str:
    # Not a real git tree id; the client only needs a stable value per folder and revision.
    return hashlib.sha1(f"tree {index.revision} {folder}".encode(), usedforsecurity=False).hexdigest()


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(size)


class LocalHub:
    """Serves a local store (see :func:`publish`) over HTTP on loopback, in hub-compatible form.

    ``requests`` counts handled requests by kind (``info``, ``tree``, ``resolve``) so tests can prove
    what a client did or did not download.
    """

    def __init__(
        self,
        root: Path,
        *,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD_BYTES,
        access_log: bool = False,
    ) -> None:
        self.root = Path(root)
        self.lfs_threshold = lfs_threshold
        self.requests: Counter[str] = Counter()
        self._access_log = access_log
        self._runner: web.AppRunner | None = None
        self._endpoint: str | None = None
        # Revisions are immutable, so their index (with digests) is computed once.
        self._indexes: dict[tuple[str, str, str, str], _RevisionIndex] = {}
        self._index_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The base URL clients use as ``endpoint``; only valid while started."""
        if self._endpoint is None:
            raise RuntimeError("LocalHub is not started")
        return self._endpoint

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening on ``host:port`` (a loopback address; port 0 picks a free one); returns the URL."""
        if self._runner is not None:
            raise RuntimeError("LocalHub already started")
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"LocalHub serves on loopback only, not {host!r}")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # aiohttp logs every request by default; only the command line wants that.
        runner = web.AppRunner(app) if self._access_log else web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._endpoint = f"http://{shown}:{bound_port}"
        return self._endpoint

    async def stop(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        runner, self._runner, self._endpoint = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> str:
        """Start on a free loopback port (unless already started) and return the endpoint URL."""
        if self._runner is None:
            return await self.start()
        return self.endpoint

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- request handling ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.json_response({"error": "method not allowed"}, status=405)
        try:
            return await self._route(request)
        except HubPathError as exc:
            return _error_response(400, "BadRequest", str(exc))
        except _HubError as exc:
            return _error_response(exc.status, exc.code, exc.message, commit=exc.commit)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        # The raw path is split before decoding, so an encoded slash can never create a segment
        # boundary in the repo or revision part; file paths are decoded and then re-split.
        raw = request.rel_url.raw_path.split("/")[1:]
        if raw[0] == "api" and len(raw) >= 4 and raw[1] in _API_KINDS:
            repo_type = _API_KINDS[raw[1]]
            repo = (_decode(raw[2]), _decode(raw[3]))
            rest = raw[4:]
            if not rest or rest == [""]:
                return await self._info(request, repo_type, repo, "main")
            if rest[0] == "revision" and len(rest) == 2:
                return await self._info(request, repo_type, repo, _decode(rest[1]))
            if rest[0] == "tree" and len(rest) >= 2:
                sub = [_decode(part) for part in rest[2:]]
                return await self._tree(request, repo_type, repo, _decode(rest[1]), sub)
        elif raw[0] == DATASETS_DIR:
            # Only dataset files live under /datasets/: it is a reserved model namespace, so a URL
            # here never falls through to the model route below.
            if len(raw) >= 6 and raw[3] == "resolve":
                repo = (_decode(raw[1]), _decode(raw[2]))
                parts = [_decode(p) for p in raw[5:]]
                return await self._resolve(request, "dataset", repo, _decode(raw[4]), parts)
        elif len(raw) >= 5 and raw[2] == "resolve":
            repo = (_decode(raw[0]), _decode(raw[1]))
            parts = [_decode(p) for p in raw[4:]]
            return await self._resolve(request, "model", repo, _decode(raw[3]), parts)
        raise _HubError(404, None, "no such endpoint")

    async def _index(self, repo_type: str, repo: tuple[str, str], revision: str) -> _RevisionIndex:
        namespace = _check_name(repo[0], "namespace")
        name = _check_name(repo[1], "name")
        repo_id = f"{namespace}/{name}"
        try:
            folder = repo_dir(self.root, repo_id, repo_type)
        except HubPathError:
            # A model in the reserved namespace cannot exist; say so the way the hub does.
            raise _HubError(404, "RepoNotFound", f"Repository {repo_id} not found") from None
        refs = await asyncio.to_thread(_load_refs_or_none, folder / "refs.json")
        if refs is None:
            raise _HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        sha = revision if _SHA_RE.fullmatch(revision) else refs.get(revision)
        if sha is None or not _SHA_RE.fullmatch(sha):
            raise _HubError(404, "RevisionNotFound", f"Revision {revision!r} not found in {repo_id}")
        key = (repo_type, namespace, name, sha)
        async with self._index_lock:
            index = self._indexes.get(key)
            if index is None:
                revision_dir = folder / sha
                if not await asyncio.to_thread(_is_real_dir, revision_dir):
                    raise _HubError(404, "RevisionNotFound", f"Revision {revision!r} not found in {repo_id}")
                index = await asyncio.to_thread(_build_index, revision_dir, sha, self.lfs_threshold)
                self._indexes[key] = index
        return index

    async def _info(
        self, request: web.Request, repo_type: str, repo: tuple[str, str], revision: str
    ) -> web.StreamResponse:
        self.requests["info"] += 1
        index = await self._index(repo_type, repo, revision)
        with_blobs = request.query.get("blobs") in _TRUTHY
        siblings = [
            _sibling_json(rel, entry) if with_blobs else {"rfilename": rel}
            for rel, entry in index.files.items()
        ]
        body: dict[str, Any] = {
            "_id": index.revision,
            "id": f"{repo[0]}/{repo[1]}",
            "sha": index.revision,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        if repo_type == "model":
            body["modelId"] = body["id"]  # only model info carries it on the real hub
        return web.json_response(body, headers={"X-Repo-Commit": index.revision})

    async def _tree(
        self, request: web.Request, repo_type: str, repo: tuple[str, str], revision: str, sub: list[str]
    ) -> web.StreamResponse:
        self.requests["tree"] += 1
        index = await self._index(repo_type, repo, revision)
        # The client sends the folder as one segment with encoded slashes; split it back into names.
        components = _check_relative_path("/".join(sub).split("/")) if sub else []
        folder = "/".join(components)
        if folder and folder not in index.folders:
            raise _HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        recursive = request.query.get("recursive") in _TRUTHY
        prefix = f"{folder}/" if folder else ""
        entries: list[dict[str, Any]] = []
        for path in sorted(index.folders):
            if _is_listed(path, prefix, recursive):
                entries.append(
                    {"type": "directory", "oid": _folder_oid(index, path), "size": 0, "path": path}
                )
        for path, entry in index.files.items():
            if _is_listed(path, prefix, recursive):
                entries.append(_file_json(path, entry))
        return web.json_response(entries, headers={"X-Repo-Commit": index.revision})

    async def _resolve(
        self, request: web.Request, repo_type: str, repo: tuple[str, str], revision: str, parts: list[str]
    ) -> web.StreamResponse:
        self.requests["resolve"] += 1
        index = await self._index(repo_type, repo, revision)
        rel = "/".join(_check_relative_path("/".join(parts).split("/")))
        entry = index.files.get(rel)
        if entry is None:
            raise _HubError(
                404, "EntryNotFound", f"{rel} does not exist on {revision}", commit=index.revision
            )
        headers = {
            "X-Repo-Commit": index.revision,
            "ETag": f'"{entry.sha256 if entry.lfs else entry.blob_id}"',
            "Content-Length": str(entry.size),
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        offset = 0
        while offset < entry.size:
            chunk = await asyncio.to_thread(
                _read_chunk, entry.path, offset, min(_CHUNK_BYTES, entry.size - offset)
            )
            if not chunk:
                # The file shrank under us: drop the connection rather than leave the client waiting
                # for bytes promised by Content-Length.
                raise ConnectionAbortedError(f"{rel} changed while being served")
            await response.write(chunk)
            offset += len(chunk)
        await response.write_eof()
        return response


def _is_listed(path: str, prefix: str, recursive: bool) -> bool:
    if not path.startswith(prefix):
        return False
    return recursive or "/" not in path[len(prefix) :]


def _decode(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise HubPathError(f"path segment is not UTF-8: {segment!r}") from exc


def _load_refs_or_none(refs_path: Path) -> dict[str, str] | None:
    try:
        return _read_refs(refs_path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _error_response(
    status: int, code: str | None, message: str, *, commit: str | None = None
) -> web.Response:
    # Header values must be one line of ASCII; the client reads the message from either place.
    safe_message = message.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")[:500]
    headers = {"X-Error-Message": safe_message}
    if code is not None:
        headers["X-Error-Code"] = code
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return web.json_response({"error": message}, status=status, headers=headers)


async def _serve(root: Path, port: int) -> None:
    hub = LocalHub(root, access_log=True)
    endpoint = await hub.start(port=port)
    try:
        print(f"serving {root} at {endpoint} (set HF_ENDPOINT={endpoint})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await hub.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a store for a person to point ``HF_ENDPOINT`` at."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.localhub", description="Serve a local hub-compatible store on 127.0.0.1."
    )
    parser.add_argument("--root", type=Path, required=True, help="store folder")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument(
        "--publish",
        nargs=2,
        action="append",
        default=[],
        metavar=("REPO_ID", "SOURCE_DIR"),
        help="publish SOURCE_DIR as a new revision of model REPO_ID before serving (repeatable)",
    )
    parser.add_argument(
        "--publish-dataset",
        nargs=2,
        action="append",
        default=[],
        metavar=("REPO_ID", "SOURCE_DIR"),
        help="publish SOURCE_DIR as a new revision of dataset REPO_ID before serving (repeatable)",
    )
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    for repo_id, source in args.publish:
        print(f"{repo_id}@{publish(args.root, repo_id, Path(source))}", flush=True)
    for repo_id, source in args.publish_dataset:
        revision = publish(args.root, repo_id, Path(source), repo_type="dataset")
        print(f"datasets/{repo_id}@{revision}", flush=True)
    asyncio.run(_serve(args.root, args.port))


if __name__ == "__main__":
    main()
