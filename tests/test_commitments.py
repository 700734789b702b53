"""Commitment parsing: the grammar, every rejection reason, hostile input, and chain filtering."""

from __future__ import annotations

import hashlib

import pytest

from evaluation.types import Submission
from validator.chain.port import Neuron, RawCommitment
from validator.commitments import (
    DEFAULT_MAX_REPO_ID_LENGTH,
    MAX_COMMITMENT_BYTES,
    CommitmentError,
    ParsedCommitment,
    Reason,
    format_commitment,
    parse_commitment,
    submissions_from_chain,
    subnet_hash,
    validate_repo_id,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "fedcba9876543210fedcba9876543210fedcba98"


def commitment(
    namespace: str = "alice",
    name: str = "voice",
    epoch: str = "0",
    revision: str = SHA,
    content_hash: str = "abc123",
    competition: str = "v2",
) -> str:
    return ":".join((namespace, name, epoch, revision, content_hash, competition))


VALID = [
    (commitment(), ParsedCommitment("alice/voice", SHA, 0, "abc123", "v2")),
    (
        commitment("Org_1", "model.v2-x", "12", SHA2, "DEADbeef99", "v4"),
        ParsedCommitment("Org_1/model.v2-x", SHA2, 12, "DEADbeef99", "v4"),
    ),
    (commitment("a", "b", epoch="007"), ParsedCommitment("a/b", SHA, 7, "abc123", "v2")),
    (commitment("_x", "y_"), ParsedCommitment("_x/y_", SHA, 0, "abc123", "v2")),
    # Exactly the subnet's repo id limit: 18 + 1 + 19 = 38 characters.
    (commitment("n" * 18, "m" * 19), ParsedCommitment("n" * 18 + "/" + "m" * 19, SHA, 0, "abc123", "v2")),
    (commitment(content_hash="f" * 64), ParsedCommitment("alice/voice", SHA, 0, "f" * 64, "v2")),
    (commitment(epoch="9" * 19), ParsedCommitment("alice/voice", SHA, int("9" * 19), "abc123", "v2")),
    (commitment(competition="v2.1_b-c"), ParsedCommitment("alice/voice", SHA, 0, "abc123", "v2.1_b-c")),
    # The hash forms the subnet's own format allows: its upload tool's decimal number, base64 of a
    # sha256 (44 characters with padding), none at all.
    (
        commitment(content_hash="12345678901234567890"),
        ParsedCommitment("alice/voice", SHA, 0, "12345678901234567890", "v2"),
    ),
    (
        commitment(content_hash="q83vEjRWeJA+/w=="),
        ParsedCommitment("alice/voice", SHA, 0, "q83vEjRWeJA+/w==", "v2"),
    ),
    (commitment(content_hash="A" * 43 + "="), ParsedCommitment("alice/voice", SHA, 0, "A" * 43 + "=", "v2")),
    (commitment(content_hash="ab/cd"), ParsedCommitment("alice/voice", SHA, 0, "ab/cd", "v2")),
    (commitment(content_hash=""), ParsedCommitment("alice/voice", SHA, 0, "", "v2")),
]


@pytest.mark.parametrize(("value", "expected"), VALID)
def test_valid_commitments_parse(value: str, expected: ParsedCommitment) -> None:
    assert parse_commitment(value) == expected


def test_parsed_commitment_parts() -> None:
    parsed = parse_commitment(commitment("Org_1", "model.v2-x"))
    assert (parsed.namespace, parsed.name) == ("Org_1", "model.v2-x")


REJECTED = [
    # size
    ("", Reason.EMPTY),
    ("a" * (MAX_COMMITMENT_BYTES + 1), Reason.TOO_LONG),
    ("x" * 10_000, Reason.TOO_LONG),
    (commitment() + ":" * 10_000, Reason.TOO_LONG),
    # 65 two-byte characters: few characters, too many bytes.
    ("\u00e9" * 65, Reason.TOO_LONG),
    # characters
    (commitment(namespace="\u0430lice"), Reason.NON_ASCII),  # Cyrillic a
    (commitment().replace(":", "\uff1a", 1), Reason.NON_ASCII),  # fullwidth colon
    (commitment(name="voi\u200bce"), Reason.NON_ASCII),  # zero-width space
    (commitment(revision=SHA[:-1] + "\u0663"), Reason.NON_ASCII),  # Arabic-Indic digit
    (commitment(name="voice\udc80"), Reason.NON_ASCII),  # lone surrogate
    ("\ufeff" + commitment(), Reason.NON_ASCII),  # byte order mark
    (commitment(name="voice\x00"), Reason.CONTROL_CHARACTER),
    ("\x00" * 40, Reason.CONTROL_CHARACTER),
    (commitment(name="\x1b[31mvoice"), Reason.CONTROL_CHARACTER),
    (commitment(name="voice\x7f"), Reason.CONTROL_CHARACTER),
    (commitment() + "\n", Reason.WHITESPACE),
    (" " + commitment(), Reason.WHITESPACE),
    (commitment(name="my voice"), Reason.WHITESPACE),
    (commitment(name="my\tvoice"), Reason.WHITESPACE),
    # structure
    ("alice/voice@" + SHA, Reason.FIELD_COUNT),
    (commitment() + ":", Reason.FIELD_COUNT),
    (commitment() + ":extra", Reason.FIELD_COUNT),
    (commitment(name="voice:evil"), Reason.FIELD_COUNT),
    (":".join(["alice", "voice", "0", SHA, "abc"]), Reason.FIELD_COUNT),
    (":" * 5, Reason.BAD_NAMESPACE),
    # namespace
    (commitment(namespace=""), Reason.BAD_NAMESPACE),
    (commitment(namespace="-alice"), Reason.BAD_NAMESPACE),
    (commitment(namespace="alice."), Reason.BAD_NAMESPACE),
    (commitment(namespace="al..ice"), Reason.BAD_NAMESPACE),
    (commitment(namespace="al--ice"), Reason.BAD_NAMESPACE),
    (commitment(namespace="al/ice"), Reason.BAD_NAMESPACE),
    (commitment(namespace=".."), Reason.BAD_NAMESPACE),
    (commitment(namespace="al!ce"), Reason.BAD_NAMESPACE),
    # name
    (commitment(name=""), Reason.BAD_NAME),
    (commitment(name=".."), Reason.BAD_NAME),
    (commitment(name="../../etc"), Reason.BAD_NAME),
    (commitment(name="voice-"), Reason.BAD_NAME),
    (commitment(name=".voice"), Reason.BAD_NAME),
    (commitment(name="vo..ice"), Reason.BAD_NAME),
    (commitment(name="vo--ice"), Reason.BAD_NAME),
    (commitment(name="voice.git"), Reason.BAD_NAME),
    (commitment(name="voice/extra"), Reason.BAD_NAME),
    (commitment(name="voice@main"), Reason.BAD_NAME),
    # repo id length: 39 characters
    (commitment("n" * 19, "m" * 19), Reason.REPO_ID_TOO_LONG),
    # epoch
    (commitment(epoch=""), Reason.BAD_EPOCH),
    (commitment(epoch="-1"), Reason.BAD_EPOCH),
    (commitment(epoch="+1"), Reason.BAD_EPOCH),
    (commitment(epoch="1.5"), Reason.BAD_EPOCH),
    (commitment(epoch="0x10"), Reason.BAD_EPOCH),
    (commitment(epoch="1" * 20), Reason.BAD_EPOCH),
    # revision
    (commitment(revision="main"), Reason.BAD_REVISION),
    (commitment(revision="HEAD"), Reason.BAD_REVISION),
    (commitment(revision="refs-pr-1"), Reason.BAD_REVISION),
    (commitment(revision=SHA[:39]), Reason.BAD_REVISION),
    (commitment(revision=SHA + "0"), Reason.BAD_REVISION),
    (commitment(revision=SHA[:7]), Reason.BAD_REVISION),
    (commitment(revision=SHA.upper()), Reason.BAD_REVISION),
    (commitment(revision="g" * 40), Reason.BAD_REVISION),
    (commitment(revision=""), Reason.BAD_REVISION),
    # hash
    (commitment(content_hash="ab-cd"), Reason.BAD_HASH),
    (commitment(content_hash="f" * 65), Reason.BAD_HASH),
    (commitment(content_hash="ab=cd"), Reason.BAD_HASH),
    (commitment(content_hash="abc==="), Reason.BAD_HASH),
    # competition
    (commitment(competition=""), Reason.BAD_COMPETITION),
    (commitment(competition="-v2"), Reason.BAD_COMPETITION),
    (commitment(competition="v2!"), Reason.BAD_COMPETITION),
    (commitment(competition="v" * 17), Reason.BAD_COMPETITION),
]


@pytest.mark.parametrize(("value", "reason"), REJECTED)
def test_rejections_name_their_reason(value: str, reason: Reason) -> None:
    with pytest.raises(CommitmentError) as caught:
        parse_commitment(value)
    assert caught.value.reason is reason
    message = str(caught.value)
    assert message.startswith(f"{reason.value}: ")
    # Messages go to logs: bounded and free of the control characters they complain about.
    assert len(message) < 300
    assert message.isascii() and message.isprintable()


def test_not_a_string_is_rejected() -> None:
    with pytest.raises(CommitmentError) as caught:
        parse_commitment(b"alice:voice")  # type: ignore[arg-type]
    assert caught.value.reason is Reason.NOT_A_STRING


def test_commitment_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad_revision"):
        parse_commitment(commitment(revision="main"))


def test_allowed_competitions() -> None:
    allowed = frozenset({"v2", "v4"})
    assert parse_commitment(commitment(competition="v4"), allowed_competitions=allowed).competition == "v4"
    with pytest.raises(CommitmentError) as caught:
        parse_commitment(commitment(competition="v3"), allowed_competitions=allowed)
    assert caught.value.reason is Reason.UNKNOWN_COMPETITION
    # Comparison is exact: a look-alike in case is another competition.
    with pytest.raises(CommitmentError):
        parse_commitment(commitment(competition="V2"), allowed_competitions=allowed)


def test_repo_id_limit_is_a_parameter() -> None:
    long_value = commitment("n" * 30, "m" * 30)
    with pytest.raises(CommitmentError) as caught:
        parse_commitment(long_value)
    assert caught.value.reason is Reason.REPO_ID_TOO_LONG
    assert parse_commitment(long_value, max_repo_id_length=61).repo_id == "n" * 30 + "/" + "m" * 30


@pytest.mark.parametrize(
    ("repo_id", "reason"),
    [
        ("voice", Reason.BAD_NAMESPACE),
        ("a/" + "b" * 97, Reason.BAD_NAME),
        ("a" * 97 + "/b", Reason.BAD_NAMESPACE),
        ("a/b/c", Reason.BAD_NAME),
        ("a" * 30 + "/" + "b" * 30, Reason.REPO_ID_TOO_LONG),
    ],
)
def test_validate_repo_id(repo_id: str, reason: Reason) -> None:
    with pytest.raises(CommitmentError) as caught:
        validate_repo_id(repo_id, max_repo_id_length=1000 if reason is not Reason.REPO_ID_TOO_LONG else 38)
    assert caught.value.reason is reason


def test_validate_repo_id_accepts_96_character_parts() -> None:
    validate_repo_id("a" * 96 + "/" + "b" * 96, max_repo_id_length=193)


@pytest.mark.parametrize(
    ("repo_id", "revision", "kwargs"),
    [
        ("alice/voice", SHA, {}),
        ("Org_1/model.v2-x", SHA2, {"epoch": 42, "content_hash": "cafe", "competition": "v4"}),
        ("n" * 18 + "/" + "m" * 19, SHA, {"content_hash": "a" * 40}),
    ],
)
def test_format_then_parse_round_trips(repo_id: str, revision: str, kwargs: dict[str, object]) -> None:
    value = format_commitment(repo_id, revision, **kwargs)  # type: ignore[arg-type]
    assert len(value.encode()) <= MAX_COMMITMENT_BYTES
    parsed = parse_commitment(value)
    assert (parsed.repo_id, parsed.revision) == (repo_id, revision)
    assert parsed.epoch == kwargs.get("epoch", 0)
    assert parsed.competition == kwargs.get("competition", "v4")
    assert (
        format_commitment(
            parsed.repo_id,
            parsed.revision,
            epoch=parsed.epoch,
            content_hash=parsed.content_hash,
            competition=parsed.competition,
        )
        == value
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        (("alice:x/voice", SHA), {}, Reason.BAD_NAMESPACE),
        (("alice/voice", "main"), {}, Reason.BAD_REVISION),
        (("alice/voice", SHA), {"epoch": -1}, Reason.BAD_EPOCH),
        (("alice/voice", SHA), {"epoch": True}, Reason.BAD_EPOCH),
        (("alice/voice", SHA), {"content_hash": "a:b"}, Reason.BAD_HASH),
        (("alice/voice", SHA), {"competition": "v2:x"}, Reason.BAD_COMPETITION),
        (("alice/voice", SHA + "\n"), {}, Reason.WHITESPACE),
        (("alice/vo\u0456ce", SHA), {}, Reason.NON_ASCII),
        (("alice", SHA), {}, Reason.BAD_NAMESPACE),
        (("n" * 19 + "/" + "m" * 19, SHA), {}, Reason.REPO_ID_TOO_LONG),
        # Every field at its own maximum overflows 128 bytes in total.
        (("n" * 18 + "/" + "m" * 19, SHA), {"content_hash": "f" * 64, "epoch": 10**18}, Reason.TOO_LONG),
    ],
)
def test_format_commitment_rejects(args: tuple[str, str], kwargs: dict[str, object], reason: Reason) -> None:
    with pytest.raises(CommitmentError) as caught:
        format_commitment(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason is reason


# ---- submissions_from_chain ------------------------------------------------------------------------


def value_for(repo: str, revision: str = SHA, competition: str = "v2") -> str:
    return format_commitment(repo, revision, competition=competition)


def reason_code(reason: str) -> Reason:
    return Reason(reason.split(":", 1)[0])


def test_submissions_take_uid_from_the_neuron_and_sort_by_uid() -> None:
    neurons = [Neuron(5, "hk-b", 10), Neuron(2, "hk-a", 3)]
    commitments = [
        RawCommitment("hk-b", value_for("bob/voice"), 12),
        RawCommitment("hk-a", value_for("alice/voice", SHA2, "v4"), 4),
    ]
    submissions, rejected = submissions_from_chain(neurons, commitments)
    assert rejected == []
    assert submissions == [
        Submission(uid=2, hotkey="hk-a", repo_id="alice/voice", revision=SHA2, competition="v4", block=4),
        Submission(uid=5, hotkey="hk-b", repo_id="bob/voice", revision=SHA, competition="v2", block=12),
    ]


def test_stale_commitment_after_reregistration_is_ignored() -> None:
    # hk-a committed at block 5, was deregistered, and registered again at block 20 under another uid.
    neurons = [Neuron(7, "hk-a", 20)]
    stale = RawCommitment("hk-a", value_for("alice/voice"), 5)
    submissions, rejected = submissions_from_chain(neurons, [stale])
    assert submissions == []
    assert [(c, reason_code(r)) for c, r in rejected] == [(stale, Reason.STALE)]
    assert "block 5" in rejected[0][1] and "block 20" in rejected[0][1]


def test_commitment_in_the_registration_block_counts() -> None:
    neurons = [Neuron(7, "hk-a", 20)]
    submissions, rejected = submissions_from_chain(neurons, [RawCommitment("hk-a", value_for("a/b"), 20)])
    assert [s.uid for s in submissions] == [7] and rejected == []


def test_recommit_after_reregistration_is_accepted() -> None:
    neurons = [Neuron(7, "hk-a", 20)]
    fresh = RawCommitment("hk-a", value_for("alice/voice", SHA2), 21)
    submissions, _ = submissions_from_chain(neurons, [fresh])
    assert submissions[0].revision == SHA2 and submissions[0].block == 21


def test_unregistered_hotkeys_are_rejected() -> None:
    orphan = RawCommitment("gone", value_for("alice/voice"), 3)
    submissions, rejected = submissions_from_chain([Neuron(0, "other", 1)], [orphan])
    assert submissions == []
    assert [(c, reason_code(r)) for c, r in rejected] == [(orphan, Reason.NOT_REGISTERED)]


def test_malformed_entries_are_rejected_with_the_parse_reason() -> None:
    neurons = [Neuron(0, "a", 1), Neuron(1, "b", 1), Neuron(2, "c", 1), Neuron(3, "d", 1)]
    commitments = [
        RawCommitment("a", "alice/voice@main", 2),
        RawCommitment("b", commitment(revision="main"), 2),
        RawCommitment("c", "\x00" * 5000, 2),
        RawCommitment("d", value_for("dave/voice"), 2),
    ]
    submissions, rejected = submissions_from_chain(neurons, commitments)
    assert [s.hotkey for s in submissions] == ["d"]
    assert {c.hotkey: reason_code(r) for c, r in rejected} == {
        "a": Reason.FIELD_COUNT,
        "b": Reason.BAD_REVISION,
        "c": Reason.TOO_LONG,
    }


def test_parse_options_pass_through() -> None:
    neurons = [Neuron(0, "a", 1), Neuron(1, "b", 1)]
    commitments = [
        RawCommitment("a", value_for("alice/voice", competition="v2"), 2),
        RawCommitment("b", value_for("bob/voice", competition="v3"), 2),
    ]
    submissions, rejected = submissions_from_chain(
        neurons, commitments, allowed_competitions=frozenset({"v2"})
    )
    assert [s.hotkey for s in submissions] == ["a"]
    assert [reason_code(r) for _, r in rejected] == [Reason.UNKNOWN_COMPETITION]
    long_repo = RawCommitment("a", commitment("n" * 30, "m" * 30), 2)
    submissions, _ = submissions_from_chain(neurons[:1], [long_repo], max_repo_id_length=61)
    assert len(submissions) == 1
    _, rejected = submissions_from_chain(neurons[:1], [long_repo])
    assert reason_code(rejected[0][1]) is Reason.REPO_ID_TOO_LONG


def test_duplicate_commitments_keep_the_newest() -> None:
    older = RawCommitment("a", value_for("alice/voice", SHA), 2)
    newer = RawCommitment("a", value_for("alice/voice", SHA2), 9)
    submissions, rejected = submissions_from_chain([Neuron(0, "a", 1)], [newer, older])
    assert [s.revision for s in submissions] == [SHA2]
    assert [(c, reason_code(r)) for c, r in rejected] == [(older, Reason.DUPLICATE)]


def test_every_rejection_reason_starts_with_a_known_code() -> None:
    neurons = [Neuron(0, "a", 10)]
    commitments = [
        RawCommitment("a", "junk", 11),
        RawCommitment("x", "junk", 11),
        RawCommitment("a", "junk", 3),
    ]
    _, rejected = submissions_from_chain(neurons, commitments)
    assert len(rejected) == 3
    for _, reason in rejected:
        reason_code(reason)  # raises ValueError on an unknown code


def test_nothing_on_chain() -> None:
    assert submissions_from_chain([], []) == ([], [])


def test_default_repo_id_limit_matches_the_subnet() -> None:
    assert DEFAULT_MAX_REPO_ID_LENGTH == 38


# ---- the live subnet's format ----------------------------------------------------------------------


def test_the_default_competition_is_the_live_subnets() -> None:
    assert parse_commitment(format_commitment("alice/voice", SHA)).competition == "v4"


def test_the_hash_field_is_what_the_subnets_upload_tool_writes() -> None:
    # The tool hashes "namespace name epoch competition_id" with sha256 and keeps the first 64 bits,
    # written as a decimal number.
    expected = str(int(hashlib.sha256(b"alice voice 0 v4").hexdigest()[:16], 16))
    assert subnet_hash("alice/voice", 0, "v4") == expected
    value = format_commitment("alice/voice", SHA)
    assert value == f"alice:voice:0:{SHA}:{expected}:v4"
    assert parse_commitment(value).content_hash == expected


def test_two_miners_never_share_a_hash() -> None:
    hashes = {
        subnet_hash(repo, epoch, competition)
        for repo in ("alice/voice", "bob/voice", "alice/voice2")
        for epoch in (0, 1)
        for competition in ("v4", "v5")
    }
    assert len(hashes) == 12


def test_the_old_five_field_form_is_refused_with_its_reason() -> None:
    with pytest.raises(CommitmentError) as caught:
        parse_commitment(":".join(["alice", "voice", "0", SHA, "123"]))
    assert caught.value.reason is Reason.FIELD_COUNT
    assert "without a competition id" in str(caught.value)
