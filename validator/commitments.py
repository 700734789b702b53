"""Parse and validate the subnet's on-chain commitment strings.

A miner commits ``namespace:name:epoch:hf_commit:hash:competition_id``. Everything here is pure: no I/O,
no logging. Chain values are hostile input (anyone registered can write any 128 bytes), so every field
is checked against a narrow grammar and every failure names its reason.

The committed ``hf_commit`` must be a full 40-hex commit id: it is the only revision the validator ever
fetches, which is what stops a miner from swapping the repo's contents after committing.

The ``hash`` field is not used here (content is pinned by the revision and copies are found by
fingerprints), but the subnet's existing validator keeps only the oldest model per hash, so what a miner
writes there matters to it. :func:`subnet_hash` computes the field the way the subnet's own upload tool
does, so two repos never share one; the parser accepts any hash that tool or the subnet's format allows
(a decimal number, letters and digits, base64 of a sha256), or none.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from evaluation.types import Submission
from validator.chain.port import Neuron, RawCommitment

MAX_COMMITMENT_BYTES = 128
"""The Commitments pallet's limit for one Raw field."""

DEFAULT_MAX_REPO_ID_LENGTH = 38
"""The existing subnet's limit on ``namespace/name``; it keeps the whole string under 128 bytes."""

MAX_REPO_PART_LENGTH = 96
"""HuggingFace's limit on each of namespace and name."""

MAX_EPOCH_DIGITS = 19
"""Keeps the epoch within a signed 64-bit integer, so it can be stored anywhere."""

MAX_HASH_LENGTH = 64
MAX_COMPETITION_LENGTH = 16
DEFAULT_COMPETITION = "v4"
"""The live subnet's competition (its validator scores only the competitions it schedules)."""

FIELD_COUNT = 6
LEGACY_FIELD_COUNT = 5
"""The subnet's format before competition ids; its validator reads such a commitment as a retired
competition, so it is scored nowhere."""

_REPO_PART = re.compile(r"[A-Za-z0-9_.-]+")
_REVISION = re.compile(r"[0-9a-f]{40}")
_HEX_ANY_CASE = re.compile(r"[0-9A-Fa-f]{40}")
_EPOCH = re.compile(r"[0-9]+")
# Letters and digits (the subnet tool's decimal number among them), or base64 with its padding.
_HASH = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_COMPETITION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Reason(StrEnum):
    """Why a commitment was rejected; stable codes the caller can count and log."""

    NOT_A_STRING = "not_a_string"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NON_ASCII = "non_ascii"
    CONTROL_CHARACTER = "control_character"
    WHITESPACE = "whitespace"
    FIELD_COUNT = "field_count"
    BAD_NAMESPACE = "bad_namespace"
    BAD_NAME = "bad_name"
    REPO_ID_TOO_LONG = "repo_id_too_long"
    BAD_EPOCH = "bad_epoch"
    BAD_REVISION = "bad_revision"
    BAD_HASH = "bad_hash"
    BAD_COMPETITION = "bad_competition"
    UNKNOWN_COMPETITION = "unknown_competition"
    # Reasons that come from the chain's state rather than the string itself.
    NOT_REGISTERED = "not_registered"
    STALE = "stale"
    DUPLICATE = "duplicate"


class CommitmentError(ValueError):
    """A commitment string that does not follow the subnet's format.

    ``reason`` is a stable code; ``str(error)`` is ``"<reason>: <detail>"`` for logs and people.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ParsedCommitment:
    """A well-formed commitment."""

    repo_id: str
    revision: str
    epoch: int
    content_hash: str
    competition: str

    @property
    def namespace(self) -> str:
        """The HuggingFace user or organisation."""
        return self.repo_id.split("/", 1)[0]

    @property
    def name(self) -> str:
        """The repository name inside the namespace."""
        return self.repo_id.split("/", 1)[1]


def _shown(value: str, limit: int = 48) -> str:
    """A safe, bounded rendering of hostile text for error messages (no control bytes, no 10 kB)."""
    text = ascii(value[:limit])
    return text + ("..." if len(value) > limit else "")


def _check_repo_part(part: str, what: str, reason: Reason) -> None:
    """HuggingFace's rules for one half of a repo id."""
    if not part:
        raise CommitmentError(reason, f"{what} is empty")
    if len(part) > MAX_REPO_PART_LENGTH:
        raise CommitmentError(reason, f"{what} is longer than {MAX_REPO_PART_LENGTH} characters")
    if not _REPO_PART.fullmatch(part):
        raise CommitmentError(reason, f"{what} {_shown(part)} may only use letters, digits, '-', '_' and '.'")
    if part[0] in "-." or part[-1] in "-.":
        raise CommitmentError(reason, f"{what} {_shown(part)} must not start or end with '-' or '.'")
    if "--" in part or ".." in part:
        raise CommitmentError(reason, f"{what} {_shown(part)} must not contain '--' or '..'")
    if part.lower().endswith(".git"):
        raise CommitmentError(reason, f"{what} {_shown(part)} must not end with '.git'")


def _check_repo_parts(namespace: str, name: str, max_repo_id_length: int) -> str:
    _check_repo_part(namespace, "namespace", Reason.BAD_NAMESPACE)
    _check_repo_part(name, "name", Reason.BAD_NAME)
    repo_id = f"{namespace}/{name}"
    if len(repo_id) > max_repo_id_length:
        raise CommitmentError(
            Reason.REPO_ID_TOO_LONG,
            f"repo id {_shown(repo_id)} has {len(repo_id)} characters, the limit is {max_repo_id_length}",
        )
    return repo_id


def validate_repo_id(repo_id: str, *, max_repo_id_length: int = DEFAULT_MAX_REPO_ID_LENGTH) -> None:
    """Check ``namespace/name`` against HuggingFace's rules and the subnet's length limit.

    Raises :class:`CommitmentError` (reason ``bad_namespace``, ``bad_name`` or ``repo_id_too_long``).
    """
    namespace, sep, name = repo_id.partition("/")
    if not sep:
        raise CommitmentError(Reason.BAD_NAMESPACE, f"repo id {_shown(repo_id)} is not 'namespace/name'")
    _check_repo_parts(namespace, name, max_repo_id_length)


def _check_revision(revision: str) -> None:
    if _REVISION.fullmatch(revision):
        return
    if _HEX_ANY_CASE.fullmatch(revision):
        detail = f"revision {_shown(revision)} must be lowercase hex"
    else:
        # Branch names and tags move; only a full commit id pins what gets evaluated.
        detail = f"revision {_shown(revision)} is not a 40-character commit id (branch names are refused)"
    raise CommitmentError(Reason.BAD_REVISION, detail)


def _check_epoch(epoch: str) -> int:
    if not _EPOCH.fullmatch(epoch) or len(epoch) > MAX_EPOCH_DIGITS:
        raise CommitmentError(
            Reason.BAD_EPOCH, f"epoch {_shown(epoch)} is not a non-negative integer of at most 19 digits"
        )
    return int(epoch)


def _check_hash(content_hash: str) -> None:
    if not _HASH.fullmatch(content_hash) or len(content_hash) > MAX_HASH_LENGTH:
        raise CommitmentError(
            Reason.BAD_HASH,
            f"hash {_shown(content_hash)} must be at most {MAX_HASH_LENGTH} letters, digits or base64"
            " ('+', '/', trailing '=')",
        )


def subnet_hash(repo_id: str, epoch: int, competition: str) -> str:
    """The ``hash`` field as the subnet's own upload tool fills it: the first 64 bits of the sha256 of
    ``"namespace name epoch competition_id"``, as a decimal number.

    Distinct repos (or epochs, or competitions) get distinct values, so a miner using this command
    never shares a hash with another miner, which the subnet's validator would treat as one model.
    """
    namespace, _, name = repo_id.partition("/")
    material = " ".join((namespace, name, str(epoch), competition)).encode("utf-8")
    return str(int(hashlib.sha256(material).hexdigest()[:16], 16))


def _check_competition(competition: str, allowed: frozenset[str] | None) -> None:
    if not _COMPETITION.fullmatch(competition) or len(competition) > MAX_COMPETITION_LENGTH:
        raise CommitmentError(
            Reason.BAD_COMPETITION,
            f"competition {_shown(competition)} must be 1-{MAX_COMPETITION_LENGTH} letters, digits,"
            " '-', '_' or '.'",
        )
    if allowed is not None and competition not in allowed:
        raise CommitmentError(
            Reason.UNKNOWN_COMPETITION,
            f"competition {_shown(competition)} is not one of {sorted(allowed)}",
        )


def _check_characters(value: str) -> None:
    """Printable ASCII only: no look-alike letters, no NUL or escape bytes, no stray whitespace."""
    for index, char in enumerate(value):
        code = ord(char)
        if code >= 0x80:
            raise CommitmentError(Reason.NON_ASCII, f"non-ASCII character {char!a} at position {index}")
        if char in " \t\n\r\v\f":
            raise CommitmentError(Reason.WHITESPACE, f"whitespace {char!a} at position {index}")
        if code < 0x20 or code == 0x7F:
            raise CommitmentError(Reason.CONTROL_CHARACTER, f"control character {char!a} at position {index}")


def parse_commitment(
    value: str,
    *,
    allowed_competitions: frozenset[str] | None = None,
    max_repo_id_length: int = DEFAULT_MAX_REPO_ID_LENGTH,
) -> ParsedCommitment:
    """Parse ``namespace:name:epoch:hf_commit:hash:competition_id``.

    ``allowed_competitions``: when given, any other competition id is rejected.
    Raises :class:`CommitmentError` whose ``reason`` names the first problem found.
    """
    if not isinstance(value, str):
        raise CommitmentError(Reason.NOT_A_STRING, f"expected a string, got {type(value).__name__}")
    if not value:
        raise CommitmentError(Reason.EMPTY, "the commitment is empty")
    # Checked on the raw length first so a huge value costs nothing more; surrogates cannot encode.
    if len(value) > MAX_COMMITMENT_BYTES:
        raise CommitmentError(
            Reason.TOO_LONG, f"{len(value)} characters, the limit is {MAX_COMMITMENT_BYTES} bytes"
        )
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > MAX_COMMITMENT_BYTES:
        raise CommitmentError(Reason.TOO_LONG, f"{size} bytes, the limit is {MAX_COMMITMENT_BYTES}")
    _check_characters(value)

    fields = value.split(":")
    if len(fields) == LEGACY_FIELD_COUNT:
        raise CommitmentError(
            Reason.FIELD_COUNT,
            "5 ':'-separated fields: the old form without a competition id, which the subnet's validator"
            " scores in no current competition; add ':<competition_id>'",
        )
    if len(fields) != FIELD_COUNT:
        raise CommitmentError(
            Reason.FIELD_COUNT,
            f"{len(fields)} ':'-separated fields, expected {FIELD_COUNT}"
            " (namespace:name:epoch:hf_commit:hash:competition_id)",
        )
    namespace, name, epoch_text, revision, content_hash, competition = fields
    repo_id = _check_repo_parts(namespace, name, max_repo_id_length)
    epoch = _check_epoch(epoch_text)
    _check_revision(revision)
    _check_hash(content_hash)
    _check_competition(competition, allowed_competitions)
    return ParsedCommitment(
        repo_id=repo_id,
        revision=revision,
        epoch=epoch,
        content_hash=content_hash,
        competition=competition,
    )


def format_commitment(
    repo_id: str,
    revision: str,
    *,
    epoch: int = 0,
    content_hash: str | None = None,
    competition: str = DEFAULT_COMPETITION,
    max_repo_id_length: int = DEFAULT_MAX_REPO_ID_LENGTH,
) -> str:
    """Build the commitment string for ``repo_id`` at ``revision``; the inverse of :func:`parse_commitment`.

    ``content_hash`` None: the subnet tool's value (:func:`subnet_hash`). The result is validated by
    parsing it back, so what this returns is always accepted. Raises :class:`CommitmentError` for any
    field the parser would refuse.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CommitmentError(Reason.BAD_EPOCH, f"epoch must be a non-negative integer, got {epoch!r}")
    if content_hash is None:
        content_hash = subnet_hash(repo_id, epoch, competition)
    # Validate each part before joining: a ':' inside any of them would otherwise shift the fields and
    # be reported as the wrong problem.
    for part in (repo_id, revision, content_hash, competition):
        _check_characters(part)
    validate_repo_id(repo_id, max_repo_id_length=max_repo_id_length)
    _check_epoch(str(epoch))
    _check_revision(revision)
    _check_hash(content_hash)
    _check_competition(competition, None)
    namespace, name = repo_id.split("/", 1)
    value = f"{namespace}:{name}:{epoch}:{revision}:{content_hash}:{competition}"
    parse_commitment(value, max_repo_id_length=max_repo_id_length)
    return value


def submissions_from_chain(
    neurons: Iterable[Neuron],
    commitments: Iterable[RawCommitment],
    *,
    allowed_competitions: frozenset[str] | None = None,
    max_repo_id_length: int = DEFAULT_MAX_REPO_ID_LENGTH,
) -> tuple[list[Submission], list[tuple[RawCommitment, str]]]:
    """Turn the chain's neurons and raw commitments into submissions.

    A commitment counts only if its hotkey is registered now and it was made at or after that
    registration's block: the chain keeps commitments of deregistered hotkeys, so a re-registered
    hotkey's old commitment must not be evaluated under its new uid.

    Returns ``(submissions sorted by uid, rejected)``; each rejected entry carries a reason string
    ``"<code>: <detail>"`` whose code is a :class:`Reason` value.
    """
    by_hotkey: dict[str, Neuron] = {n.hotkey: n for n in neurons}

    # The port promises one commitment per hotkey; if an adapter ever breaks that, keep the newest.
    latest: dict[str, RawCommitment] = {}
    rejected: list[tuple[RawCommitment, str]] = []
    for commitment in commitments:
        current = latest.get(commitment.hotkey)
        if current is None:
            latest[commitment.hotkey] = commitment
            continue
        older, newer = sorted((current, commitment), key=lambda c: c.block)
        latest[commitment.hotkey] = newer
        rejected.append(
            (older, f"{Reason.DUPLICATE.value}: superseded by the commitment at block {newer.block}")
        )

    submissions: list[Submission] = []
    for commitment in latest.values():
        neuron = by_hotkey.get(commitment.hotkey)
        if neuron is None:
            rejected.append((commitment, f"{Reason.NOT_REGISTERED.value}: hotkey is not registered"))
            continue
        if commitment.block < neuron.registered_block:
            rejected.append(
                (
                    commitment,
                    f"{Reason.STALE.value}: committed at block {commitment.block}, before the current"
                    f" registration at block {neuron.registered_block}",
                )
            )
            continue
        try:
            parsed = parse_commitment(
                commitment.value,
                allowed_competitions=allowed_competitions,
                max_repo_id_length=max_repo_id_length,
            )
        except CommitmentError as error:
            rejected.append((commitment, str(error)))
            continue
        submissions.append(
            Submission(
                uid=neuron.uid,
                hotkey=neuron.hotkey,
                repo_id=parsed.repo_id,
                revision=parsed.revision,
                competition=parsed.competition,
                block=commitment.block,
            )
        )
    submissions.sort(key=lambda s: s.uid)
    return submissions, rejected
