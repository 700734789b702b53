"""The daemon with the bittensor backend: the real bittensor 11 Client over the in-memory substrate,
real huggingface_hub downloads from a hub on 127.0.0.1, a real SQLite file, the in-process sandbox.
Commitments are read from chain storage and the weights leave as the SDK's extrinsic."""

from __future__ import annotations

from pathlib import Path

import bittensor as bt
import pytest

from evaluation.localhub import LocalHub, publish
from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from tests.substrate_fake import FakeSubstrate
from validator.app import open_app
from validator.chain.bittensor_chain import BittensorChain
from validator.chain.facade import ChainFacade
from validator.commitments import format_commitment
from validator.demo import default_example_dir, prepare_repo
from validator.settings import load_settings

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
