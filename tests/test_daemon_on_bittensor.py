"""The daemon with the bittensor backend: the real bittensor 11 Client over the in-memory substrate,
real huggingface_hub downloads from a hub on 127.0.0.1, a real SQLite file, the in-process sandbox.
Commitments are read from chain storage and the weights leave as the SDK's extrinsic."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import bittensor as bt
import pytest
import structlog

from evaluation.localhub import LocalHub, publish
from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from tests.runtime_metadata import published_runtime
from tests.substrate_fake import FakeSubstrate
from validator.app import App, open_app
from validator.chain.bittensor_chain import BittensorChain
from validator.chain.facade import ChainFacade, nested_timeout
from validator.chain.port import Refusal
from validator.cli import show_status
from validator.commitments import format_commitment
from validator.demo import default_example_dir, prepare_repo
from validator.settings import load_settings
from validator.weight_reveal import RevealState

NETUID = 7
ALICE = "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX"
BOB = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"


@pytest.fixture(autouse=True)
def _sdk_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token-symbols.json"))


def make_adapter(tmp_path: Path, fake: FakeSubstrate) -> BittensorChain:
    """The real adapter over ``fake``, with a fresh unencrypted wallet under ``tmp_path``."""
    wallets = tmp_path / "wallets"
    wallet = bt.Wallet(name="validator", hotkey="default", path=str(wallets))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    return BittensorChain(
        network="local",
        chain_endpoint=None,
        wallet_name="validator",
        wallet_hotkey="default",
        wallet_path=str(wallets),
        call_timeout_s=5.0,
        substrate=fake,
    )


async def test_round_on_the_bittensor_backend(tmp_path: Path, voicebench_dir: Path) -> None:
    fake = FakeSubstrate()
    fake.subnet(NETUID).version_key = 250  # the subnet demands a newer weights version than ours
    adapter = make_adapter(tmp_path, fake)
    fake.register(NETUID, adapter.hotkey, validator_permit=True, stake_tao=1000.0)
    uid_alice = fake.register(NETUID, ALICE)
    uid_bob = fake.register(NETUID, BOB)

    async with LocalHub(tmp_path / "hub") as hub_url:
        for hotkey, repo_id, answer in ((ALICE, "alice/voice", "A"), (BOB, "bob/voice", "B")):
            src = prepare_repo(default_example_dir(), tmp_path / repo_id, hotkey, {"answer": answer})
            revision = publish(tmp_path / "hub", repo_id, src)
            fake.set_commitment(NETUID, hotkey, format_commitment(repo_id, revision))

        settings = load_settings(
            [],
            chain="bittensor",
            netuid=NETUID,
            data_dir=tmp_path / "var",
            hub_endpoint=hub_url,
            voicebench_dir=voicebench_dir,
            version_key=100,
            subsets=["openbookqa"],
            log_format="json",
        )
        benchmark = {"openbookqa": load_subset(voicebench_dir, "openbookqa")}
        facade = ChainFacade(adapter, timeout_s=5.0)
        async with open_app(settings, sandbox=InProcessSandbox(), chain=facade, benchmark=benchmark) as app:
            report = await app.service.sync_once()
            assert report.queued == 2
            while await app.service.evaluate_next():
                pass
            result = await app.service.set_weights_once()

    assert result is not None and result.success, result
    (extrinsic,) = [s for s in fake.submitted if s.function == "set_mechanism_weights"]
    assert extrinsic.signer == adapter.hotkey
    assert extrinsic.params["version_key"] == 250
    sent = dict(zip(extrinsic.params["dests"], extrinsic.params["weights"], strict=True))
    # Alice leads with 0.8, Bob has 0.2: in u16 the largest is 65535 and the rest scale with it.
    assert sent == {uid_alice: 65535, uid_bob: pytest.approx(65535 / 4, abs=1)}


async def test_block_watchdog_rebuilds_a_stalled_connection(tmp_path: Path) -> None:
    import asyncio

    from validator.service import watch_blocks

    fake = FakeSubstrate()
    facade = ChainFacade(make_adapter(tmp_path, fake), timeout_s=5.0)

    async def producing_blocks() -> None:
        while True:
            fake.advance()
            await asyncio.sleep(0.02)

    # Blocks keep coming: one connection for the whole time.
    producer = asyncio.create_task(producing_blocks())
    watchdog = asyncio.create_task(watch_blocks(facade, stall_s=0.3, poll_s=0.05))
    await asyncio.sleep(1.0)
    producer.cancel()
    assert fake.connects == 1
    # The chain stops moving (as behind a half-dead websocket): the watchdog reconnects.
    await asyncio.sleep(1.0)
    watchdog.cancel()
    assert fake.connects >= 2
    await facade.close()


# ---- the weight path on a real runtime's terms (issue 15, items 1 and 3) -----------------------------


@asynccontextmanager
async def evaluated_world(
    tmp_path: Path, voicebench_dir: Path, fake: FakeSubstrate, *, permit: bool = True, **overrides: object
) -> AsyncIterator[tuple[App, BittensorChain, dict[str, int]]]:
    """Alice and Bob committed and evaluated on ``fake``; the app is open, no weights set yet."""
    adapter = make_adapter(tmp_path, fake)
    fake.register(NETUID, adapter.hotkey, validator_permit=permit, stake_tao=1000.0)
    uids = {ALICE: fake.register(NETUID, ALICE), BOB: fake.register(NETUID, BOB)}
    async with LocalHub(tmp_path / "hub") as hub_url:
        for hotkey, repo_id, answer in ((ALICE, "alice/voice", "A"), (BOB, "bob/voice", "B")):
            src = prepare_repo(default_example_dir(), tmp_path / repo_id, hotkey, {"answer": answer})
            fake.set_commitment(
                NETUID, hotkey, format_commitment(repo_id, publish(tmp_path / "hub", repo_id, src))
            )
        values: dict[str, object] = {
            "chain": "bittensor",
            "netuid": NETUID,
            "data_dir": tmp_path / "var",
            "hub_endpoint": hub_url,
            "voicebench_dir": voicebench_dir,
            "subsets": ["openbookqa"],
            "log_format": "json",
            "weights_retry_backoff_s": 0.0,
            **overrides,
        }
        settings = load_settings([], **values)
        benchmark = {"openbookqa": load_subset(voicebench_dir, "openbookqa")}
        facade = ChainFacade(adapter, timeout_s=nested_timeout(adapter.deadline_s))
        async with open_app(settings, sandbox=InProcessSandbox(), chain=facade, benchmark=benchmark) as app:
            await app.service.sync_once()
            while await app.service.evaluate_next():
                pass
            yield app, adapter, uids


def status_of(app: App) -> str:
    out = io.StringIO()
    show_status(app.settings, out)
    return out.getvalue()


async def test_a_runtime_without_the_storage_the_sdk_needs_is_one_log_line_and_in_status(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    fake = FakeSubstrate(runtime=published_runtime())
    async with evaluated_world(tmp_path, voicebench_dir, fake) as (app, _, _):
        with structlog.testing.capture_logs() as logs:
            results = [await app.service.set_weights_once() for _ in range(3)]  # never raises
        for result in results:
            assert result is not None and (result.success, result.refusal) == (False, Refusal.RUNTIME)
        assert fake.submitted == [], "the chain is left untouched"
        blocked = [e for e in logs if e["event"] == "weights cannot land until the operator acts"]
        assert len(blocked) == 1 and "SubnetEpochConsensus" in blocked[0]["reason"]
        assert sum(1 for e in logs if e["log_level"] in ("error", "critical")) == 1
        assert len(fake.calls_of("submit")) == 0
        status = status_of(app)
        assert "weights BLOCKED (runtime)" in status and "SubtensorModule.SubnetEpochConsensus" in status
        assert app.metrics is not None
        assert app.metrics.weights_blocked._value.get() == 1


async def test_a_validator_without_a_permit_is_warned_at_start_and_shown_in_status(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    fake = FakeSubstrate()
    with structlog.testing.capture_logs() as logs:
        async with evaluated_world(tmp_path, voicebench_dir, fake, permit=False) as (app, adapter, _):
            await app.service.sync_once()  # a second sync says nothing new
            result = await app.service.set_weights_once()
            status = status_of(app)
    warnings = [e for e in logs if "holds no validator permit" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["hotkey"] == adapter.hotkey
    assert "NO VALIDATOR PERMIT (its weights would not count)" in status
    assert result is not None and result.refusal is Refusal.NO_PERMIT
    assert len(fake.calls_of("submit")) == 1, "a permit refusal is not retried"
    assert "weights BLOCKED (no_permit)" in status


async def test_a_lost_connection_rebuilds_the_client_and_the_set_is_retried(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    fake = FakeSubstrate()
    async with evaluated_world(tmp_path, voicebench_dir, fake) as (app, _, uids):
        connects = fake.connects
        fake.submit_error = ConnectionResetError("connection reset by peer")
        result = await app.service.set_weights_once()
        assert result is not None and result.success, result
        assert fake.connects == connects + 1, "the retry ran on a rebuilt client"
        (extrinsic,) = [s for s in fake.submitted if s.function == "set_mechanism_weights"]
        assert set(extrinsic.params["dests"]) == {uids[ALICE], uids[BOB]}
        assert "weights in force" in status_of(app)


async def test_commit_reveal_is_followed_until_the_weights_are_in_force(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    fake = FakeSubstrate()
    fake.subnet(NETUID).commit_reveal = True
    async with evaluated_world(tmp_path, voicebench_dir, fake) as (app, adapter, uids):
        assert app.metrics is not None
        result = await app.service.set_weights_once()
        assert result is not None and result.success and result.reveal_round is not None
        assert app.metrics.weights_reveal_pending._value.get() == 1
        assert app.metrics.weights_in_force._value.get() == 0
        assert "reveal pending" in status_of(app)
        assert await app.service.follow_reveal() is RevealState.PENDING  # the round is not stored yet
        # The chain stores the drand round and reveals what was committed.
        fake.drand_round = result.reveal_round
        recorded = app.store.last_weight_set()
        assert recorded is not None
        top = max(recorded.weights.values())
        fake.reveal(
            NETUID, adapter.hotkey, {uid: round(w / top * 65535) for uid, w in recorded.weights.items()}
        )
        assert await app.service.follow_reveal() is RevealState.IN_FORCE
        assert app.metrics.weights_in_force._value.get() == 1
        assert app.metrics.weights_reveal_pending._value.get() == 0
        assert "weights in force" in status_of(app)
        assert set(recorded.weights) == {uids[ALICE], uids[BOB]}


async def test_a_reveal_that_never_lands_is_reported_also_after_a_restart(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    fake = FakeSubstrate()
    fake.subnet(NETUID).commit_reveal = True
    async with evaluated_world(tmp_path, voicebench_dir, fake, weights_reveal_grace_blocks=10) as (app, _, _):
        result = await app.service.set_weights_once()
        assert result is not None and result.reveal_round is not None
        fake.drand_round = result.reveal_round + 5  # stored, but the weights never appear
        assert await app.service.follow_reveal() is RevealState.PENDING  # within the grace
        settings = app.settings
    # Restart: the pending reveal is followed by the new process.
    fake.advance(10)
    same_wallet = BittensorChain(
        "local", None, "validator", "default", str(tmp_path / "wallets"), call_timeout_s=5.0, substrate=fake
    )
    facade = ChainFacade(same_wallet, timeout_s=nested_timeout(same_wallet.deadline_s))
    async with open_app(settings, sandbox=InProcessSandbox(), chain=facade, benchmark={}) as app:
        with structlog.testing.capture_logs() as logs:
            assert await app.service.follow_reveal() is RevealState.NOT_REVEALED
        assert any(e["event"].startswith("committed weights were not revealed") for e in logs)
        assert app.metrics is not None and app.metrics.weights_in_force._value.get() == 0
        assert "NOT REVEALED" in status_of(app)
        assert await app.service.follow_reveal() is None  # reported once, then nothing is pending
