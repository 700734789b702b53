"""The Dockerfile policy over honest and hostile Dockerfiles, and the image checks after a build.

Pure: BuildKit's parser on text, and small repos in tmp_path for the files ADD would read. The same
policy on the real daemon is in tests/test_build_policy_docker.py.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import time
from pathlib import Path

import pytest

from evaluation.errors import BuildFailed, DockerfileRefused, RepoInvalid, SubmissionRejected
from evaluation.sandbox.dockerfile_policy import (
    DEFAULT_ALLOWED_BASES,
    BuildPolicy,
    Violation,
    archive_kind,
    check_image_config,
    check_repo_dockerfile,
    dockerfile_violations,
    parse_reference,
    repo_violations,
    runtime_environment,
    shown,
)
from evaluation.sandbox.dockerfile_policy import _match_component as match_component

EXAMPLE_DOCKERFILE = Path(__file__).resolve().parents[1] / "docker" / "example_miner" / "Dockerfile"
BASE = "voice-validator/base:bookworm"
DIGEST = "sha256:" + "ab" * 32
OPERATOR = BuildPolicy(build_args={"BASE_IMAGE": BASE})


def repo(tmp_path: Path, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    root = tmp_path / "repo"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    for name, data in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def violations(
    tmp_path: Path, dockerfile: str, policy: BuildPolicy = OPERATOR, files: dict[str, bytes] | None = None
) -> list[Violation]:
    return repo_violations(repo(tmp_path, dockerfile, files), policy)


def reasons(tmp_path: Path, dockerfile: str, policy: BuildPolicy = OPERATOR, **kw: dict[str, bytes]) -> str:
    return "\n".join(str(v) for v in violations(tmp_path, dockerfile, policy, kw.get("files")))


def tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"bomb" * 100
        info = tarfile.TarInfo("inside.bin")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ honest files


def test_the_example_miner_passes_with_and_without_the_operators_base(tmp_path: Path) -> None:
    text = EXAMPLE_DOCKERFILE.read_text(encoding="utf-8")
    assert violations(tmp_path, text, OPERATOR) == []  # BASE_IMAGE=the local base image
    assert violations(tmp_path, text, BuildPolicy()) == []  # its default, python:3.11-slim


@pytest.mark.parametrize(
    "base",
    [
        "python",
        "python:3.11-slim",
        "docker.io/library/python:3.12",
        "index.docker.io/library/python:3.10-bookworm",
        "library/python:3.11",
        f"python:3.11@{DIGEST}",
        "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
        "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime",
        "scratch",
    ],
)
def test_public_bases_on_the_default_list_are_allowed(tmp_path: Path, base: str) -> None:
    assert violations(tmp_path, f"FROM {base}\nRUN true\n", BuildPolicy()) == []


def test_multi_stage_builds_with_names_indexes_and_lowercase_keywords(tmp_path: Path) -> None:
    text = (
        "from python:3.11 AS Builder\n"
        "run pip wheel --wheel-dir /w numpy \\\n"
        "    && echo done\n"
        "FROM builder AS second\n"
        "FROM python:3.11-slim\n"
        "copy --from=BUILDER /w /w\n"
        "COPY --from=0 /w /w0\n"
        "COPY --from=second /etc/hostname /x\n"
        "RUN --mount=type=bind,from=builder,source=/w,target=/w pip install /w/*.whl\n"
        "RUN --mount=type=tmpfs,target=/scratch --mount=target=/ctx,source=. ls /ctx\n"
        "RUN --network=none --security=sandbox true\n"
        "COPY <<EOF /app/note\nhello\nEOF\n"
    )
    assert violations(tmp_path, text, BuildPolicy()) == []


@pytest.mark.parametrize(
    "prelude",
    [
        "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE:-python:3.11}\n",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE-python:3.11}\n",
        "ARG TAG=3.11\nFROM python:${TAG}-slim\n",
        "ARG TAG=3.11\nARG IMAGE=python:${TAG}\nFROM $IMAGE\n",
        'ARG BASE_IMAGE="python:3.11"\nFROM "${BASE_IMAGE}"\n',
        "ARG V\nFROM python${V:+-never}:3.11\n",
    ],
)
def test_arg_substitution_in_from_is_resolved(tmp_path: Path, prelude: str) -> None:
    assert violations(tmp_path, prelude + "RUN true\n", BuildPolicy()) == []


def test_plain_files_directories_and_globs_of_plain_files_may_be_added(tmp_path: Path) -> None:
    files = {
        "model/weights.bin": b"\x00" * 2048,
        "notes.txt": b"plain",
        # Inside a directory source an archive is copied as it is: Docker unpacks only direct sources.
        "vendor/blob.tar.gz": gzip.compress(b"x" * 4096),
    }
    text = (
        "FROM python:3.11\nADD notes.txt /n\nADD model/ /m\nADD vendor /v\nADD model/*.bin /w/\nADD . /all\n"
    )
    assert violations(tmp_path, text, BuildPolicy(), files) == []


def test_the_operators_build_arg_image_is_allowed_even_named_directly(tmp_path: Path) -> None:
    assert violations(tmp_path, f"FROM {BASE}\n") == []
    assert violations(tmp_path, f"FROM docker.io/{BASE}\n") == []
    other_tag = "voice-validator/base:other"
    assert "is not allowed" in reasons(tmp_path, f"FROM {other_tag}\n")


# ------------------------------------------------------------------------------------ ADD


@pytest.mark.parametrize(
    "source",
    [
        "http://127.0.0.1:8000/x",
        "HTTPS://example.com/model.bin",
        "ftp://198.51.100.7/x",
        "git@github.com:someone/repo.git",
        "https://github.com/someone/repo.git#main",
        '"http://198.51.100.7/quoted"',
        "h\\ttp://198.51.100.7/escaped",
    ],
)
def test_remote_add_sources_are_refused(tmp_path: Path, source: str) -> None:
    (found,) = violations(tmp_path, f"FROM python\nADD {source} /x\n")
    assert found.line == 2
    assert "remote sources are not allowed (the daemon fetches them on the host's network)" in found.reason


def test_remote_add_is_found_in_every_form(tmp_path: Path) -> None:
    text = (
        "FROM python\n"
        "add \\\n"
        "   http://198.51.100.7/a /a\n"
        'ADD ["http://198.51.100.7/b", "/b"]\n'
        "ADD --chown=1:1 --checksum=sha256:00 http://198.51.100.7/c /c\n"
    )
    found = violations(tmp_path, text)
    assert [v.line for v in found] == [2, 4, 5]
    assert str(found[0]).startswith("Dockerfile line 2: add http://198.51.100.7/a /a: remote sources")


def test_add_sources_with_variables_are_refused(tmp_path: Path) -> None:
    text = "FROM python\nARG URL=http://198.51.100.7/x\nADD $URL /x\nADD ${URL} /y\nADD 'unterminated /z\n"
    found = violations(tmp_path, text)
    assert [v.line for v in found] == [3, 4, 5]
    assert all("not allowed in ADD sources" in v.reason for v in found)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("bomb.tar.gz", gzip.compress(tar_bytes()), "gzip"),
        ("bomb.tar", tar_bytes(), "tar"),
        ("bomb.tar.bz2", bz2.compress(tar_bytes()), "bzip2"),
        ("bomb.tar.xz", lzma.compress(tar_bytes()), "xz"),
        ("innocent.txt", gzip.compress(tar_bytes()), "gzip"),  # judged by content, not by name
        ("weights.bin", tar_bytes(), "tar"),
    ],
)
def test_add_of_a_local_archive_is_refused_by_its_content(
    tmp_path: Path, name: str, data: bytes, kind: str
) -> None:
    (found,) = violations(tmp_path, f"FROM python\nADD {name} /x/\n", files={name: data})
    assert found.line == 2 and f"{name} is a {kind} archive, which ADD would unpack" in found.reason
    # COPY never unpacks: the same file is fine there.
    assert violations(tmp_path, f"FROM python\nCOPY {name} /x/\n", files={name: data}) == []


def test_add_globs_are_expanded_against_the_repo(tmp_path: Path) -> None:
    files = {"data/a.txt": b"plain", "data/b.dat": gzip.compress(b"x" * 100), "data/sub/c.tgz": tar_bytes()}
    found = violations(tmp_path, "FROM python\nADD data/*.dat /d/\nADD data/[a-c].txt /t/\n", files=files)
    assert [(v.line, "data/b.dat" in v.reason) for v in found] == [(2, True)]
    # "*" stops at "/", as in Docker; "**" is taken as any depth (stricter than Docker).
    assert violations(tmp_path, "FROM python\nADD data/* /d/\n", files=files)[0].reason.startswith(
        "data/b.dat"
    )
    deep = violations(tmp_path, "FROM python\nADD **/*.tgz /d/\n", files=files)
    assert len(deep) == 1 and "data/sub/c.tgz" in deep[0].reason


def test_add_of_a_symlink_follows_it_inside_the_repo_only(tmp_path: Path) -> None:
    root = repo(tmp_path, "FROM python\nADD link.bin /x\nADD away /y\n", {"real.tar": tar_bytes()})
    os.symlink("real.tar", root / "link.bin")
    outside = tmp_path / "outside.tar"
    outside.write_bytes(tar_bytes())
    os.symlink(outside, root / "away")
    found = repo_violations(root, BuildPolicy())
    assert [v.line for v in found] == [2, 3]
    assert "link.bin is a tar archive" in found[0].reason
    assert "leads outside the repo" in found[1].reason


def test_add_heredocs_and_sources_outside_the_context(tmp_path: Path) -> None:
    assert violations(tmp_path, "FROM python\nADD <<EOF /x\nhttp://not-a-source\nEOF\n") == []
    # normpath keeps "../x" inside the context, as Docker does; a missing file is the daemon's to report.
    assert violations(tmp_path, "FROM python\nADD ../../etc/passwd /x\n") == []


# ------------------------------------------------------------------------------------ FROM


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"FROM {BASE}\n", "base image docker.io/voice-validator/base:bookworm is not allowed"),
        ("FROM voice-validator-miner:default-uid3-0123456789ab\n", "is not allowed"),
        ("FROM ghcr.io/someone/python:3.11\n", "ghcr.io/someone/python:3.11 is not allowed"),
        ("FROM 127.0.0.1:5000/python\n", "is not allowed"),
        ("FROM 0\n", "docker.io/library/0:latest is not allowed"),  # FROM takes no stage index
        ("FROM $NOPE\n", "NOPE is not declared by an ARG before the first FROM"),
        ("ARG BASE\nFROM $BASE\n", "ARG BASE has no value"),
        ("FROM python\nARG LATE=python\nFROM $LATE\n", "LATE is not declared"),  # a stage's ARG
        ("ARG X=${UNSET}\nFROM python:${X}\n", "cannot be resolved"),
        ("ARG B=python\nFROM ${B#py}\n", "unsupported substitution"),
        ("FROM Python\n", "not a valid image reference"),
        ("FROM python AS build AS again\n", "expected FROM <image> [AS <name>]"),
        ("FROM python AS Bad/Name\n", "invalid stage name"),
        ("FROM python\nFROM later\nFROM python AS later\n", "docker.io/library/later:latest is not allowed"),
    ],
)
def test_from_outside_the_policy_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    found = reasons(tmp_path, text, BuildPolicy())
    assert reason in found, found


def test_the_operators_build_args_override_arg_defaults(tmp_path: Path) -> None:
    text = "ARG BASE_IMAGE=python:3.11\nFROM ${BASE_IMAGE}\n"
    assert violations(tmp_path, text, BuildPolicy()) == []
    hostile = BuildPolicy(build_args={"BASE_IMAGE": "someone/evil:1", "UNUSED": "x"})
    # The operator's own value is allowed: it named that image.
    assert violations(tmp_path, text, hostile) == []
    # A build arg the Dockerfile does not declare is not visible to FROM (Docker's rule too).
    assert "not declared" in reasons(tmp_path, "FROM ${UNUSED}\n", hostile)


def test_digest_pinning_requires_the_pinned_digest(tmp_path: Path) -> None:
    pinned = BuildPolicy(allowed_bases=(f"python@{DIGEST}", "nvidia/cuda:12.4.1-runtime-ubuntu22.04"))
    assert violations(tmp_path, f"FROM python@{DIGEST}\n", pinned) == []
    assert violations(tmp_path, f"FROM docker.io/library/python:3.11@{DIGEST}\n", pinned) == []
    assert "is not allowed" in reasons(tmp_path, "FROM python:3.11\n", pinned)
    assert "is not allowed" in reasons(tmp_path, f"FROM python@sha256:{'cd' * 32}\n", pinned)
    assert violations(tmp_path, "FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04\n", pinned) == []
    assert "is not allowed" in reasons(tmp_path, "FROM nvidia/cuda:12.4.1-devel-ubuntu22.04\n", pinned)
    assert "is not allowed" in reasons(tmp_path, "FROM nvidia/cuda\n", pinned)  # :latest


def test_reference_normalisation_follows_docker() -> None:
    assert str(parse_reference("python")) == "docker.io/library/python:latest"
    assert parse_reference("docker.io/library/python:3") == parse_reference("python:3")
    assert parse_reference("index.docker.io/nvidia/cuda:1").repository == "docker.io/nvidia/cuda"
    assert parse_reference("localhost/x").domain == "localhost"
    assert parse_reference("registry:5000/a/b:c").domain == "registry:5000"
    assert parse_reference("python", default_tag=False).tag is None
    for bad in ("", "Python", "python:", "py thon", "a//b", f"python@{DIGEST[:-60]}", "x" * 300):
        with pytest.raises(ValueError):
            parse_reference(bad)


def test_a_bad_allow_list_entry_fails_at_configuration_time() -> None:
    with pytest.raises(ValueError, match="allowed base 'Not An Image'"):
        BuildPolicy(allowed_bases=("python", "Not An Image"))
    assert BuildPolicy().allowed_bases == DEFAULT_ALLOWED_BASES


# ------------------------------------------------------------------------------------ --from, mounts


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"FROM python\nCOPY --from={BASE} /etc/passwd /x\n", f"--from={BASE}: only earlier stages"),
        ("FROM python\nCOPY --from=python:3.11 / /x\n", "only earlier stages"),
        ("FROM python\nCOPY --from=0 /a /b\n", "--from=0: only earlier stages"),  # its own stage
        ("FROM python AS a\nCOPY --from=a /a /b\n", "--from=a: only earlier stages"),
        ("FROM python\nCOPY --from=later /a /b\nFROM python AS later\n", "--from=later"),
        ("FROM python\nARG S=x\nCOPY --from=$S /a /b\n", "variables and quotes are not allowed"),
        ("FROM python\nCOPY --from=docker-image://python /a /b\n", "only earlier stages"),
        ("FROM python\nRUN --mount=type=cache,target=/root/.cache pip install x\n", "shared between builds"),
        ("FROM python\nRUN --mount=type=secret,id=token cat /run/secrets/token\n", "type=secret"),
        ("FROM python\nRUN --mount=type=ssh ssh git@host\n", "type=ssh is not allowed"),
        (f"FROM python\nRUN --mount=from={BASE},target=/b cat /b/etc/shadow\n", "--mount from"),
        ("FROM python\nRUN --mount=type=bind,from=python:3.11,target=/b true\n", "--mount from"),
        ("FROM python\nRUN --mount=type=weird true\n", "only bind and tmpfs"),
        ("FROM python\nARG T=cache\nRUN --mount=type=$T,target=/c true\n", "variables are not allowed"),
        ("FROM python\nRUN --network=host curl 127.0.0.1\n", "--network=host is not allowed"),
        ("FROM python\nRUN --security=insecure true\n", "--security=insecure is not allowed"),
        ("FROM python\nRUN --device=/dev/kvm true\n", "RUN flag --device is not allowed"),
        ("FROM python\nONBUILD ADD . /app\n", "ONBUILD is not allowed"),
        ("FROM python\nonbuild run echo\n", "ONBUILD is not allowed"),
    ],
)
def test_foreign_images_mounts_and_triggers_are_refused(tmp_path: Path, text: str, reason: str) -> None:
    found = reasons(tmp_path, text, BuildPolicy())
    assert reason in found, found


# ------------------------------------------------------------------------------------ directives, size


@pytest.mark.parametrize(
    "head",
    [
        "# syntax=docker/dockerfile:1\n",
        "#syntax = someone/frontend\n",
        "# SYNTAX=someone/frontend\n",
        "#!/usr/bin/env buildctl\n# syntax=someone/frontend\n",
        "# escape=\\\n# syntax=someone/frontend\n",
        "// syntax=someone/frontend\n",
        "# a comment\n\n# syntax=someone/frontend\n",  # past where Docker stops looking: refused anyway
    ],
)
def test_a_syntax_directive_is_refused(tmp_path: Path, head: str) -> None:
    found = violations(tmp_path, head + "FROM python\n", BuildPolicy())
    assert len(found) == 1 and "parser directives naming a frontend are not allowed" in found[0].reason


def test_a_json_syntax_document_is_refused(tmp_path: Path) -> None:
    found = reasons(tmp_path, '{"syntax": "someone/frontend"}', BuildPolicy())
    assert "JSON 'syntax' directive" in found


@pytest.mark.parametrize(
    "text",
    [
        "# escape=`\nFROM python\nADD h`ttp://198.51.100.7/x `\n    /x\nRUN echo \\\n",
        # Past a blank line the directive is a comment, and the escape stays a backslash.
        "\n# escape=`\nFROM python\nADD h\\ttp://198.51.100.7/x /x\n",
        "FROM python\nADD h\\ttp://198.51.100.7/x /x\n",
    ],
)
def test_add_sources_are_judged_under_either_escape_character(tmp_path: Path, text: str) -> None:
    found = violations(tmp_path, text, BuildPolicy())
    assert len(found) == 1 and "remote sources" in found[0].reason, found


def test_from_with_escape_characters_is_refused(tmp_path: Path) -> None:
    assert "depend on the escape directive" in reasons(tmp_path, "FROM pyth\\on\n", BuildPolicy())
    assert "ARG B's default cannot be resolved" in reasons(
        tmp_path, "ARG B=pyth`on\nFROM $B\n", BuildPolicy()
    )


def test_a_huge_a_binary_and_an_unparsable_dockerfile_are_refused(tmp_path: Path) -> None:
    big = "FROM python\n" + "RUN true\n" * 40_000
    assert "larger than 262144 bytes" in reasons(tmp_path, big, BuildPolicy())
    root = repo(tmp_path, "")
    (root / "Dockerfile").write_bytes(b"FROM python\nRUN echo \xff\xfe\n")
    assert "not valid UTF-8" in str(repo_violations(root, BuildPolicy())[0])
    assert "cannot be parsed: unterminated heredoc" in reasons(tmp_path, "FROM python\nRUN <<EOF\necho\n")
    assert "cannot be parsed" in reasons(tmp_path, "# only a comment\n")


def test_a_dockerfile_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "elsewhere").write_text("FROM python\n", encoding="utf-8")
    os.symlink(tmp_path / "elsewhere", root / "Dockerfile")
    assert "must be a regular file" in str(repo_violations(root, BuildPolicy())[0])


def test_every_violation_is_collected_and_named_with_its_line(tmp_path: Path) -> None:
    text = (
        "# syntax=someone/frontend\n"
        "FROM someone/base\n"
        "ADD http://127.0.0.1:9/x /x\n"
        "COPY --from=python /a /b\n"
        "RUN --mount=type=cache,target=/c true\n"
        "ONBUILD RUN true\n"
    )
    root = repo(tmp_path, text)
    with pytest.raises(DockerfileRefused) as info:
        check_repo_dockerfile(root, BuildPolicy())
    error = info.value
    assert isinstance(error, RepoInvalid) and isinstance(error, SubmissionRejected)  # never retried
    assert [r.split(":")[0] for r in error.reasons] == [f"line {n}" for n in range(1, 7)]
    assert "Dockerfile refused (6 violations)" in str(error)
    assert (
        "Dockerfile line 3: ADD http://127.0.0.1:9/x /x: remote sources are not allowed (the daemon "
        "fetches them on the host's network)"
    ) in str(error)


def test_miner_text_in_a_refusal_cannot_drive_a_terminal(tmp_path: Path) -> None:
    found = violations(tmp_path, "FROM python\nADD http://x/\x1b[2J\x07 /y\n", BuildPolicy())
    assert "\x1b" not in str(found[0]) and "\\x1b" in str(found[0])
    assert len(shown("A" * 500)) == 100


def test_the_pure_check_needs_no_files_for_files_it_does_not_read(tmp_path: Path) -> None:
    class NoFiles:
        def kind(self, path: str) -> tuple[str, bytes]:
            raise AssertionError(f"read {path}")

        def glob(self, pattern: str) -> list[str] | None:
            raise AssertionError(f"walked {pattern}")

    assert dockerfile_violations("FROM python\nCOPY . /app\nRUN true\n", BuildPolicy(), NoFiles()) == []


# ------------------------------------------------------------------------------------ matchers


def test_wildcards_match_like_go_filepath_match() -> None:
    assert match_component("*.tar", "a.tar") and not match_component("*.tar", "a.tar.gz")
    assert match_component("[a-c]?", "bz") and not match_component("[^a-c]?", "bz")
    assert match_component("\\*", "*") and not match_component("\\*", "x")
    assert not match_component("[", "[") and not match_component("a\\", "a")  # malformed: no match


def test_wildcard_matching_is_linear_on_pathological_patterns() -> None:
    pattern, name = "*a" * 40 + "b", "a" * 250
    started = time.monotonic()
    assert not match_component(pattern, name)
    assert time.monotonic() - started < 1.0


def test_archives_are_told_by_their_first_bytes() -> None:
    assert archive_kind(gzip.compress(b"x")) == "gzip"
    assert archive_kind(tar_bytes()[:512]) == "tar"
    old_style = bytearray(tar_bytes()[:512])
    old_style[257:265] = b"\0" * 8  # a v7 header: no magic, checksum only
    old_style[148:156] = b" " * 8
    old_style[148:155] = f"{sum(old_style):06o}\0".encode()
    assert archive_kind(bytes(old_style)) == "tar"
    assert archive_kind(b"BZh is how this note starts") is None
    assert archive_kind(b"\0" * 512) is None and archive_kind(b"plain text") is None


# ------------------------------------------------------------------------------------ after the build


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_AUDIT"])
def test_an_image_that_preloads_a_library_is_refused(name: str) -> None:
    attrs = {"Config": {"Env": ["PATH=/usr/bin", f"{name}=/tmp/x.so"]}}
    with pytest.raises(BuildFailed, match=f"sets {name}.*CVE-2025-23266"):
        check_image_config(attrs, "uid 3")
    check_image_config({"Config": {"Env": ["PATH=/usr/bin", "LD_LIBRARY_PATH=/opt/lib"]}})
    check_image_config({"Config": {}})


def test_runtime_environment_sets_the_gpus_and_empties_the_images_nvidia_variables() -> None:
    image_env = [
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_REQUIRE_CUDA=cuda>=12",
        "NVIDIA_MIG_CONFIG_DEVICES=all",
    ]
    env = runtime_environment([*image_env, "PATH=/bin", "CUDA_VERSION=12.4"], ("1", "3"))
    assert env == {
        "NVIDIA_VISIBLE_DEVICES": "1,3",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "NVIDIA_REQUIRE_CUDA": "",
        "NVIDIA_MIG_CONFIG_DEVICES": "",
    }
    assert runtime_environment([], ())["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_a_costly_wildcard_is_refused_quickly(tmp_path: Path) -> None:
    files = {f"d/{'a' * 200}{i}": b"plain" for i in range(1500)}
    pattern = "d/*" + "a" * 150 + "b"  # each star position retries the whole literal: slow by design
    started = time.monotonic()
    found = violations(tmp_path, f"FROM python\nADD {pattern} /x/\n", BuildPolicy(), files)
    assert time.monotonic() - started < 10
    assert len(found) == 1 and "too costly to check" in found[0].reason


def test_an_added_fifo_does_not_hang_the_check(tmp_path: Path) -> None:
    root = repo(tmp_path, "FROM python\nADD pipe /x\nADD p* /y\n")
    os.mkfifo(root / "pipe")
    assert repo_violations(root, BuildPolicy()) == []  # not an archive; the daemon refuses it itself
