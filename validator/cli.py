"""The ``voice-validator`` command.

Subcommands take their own options first; every setting (see ``voice-validator settings``) can follow as
a ``--flag`` or come from its ``VOICE_VALIDATOR_*`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import structlog
from pydantic import ValidationError

from evaluation.errors import EvaluationError, SubmissionRejected
from evaluation.fetch import LocalDirSource
from evaluation.pipeline import Pipeline
from evaluation.prebuild import Verdict, prebuild_verdicts
from evaluation.sandbox.docker_sandbox import DockerSandbox
from evaluation.types import SampleResult, Submission
from evaluation.untrusted_text import for_log
from evaluation.voicebench.scoring import success_rate
from validator.app import (
    load_benchmark,
    make_chain,
    make_source,
    make_voice_scorer,
    open_app,
    open_judge,
    pipeline_config,
    prebuild_config,
    sandbox_config,
)
from validator.chain.cli import add_chain_commands
from validator.chain.port import ChainError
from validator.commitments import CommitmentError, format_commitment
from validator.demo import DEMO_SAMPLES_PER_SUBSET, DemoError, run_demo
from validator.health import health_checks
from validator.logging import configure_logging
from validator.preflight import exit_code as preflight_exit_code
from validator.preflight import preflight
from validator.progress_bar import TerminalProgress
from validator.settings import ENV_PREFIX, Settings, load_settings
from validator.store import Store, StoreError
from validator.table import render_table

log = structlog.get_logger(__name__)

LOCAL_REVISION = "0" * 40
CHAIN_COMMANDS = ("run", "commit", "preflight")
"""Commands that talk to a chain: each refuses to guess which one."""
CHAIN_HINT = (
    "pass --chain bittensor (a real subtensor) or --chain local (the file-backed development chain),"
    " or set VOICE_VALIDATOR_CHAIN"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (settings flags are parsed separately)."""
    parser = argparse.ArgumentParser(
        prog="voice-validator",
        description="Validator for the voice-model subnet. Settings: `voice-validator settings`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the validator daemon (what pm2 runs); needs --chain bittensor or local")
    add_preflight_command(sub)

    demo = sub.add_parser("demo", help="one whole round on a local chain, hub and Docker; prints the result")
    demo.add_argument("--example-dir", type=Path, help="example miner to use (default: docker/example_miner)")
    demo.add_argument(
        "--asr-llm-dir",
        type=Path,
        help="ASR + LLM example miner (default: var/asr-llm-miner, made by scripts/asr_llm_miner.sh)",
    )
    demo.add_argument(
        "--samples", type=int, default=DEMO_SAMPLES_PER_SUBSET, help="questions per VoiceBench subset"
    )
    demo.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")

    evaluate = sub.add_parser("evaluate", help="evaluate one miner repo, no chain needed (for miners)")
    where = evaluate.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo-dir", type=Path, help="a local folder holding the repo")
    where.add_argument("--repo", help="a hub repo id, with --revision")
    evaluate.add_argument("--revision", help="the exact 40-hex commit to evaluate (with --repo)")
    evaluate.add_argument("--hotkey", help="check hotkey.txt against this hotkey")
    evaluate.add_argument("--verbose", action="store_true", help="print every sample's answer")
    evaluate.add_argument(
        "--competition", help="competition id to evaluate for (default: the first of --competitions)"
    )

    check = sub.add_parser(
        "check", help="miners: every check made before a build, without Docker; exit 1 with the reasons"
    )
    check.add_argument("--repo-dir", type=Path, required=True, help="a local folder holding the repo")
    check.add_argument("--hotkey", help="check hotkey.txt against this hotkey")

    commit = sub.add_parser(
        "commit", help="miners: put repo@revision on chain in the subnet's format (wallet or local chain)"
    )
    commit.add_argument("--repo", required=True, help="HuggingFace repo id, namespace/name")
    commit.add_argument("--revision", required=True, help="the exact 40-hex commit to be evaluated")
    commit.add_argument("--epoch", type=int, default=0, help="epoch field of the commitment")
    commit.add_argument("--competition", help="competition id (default: the first of --competitions)")

    sub.add_parser(
        "status", help="miners, scores, last weights, evaluations under way, judge and Docker health"
    )
    settings = sub.add_parser(
        "settings", help="list every setting with its flag, environment variable, default"
    )
    settings.add_argument("--markdown", action="store_true", help="as a Markdown table (the README's)")
    add_chain_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "chain":
        if rest:
            print(f"error: unknown arguments {rest}", file=sys.stderr)
            return 2
        return int(args.func(args))
    if args.command == "settings":
        print(settings_table(markdown=args.markdown))
        return 0
    try:
        settings = load_settings(rest)
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command in CHAIN_COMMANDS and settings.chain is None:
        print(f"error: `{args.command}` needs an explicit chain: {CHAIN_HINT}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return asyncio.run(run_daemon(settings))
        if args.command == "preflight":
            return asyncio.run(run_preflight(settings, sys.stdout))
        if args.command == "demo":
            return asyncio.run(
                run_demo(
                    settings,
                    sys.stdout,
                    example_dir=args.example_dir,
                    asr_llm_dir=args.asr_llm_dir,
                    samples_per_subset=args.samples,
                    timeout_s=args.timeout,
                )
            )
        if args.command == "evaluate":
            return asyncio.run(evaluate_once(settings, args, sys.stdout))
        if args.command == "check":
            return check_repo_dir(settings, args.repo_dir, args.hotkey, sys.stdout)
        if args.command == "status":
            code = show_status(settings, sys.stdout)
            return max(code, asyncio.run(show_health(settings, sys.stdout)))
        if args.command == "commit":
            return asyncio.run(commit_submission(settings, args, sys.stdout))
    except (DemoError, EvaluationError, StoreError, ChainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


async def commit_submission(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Write this node's commitment (the wallet's hotkey, or ``validator-hotkey`` on the local chain)."""
    try:
        value = format_commitment(
            args.repo,
            args.revision,
            epoch=args.epoch,
            competition=args.competition or settings.competitions[0],
        )
    except CommitmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    chain = await make_chain(settings)
    try:
        block = await chain.commit_own(settings.netuid, value)
    finally:
        await chain.close()
    print(f"committed {value!r} on netuid {settings.netuid} at block {block}", file=out)
    return 0


async def run_daemon(settings: Settings) -> int:
    """Run the validator until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_app(settings) as app:
        await app.service.run(stop)
    return 0


def add_preflight_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``preflight`` subcommand: the checklist to run before pm2."""
    sub.add_parser(
        "preflight",
        help="check chain, wallet, registration, permit, stake, runtime, judge, Docker, GPUs and disk"
        " before starting the validator; exits 1 when weights would not land",
    )


async def run_preflight(settings: Settings, out: TextIO) -> int:
    """Print the preflight checklist; 1 when any check would stop weights from landing."""
    items = await preflight(settings)
    for item in items:
        print(item.line(), file=out)
    code = preflight_exit_code(items)
    verdict = "weights would not land: fix each FAIL above" if code else "ready to run"
    print(f"\npreflight: {verdict}", file=out)
    return code


class _PrintSink:
    def __init__(self, out: TextIO, verbose: bool) -> None:
        self._out = out
        self._verbose = verbose
        self.done = 0

    async def sample(self, result: SampleResult) -> None:
        self.done += 1
        if self._verbose:
            answer = result.error or result.response
            print(
                f"  {result.subset}/{result.item_id}: score {result.score:.2f}  {answer[:100]!r}",
                file=self._out,
                flush=True,
            )


async def evaluate_once(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Evaluate one repo exactly as the validator would, and print the scores."""
    if args.repo and not args.revision:
        print("error: --repo needs --revision (the exact commit you will put on chain)", file=sys.stderr)
        return 2
    source = (
        LocalDirSource(
            args.repo_dir, max_repo_bytes=settings.max_repo_bytes, max_files=settings.max_repo_files
        )
        if args.repo_dir
        else make_source(settings)
    )
    submission = Submission(
        uid=0,
        hotkey=args.hotkey or "",
        repo_id=args.repo or "local/" + args.repo_dir.resolve().name,
        revision=args.revision or LOCAL_REVISION,
        competition=args.competition or settings.competitions[0],
    )
    if submission.competition not in settings.competitions:
        print(f"error: competition {submission.competition!r} is not in --competitions", file=sys.stderr)
        return 2
    config = dataclasses.replace(pipeline_config(settings), check_hotkey=bool(args.hotkey))
    # The checks every repo passes before a build come first: a rejection needs no judge, no benchmark.
    try:
        checked = args.repo_dir or await source.fetch(submission, settings.repos_dir)
    except SubmissionRejected as exc:
        print(f"rejected: {type(exc).__name__}: {exc}", file=out)
        return 1
    verdicts = await asyncio.to_thread(prebuild_verdicts, checked, config.prebuild, args.hotkey)
    if any(v.status == "FAIL" for v in verdicts):
        print_verdicts(verdicts, out, failed_only=True)
        print("rejected before the build (see `voice-validator check`)", file=out)
        return 1
    sandbox = DockerSandbox(sandbox_config(settings))
    try:
        async with open_judge(settings) as judge:
            benchmark = await load_benchmark(settings)
            pipeline = Pipeline(
                source,
                sandbox,
                benchmark,
                config,
                settings.repos_dir,
                judge=judge,
                competitions=settings.competition_specs,
                voice=await make_voice_scorer(settings),
            )
            print(
                f"evaluating {submission.repo_id}@{submission.short_revision} on {pipeline.sample_count} "
                "samples",
                file=out,
                flush=True,
            )
            # Verbose answers go to stdout line by line; a bar redrawn in place would garble them.
            progress = TerminalProgress(sys.stderr, tty=False if args.verbose else None)
            result = await pipeline.evaluate(submission, _PrintSink(out, args.verbose), progress=progress)
    finally:
        await sandbox.close()
    if result.error:
        print(f"rejected: {for_log(result.error, keep_newlines=True)}", file=out)
        return 1
    rows = [
        (s.subset, s.score, s.samples, f"{100 * success_rate(s.samples, s.failures):.0f}%")
        for s in result.subsets
    ]
    print(render_table(("subset", "score", "samples", "answered"), rows), file=out)
    if result.details.get("task") == "v2v":
        shown = ("voicebench_score", "mos_score", "v2v_mean_consistency", "v2v_silent", "v2v_asr_model")
        for key in shown:
            print(f"{key}: {result.details.get(key, '')}", file=out)
    print(f"overall score: {result.score:.2f} / 100 in {result.duration_s:.1f}s", file=out)
    return 0


def print_verdicts(verdicts: Sequence[Verdict], out: TextIO, *, failed_only: bool = False) -> None:
    """One line per verdict."""
    for verdict in verdicts:
        if not failed_only or verdict.status == "FAIL":
            print(verdict.line(), file=out)


def check_repo_dir(settings: Settings, repo_dir: Path, hotkey: str | None, out: TextIO) -> int:
    """Every check the validator makes before a build, without Docker: 0 when the repo would be built."""
    verdicts = prebuild_verdicts(repo_dir, prebuild_config(settings), hotkey)
    print_verdicts(verdicts, out)
    failed = sum(1 for v in verdicts if v.status == "FAIL")
    if failed:
        print(
            f"refused: {failed} problem{'s' if failed != 1 else ''}; the validator would not build it",
            file=out,
        )
        return 1
    print("ok: the validator would build this repo", file=out)
    return 0


def show_status(settings: Settings, out: TextIO) -> int:
    """Print the miner table and the last weight set from the database."""
    if not settings.database_path.exists():
        print(f"no database at {settings.database_path}: the validator has not run here yet", file=out)
        return 1
    store = Store.open(settings.database_path)
    try:
        rows = [
            (r.uid, r.hotkey, f"{r.repo_id}@{r.revision[:8]}", r.status, r.score, (r.error or "")[:60])
            for r in store.miner_rows()
        ]
        print(render_table(("uid", "hotkey", "submission", "status", "score", "note"), rows), file=out)
        print(f"\nqueued or running: {store.pending_count()}", file=out)
        running = store.running_evaluations()
        planned = planned_samples(settings)
        for ev in running:
            of = f" of at most {planned}" if planned is not None else ""
            print(
                f"evaluating uid {ev.uid} {ev.repo_id}@{ev.revision[:8]}: {ev.samples_done}{of} samples done"
                f" ({ev.samples_failed} failed), for {time.time() - ev.started_at:.0f}s",
                file=out,
            )
        last = store.last_weight_set(successful_only=False)
        if last is None:
            print("weights: never set", file=out)
        else:
            state = "set" if last.success else f"refused ({last.message})"
            print(
                f"weights {state} at block {last.block}: "
                + ", ".join(f"uid {u}: {w:.4f}" for u, w in sorted(last.weights.items())),
                file=out,
            )
        for line in chain_fact_lines(store.facts()):
            print(line, file=out)
    finally:
        store.close()
    return 0


def chain_fact_lines(facts: dict[str, dict[str, object]]) -> list[str]:
    """What the daemon last learned about its own hotkey and weights, for the status command."""
    lines: list[str] = []
    me = facts.get("validator")
    if me is not None:
        if not me.get("registered"):
            lines.append(f"validator hotkey {me.get('hotkey')}: NOT REGISTERED on subnet {me.get('netuid')}")
        elif me.get("permit"):
            lines.append(f"validator hotkey {me.get('hotkey')}: uid {me.get('uid')}, validator permit held")
        else:
            lines.append(
                f"validator hotkey {me.get('hotkey')}: uid {me.get('uid')}, NO VALIDATOR PERMIT"
                " (its weights would not count)"
            )
    blocked = facts.get("weights_blocked")
    if blocked is not None:
        lines.append(f"weights BLOCKED ({blocked.get('kind')}): {blocked.get('message')}")
    state = facts.get("weights")
    if state is not None:
        if state.get("state") == "in_force":
            lines.append(f"weights in force (set at block {state.get('block')})")
        elif state.get("state") == "pending":
            lines.append(
                f"weights committed at block {state.get('commit_block')}, reveal pending (drand round"
                f" {state.get('reveal_round')}, chain at {state.get('revealed_round')})"
            )
        else:
            lines.append(
                f"weights committed at block {state.get('commit_block')} NOT REVEALED: drand round"
                f" {state.get('reveal_round')} stored since block {state.get('round_seen_block')}, the"
                " weights on chain are not the committed ones"
            )
    return lines


def planned_samples(settings: Settings) -> int | None:
    """Samples one evaluation sends under ``settings`` at most (None: every item of some subset).

    At most: a subset with fewer items than asked for sends them all. The exact count needs the loaded
    benchmark, which the status command does not load.
    """
    sizes = [settings.subset_samples.get(name, settings.samples_per_subset) for name in settings.subsets]
    return None if any(size is None for size in sizes) else sum(s for s in sizes if s is not None)


async def show_health(settings: Settings, out: TextIO) -> int:
    """Print the Docker daemon's and the judge's health; 1 when a needed one is down."""
    checks = await health_checks(settings)
    print("", file=out)
    for check in checks:
        print(check.line(), file=out)
    return 1 if any(check.ok is False for check in checks) else 0


def settings_table(*, markdown: bool = False) -> str:
    """Every setting as a table: flag, environment variable, default, description."""
    headers = ("flag", "environment variable", "default", "meaning")
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(
            (f"--{name.replace('_', '-')}", ENV_PREFIX + name.upper(), default, field.description or "")
        )
    if not markdown:
        return render_table(headers, rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += [f"| `{flag}` | `{env}` | `{default}` | {meaning} |" for flag, env, default, meaning in rows]
    return "\n".join(lines)
