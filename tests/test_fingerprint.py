"""Content fingerprints: what a copier can change without escaping detection, and what changes them."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from evaluation.fingerprint import content_fingerprint, file_sha256, weights_fingerprint

MIN = 1024  # a small weights threshold keeps the test repos tiny


def _make_repo(root: Path, hotkey: str = "5Alice") -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM python:3.11\n")
    (root / "server.py").write_text("print('serve')\n")
    (root / "inference.py").write_text("print('infer')\n")
    (root / "requirements.txt").write_text("numpy\n")
    (root / "hotkey.txt").write_text(hotkey + "\n")
    (root / "README.md").write_text(f"# model by {hotkey}\n")
    (root / ".gitattributes").write_text("*.bin filter=lfs\n")
    (root / "models").mkdir()
    (root / "models" / "model.bin").write_bytes(bytes(range(256)) * 16)  # 4 kB: above MIN
    (root / "models" / "config.json").write_text('{"layers": 2}\n')
    return root


def test_copier_changes_only_claim_files(tmp_path: Path) -> None:
    original = _make_repo(tmp_path / "a", hotkey="5Alice")
    copy = _make_repo(tmp_path / "b", hotkey="5Mallory")
    (copy / "README.md").write_text("totally my own model\n")
    (copy / ".gitattributes").write_text("* text=auto\n")
    # Client and git bookkeeping are never content.
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (copy / ".cache" / "huggingface").mkdir(parents=True)
    (copy / ".cache" / "huggingface" / "x.metadata").write_text("etag\n")
    assert content_fingerprint(original) == content_fingerprint(copy)
    assert weights_fingerprint(original, MIN) == weights_fingerprint(copy, MIN)


def test_code_change_changes_content_but_not_weights(tmp_path: Path) -> None:
    original = _make_repo(tmp_path / "a")
    copy = _make_repo(tmp_path / "b")
    (copy / "server.py").write_text("print('serve, but mine')\n")
    assert content_fingerprint(original) != content_fingerprint(copy)
    assert weights_fingerprint(original, MIN) == weights_fingerprint(copy, MIN)


def test_renamed_weights_still_caught_but_content_differs(tmp_path: Path) -> None:
    original = _make_repo(tmp_path / "a")
    copy = _make_repo(tmp_path / "b")
    (copy / "models" / "model.bin").rename(copy / "weights.bin")
    assert content_fingerprint(original) != content_fingerprint(copy)
    assert weights_fingerprint(original, MIN) == weights_fingerprint(copy, MIN)


def test_changed_weight_byte_evades_both(tmp_path: Path) -> None:
    original = _make_repo(tmp_path / "a")
    copy = _make_repo(tmp_path / "b")
    data = bytearray((copy / "models" / "model.bin").read_bytes())
    data[0] ^= 1
    (copy / "models" / "model.bin").write_bytes(bytes(data))
    assert content_fingerprint(original) != content_fingerprint(copy)
    assert weights_fingerprint(original, MIN) != weights_fingerprint(copy, MIN)


def test_other_cache_folders_are_content(tmp_path: Path) -> None:
    """Only the hub client's bookkeeping is ignored, or copied weights could hide under .cache/."""
    original = _make_repo(tmp_path / "a")
    copy = _make_repo(tmp_path / "b")
    (copy / ".cache").mkdir()
    (copy / "models" / "model.bin").rename(copy / ".cache" / "model.bin")
    assert weights_fingerprint(original, MIN) == weights_fingerprint(copy, MIN)


def test_independent_of_location_and_creation_order(tmp_path: Path) -> None:
    first = _make_repo(tmp_path / "somewhere" / "a")
    second = tmp_path / "elsewhere" / "deeper" / "b"
    second.mkdir(parents=True)
    # Same files, written in the reverse order, so directory listing order differs.
    for path in sorted(first.rglob("*"), reverse=True):
        rel = path.relative_to(first)
        if path.is_file():
            (second / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, second / rel)
    assert content_fingerprint(first) == content_fingerprint(second)
    assert weights_fingerprint(first, MIN) == weights_fingerprint(second, MIN)


def test_path_is_part_of_content(tmp_path: Path) -> None:
    """Swapping two files' names changes the content fingerprint even though the bytes are the same."""
    first = tmp_path / "a"
    first.mkdir()
    (first / "x.py").write_text("one\n")
    (first / "y.py").write_text("two\n")
    second = tmp_path / "b"
    second.mkdir()
    (second / "x.py").write_text("two\n")
    (second / "y.py").write_text("one\n")
    assert content_fingerprint(first) != content_fingerprint(second)


def test_no_large_files_means_no_weights_fingerprint(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path / "a")
    assert weights_fingerprint(repo, min_bytes=1 << 20) is None
    assert isinstance(content_fingerprint(repo), str)


def test_large_sparse_file_is_streamed(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path / "a")
    big = repo / "models" / "big.safetensors"
    with open(big, "wb") as handle:
        handle.truncate(3 * 2**20 + 17)  # sparse: no disk use, ~3 MB of zeros to read
        handle.seek(2**20)
        handle.write(b"marker")
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    # A chunk far smaller than the file exercises the streaming loop across many reads.
    assert file_sha256(big, chunk_bytes=4096) == expected
    assert file_sha256(big) == expected
    with_big = weights_fingerprint(repo)
    assert with_big is not None
    big.unlink()
    assert weights_fingerprint(repo) is None


def test_symlink_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret" * 1000)
    repo = _make_repo(tmp_path / "a")
    (repo / "link.bin").symlink_to(outside)
    before = content_fingerprint(repo)
    # Changing what the link points at does not change the fingerprint: only the target string counts.
    outside.write_bytes(b"other" * 1000)
    assert content_fingerprint(repo) == before
    # A different target string does.
    (repo / "link.bin").unlink()
    (repo / "link.bin").symlink_to(tmp_path / "elsewhere.bin")
    assert content_fingerprint(repo) != before
    # Links never count as weights, even when they point at a large file.
    assert weights_fingerprint(repo, MIN) == weights_fingerprint(_make_repo(tmp_path / "b"), MIN)


def test_symlink_differs_from_file_with_target_as_content(tmp_path: Path) -> None:
    as_link = tmp_path / "a"
    as_link.mkdir()
    (as_link / "x").symlink_to("target")
    as_file = tmp_path / "b"
    as_file.mkdir()
    (as_file / "x").write_bytes(os.fsencode("target"))
    assert content_fingerprint(as_link) != content_fingerprint(as_file)


def test_directory_symlink_is_an_entry_not_a_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge.bin").write_bytes(b"z" * 4096)
    repo = _make_repo(tmp_path / "a")
    before = content_fingerprint(repo)
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    assert content_fingerprint(repo) != before
    (outside / "huge.bin").write_bytes(b"y" * 4096)
    after = content_fingerprint(repo)
    (outside / "huge.bin").write_bytes(b"z" * 4096)
    assert content_fingerprint(repo) == after


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        content_fingerprint(tmp_path / "nope")
