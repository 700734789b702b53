"""``chain`` subcommands: play miner (or chain) against the local file-backed chain.

The main CLI calls :func:`add_chain_commands` on its subparsers and then ``args.func(args)``, which
returns the exit code: 0 on success, 2 on any refusal (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from validator.chain.local import LocalChain, LocalChainError, WeightSet
from validator.chain.port import RawCommitment
from validator.commitments import (
    DEFAULT_COMPETITION,
    CommitmentError,
    format_commitment,
    submissions_from_chain,
)
from validator.table import render_table

CHAIN_FILE_ENV = "VOICE_VALIDATOR_LOCAL_CHAIN_FILE"
DEFAULT_CHAIN_FILE = Path("var/local-chain.json")
DEFAULT_NETUID = 1
EXIT_OK = 0
EXIT_ERROR = 2

Handler = Callable[[argparse.Namespace], int]


def _safe(text: str) -> str:
    """Commitments are attacker-written: escape anything that could mess up a terminal."""
    return text if text.isascii() and text.isprintable() else ascii(text)[1:-1]


def chain_file_from(args: argparse.Namespace) -> Path:
    """``--chain-file``, else ``$VOICE_VALIDATOR_LOCAL_CHAIN_FILE``, else ``./var/local-chain.json``."""
    if args.chain_file is not None:
        return Path(args.chain_file)
    from_env = os.environ.get(CHAIN_FILE_ENV)
    return Path(from_env) if from_env else DEFAULT_CHAIN_FILE


def _chain(args: argparse.Namespace, validator_hotkey: str = "") -> LocalChain:
    return LocalChain(chain_file_from(args), validator_hotkey)


def _guarded(handler: Handler) -> Handler:
    """Turn expected failures into one line on stderr and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (LocalChainError, CommitmentError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_ERROR

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


# ---- handlers --------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Create the chain file and subnet, or change its hyperparameters."""
    chain = _chain(args)
    chain.configure(args.netuid, weights_rate_limit=args.weights_rate_limit, max_uids=args.max_uids)
    snap = chain.snapshot(args.netuid)
    print(
        f"subnet {args.netuid} in {chain.path}: block {snap.block}, weights_rate_limit"
        f" {snap.weights_rate_limit}, max_uids {snap.max_uids}"
    )
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    """Register a hotkey."""
    neuron = _chain(args).register(args.netuid, args.hotkey)
    print(
        f"registered {neuron.hotkey} as uid {neuron.uid} on subnet {args.netuid}"
        f" at block {neuron.registered_block}"
    )
    return EXIT_OK


def cmd_deregister(args: argparse.Namespace) -> int:
    """Deregister a hotkey; its commitment stays on chain."""
    neuron = _chain(args).deregister(args.netuid, args.hotkey)
    print(f"deregistered {neuron.hotkey} (was uid {neuron.uid}) from subnet {args.netuid}")
    return EXIT_OK


def cmd_commit(args: argparse.Namespace) -> int:
    """Commit a well-formed repo@revision."""
    value = format_commitment(
        args.repo, args.revision, epoch=args.epoch, content_hash=args.hash, competition=args.competition
    )
    block = _chain(args).commit(args.netuid, args.hotkey, value)
    print(f"committed {value} for {args.hotkey} at block {block}")
    return EXIT_OK


def cmd_commit_raw(args: argparse.Namespace) -> int:
    """Commit any string, so malformed commitments can be tried against the validator."""
    block = _chain(args).commit(args.netuid, args.hotkey, args.value)
    print(f"committed raw value {_safe(args.value)} for {args.hotkey} at block {block}")
    return EXIT_OK


def cmd_advance(args: argparse.Namespace) -> int:
    """Produce empty blocks."""
    block = _chain(args).advance(args.blocks)
    print(f"block {block}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print block, neurons and commitments with how the validator would read each."""
    chain = _chain(args)
    snap = chain.snapshot(args.netuid)
    out: TextIO = sys.stdout
    state = "" if snap.exists else " (subnet not created yet)"
    print(f"chain file: {chain.path}", file=out)
    print(
        f"block {snap.block}, subnet {snap.netuid}{state}: {len(snap.neurons)} neurons,"
        f" weights_rate_limit {snap.weights_rate_limit}, max_uids {snap.max_uids}",
        file=out,
    )
    print("\nneurons", file=out)
    print(
        render_table(
            ("uid", "hotkey", "registered_block"),
            [(n.uid, _safe(n.hotkey), n.registered_block) for n in snap.neurons],
        ),
        file=out,
    )
    submissions, rejected = submissions_from_chain(snap.neurons, snap.commitments)
    status: dict[RawCommitment, str] = {c: f"rejected: {reason}" for c, reason in rejected}
    by_hotkey = {s.hotkey: s for s in submissions}
    uids = {n.hotkey: n.uid for n in snap.neurons}
    rows = []
    for commitment in snap.commitments:
        submission = by_hotkey.get(commitment.hotkey)
        if submission is not None and commitment not in status:
            note = f"ok: {submission.repo_id}@{submission.short_revision} ({submission.competition})"
        else:
            note = status.get(commitment, "rejected")
        uid = uids.get(commitment.hotkey, "-")
        rows.append((_safe(commitment.hotkey), uid, commitment.block, note, _safe(commitment.value)))
    print("\ncommitments", file=out)
    print(render_table(("hotkey", "uid", "block", "status", "value"), rows), file=out)
    return EXIT_OK


def _print_weight_set(weight_set: WeightSet, hotkeys: dict[int, str]) -> None:
    print(
        f"weights set by {_safe(weight_set.validator)} at block {weight_set.block}"
        f" (version_key {weight_set.version_key})"
    )
    rows = [
        (uid, _safe(hotkeys.get(uid, "-")), f"{weight:.6f}", weight_set.u16.get(uid, 0))
        for uid, weight in sorted(weight_set.weights.items())
    ]
    print(render_table(("uid", "hotkey", "weight", "u16"), rows))


def cmd_weights(args: argparse.Namespace) -> int:
    """Print the latest weight set (of one validator, or the newest of any)."""
    chain = _chain(args)
    if args.validator:
        weight_set = chain.latest_weight_set(args.netuid, args.validator)
    else:
        history = chain.weights_history(args.netuid)
        weight_set = history[-1] if history else None
    if weight_set is None:
        who = f"validator {args.validator}" if args.validator else "any validator"
        print(f"no weights set by {who} on subnet {args.netuid}")
        return EXIT_OK
    hotkeys = {n.uid: n.hotkey for n in chain.snapshot(args.netuid).neurons}
    _print_weight_set(weight_set, hotkeys)
    return EXIT_OK


# ---- parser ----------------------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def add_chain_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chain`` command and its subcommands to ``subparsers``.

    Each leaf parser sets ``func`` to a handler taking the parsed namespace and returning an exit code.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--chain-file",
        default=None,
        help=f"local chain state file (default: ${CHAIN_FILE_ENV}, else {DEFAULT_CHAIN_FILE})",
    )
    common.add_argument(
        "--netuid",
        type=_non_negative_int,
        default=DEFAULT_NETUID,
        help=f"subnet id (default {DEFAULT_NETUID})",
    )

    chain = subparsers.add_parser(
        "chain",
        help="play miner against the local file-backed chain",
        description="Inspect and change the local development chain (register, commit, advance, ...).",
    )
    commands = chain.add_subparsers(dest="chain_command", metavar="COMMAND", required=True)

    def leaf(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(func=_guarded(handler))
        return parser

    init = leaf("init", cmd_init, "create the chain file and subnet, or change its hyperparameters")
    init.add_argument(
        "--weights-rate-limit", type=_non_negative_int, default=None, help="blocks between weight sets"
    )
    init.add_argument("--max-uids", type=_non_negative_int, default=None, help="size of the subnet")

    register = leaf("register", cmd_register, "register a hotkey at the lowest free uid")
    register.add_argument("--hotkey", required=True)

    deregister = leaf("deregister", cmd_deregister, "free a hotkey's uid (its commitment stays on chain)")
    deregister.add_argument("--hotkey", required=True)

    commit = leaf("commit", cmd_commit, "commit a HuggingFace repo at an exact revision")
    commit.add_argument("--hotkey", required=True)
    commit.add_argument("--repo", required=True, help="namespace/name")
    commit.add_argument("--revision", required=True, help="full 40-character commit sha")
    commit.add_argument("--competition", default=DEFAULT_COMPETITION, help=f"default {DEFAULT_COMPETITION}")
    commit.add_argument("--epoch", type=_non_negative_int, default=0)
    commit.add_argument(
        "--hash",
        default=None,
        help="the hash field (default: the subnet tool's hash of repo, epoch, competition)",
    )

    commit_raw = leaf("commit-raw", cmd_commit_raw, "commit any string (to test malformed commitments)")
    commit_raw.add_argument("--hotkey", required=True)
    commit_raw.add_argument("--value", required=True)

    advance = leaf("advance", cmd_advance, "produce empty blocks")
    advance.add_argument("--blocks", type=_non_negative_int, default=1)

    leaf("show", cmd_show, "print block, neurons and commitments with their parse status")

    weights = leaf("weights", cmd_weights, "print the latest weight set")
    weights.add_argument("--validator", default=None, help="validator hotkey (default: the newest set)")
