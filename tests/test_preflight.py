"""``voice-validator preflight``: every chain check over the real bittensor Client on the in-memory
substrate (real runtime metadata), the machine checks on this machine, and the exit code."""

from __future__ import annotations

from pathlib import Path

import bittensor as bt
import pytest

from tests.runtime_metadata import published_runtime
from tests.substrate_fake import FakeSubstrate
from validator.chain.local import LocalChain
from validator.cli import main as cli_main
from validator.preflight import Item, Verdict, exit_code, gpu_item, preflight
from validator.settings import Settings, load_settings

NETUID = 7
MINER = "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX"


@pytest.fixture(autouse=True)
def _sdk_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token-symbols.json"))


@pytest.fixture
def hotkey(tmp_path: Path) -> str:
    wallet = bt.Wallet(name="validator", hotkey="default", path=str(tmp_path / "wallets"))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    return str(wallet.hotkey.ss58_address)


def bittensor_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "chain": "bittensor",
        "subtensor_network": "local",
        "netuid": NETUID,
        "wallet_name": "validator",
        "wallet_hotkey": "default",
        "wallet_path": str(tmp_path / "wallets"),
        "data_dir": tmp_path / "var",
        "subsets": ["openbookqa"],  # not judge-scored: the judge check is skipped
        "docker_host": f"unix://{tmp_path}/no-docker.sock",
        "health_timeout_s": 1.0,
        "chain_timeout_s": 2.0,
        "version_key": 5,
        **overrides,
    }
    return load_settings([], **values)


def by_name(items: list[Item]) -> dict[str, Item]:
    return {item.name: item for item in items}


async def test_a_ready_validator_passes_every_chain_check(tmp_path: Path, hotkey: str) -> None:
    fake = FakeSubstrate()
    fake.register(NETUID, hotkey, validator_permit=True, stake_tao=2000.0)
    fake.register(NETUID, MINER)
    subnet = fake.subnet(NETUID)
    subnet.weights_rate_limit, subnet.version_key, subnet.commit_reveal = 100, 9, True
    fake.stake_threshold_rao = 1000 * 10**9
    items = by_name(await preflight(bittensor_settings(tmp_path), substrate=fake))
    for name in ("wallet", "chain", "runtime storage", "hotkey registered", "validator permit", "stake"):
        assert items[name].verdict is Verdict.OK, items[name]
    assert hotkey in items["wallet"].detail
    assert "runtime spec 400" in items["chain"].detail
    assert items["hotkey registered"].detail.startswith("uid 0 on subnet 7")
    assert items["stake"].detail == "2000 (the subnet requires 1000 to set weights)"
    assert items["commit-reveal"].detail.startswith("on:")
    assert items["weights rate limit"].detail == "100 blocks; no weights set yet"
    assert items["version key"].detail == "ours 5, the subnet's minimum 9: weight sets carry 9"
    assert items["judge"].verdict is Verdict.SKIP
    assert items["docker"].verdict is Verdict.WARN and "no evaluation can run" in items["docker"].detail
    assert (
        items["free disk"].verdict in (Verdict.OK, Verdict.WARN) and "GiB free" in items["free disk"].detail
    )
    assert exit_code(list(items.values())) == 0, "warnings alone do not fail the preflight"


@pytest.mark.parametrize(
    ("case", "failing"),
    [
        ("old runtime", "runtime storage"),
        ("not registered", "hotkey registered"),
        ("no permit", "validator permit"),
        ("too little stake", "stake"),
    ],
)
async def test_each_thing_that_would_stop_weights_fails_the_preflight(
    tmp_path: Path, hotkey: str, case: str, failing: str
) -> None:
    fake = FakeSubstrate(runtime=published_runtime()) if case == "old runtime" else FakeSubstrate()
    if case != "not registered":
        fake.register(NETUID, hotkey, validator_permit=case != "no permit", stake_tao=10.0)
    fake.register(NETUID, MINER)
    if case == "too little stake":
        fake.stake_threshold_rao = 1000 * 10**9
    items = await preflight(bittensor_settings(tmp_path), substrate=fake)
    failed = [item for item in items if item.verdict is Verdict.FAIL]
    assert [item.name for item in failed] == [failing], [item.line() for item in items]
    assert exit_code(items) == 1
    if case == "old runtime":
        assert "SubtensorModule.SubnetEpochConsensus" in failed[0].detail
        assert "runtime spec 343" in by_name(items)["chain"].detail


async def test_an_unreachable_chain_and_a_missing_wallet_fail(tmp_path: Path, hotkey: str) -> None:
    fake = FakeSubstrate()
    fake.hang(1000)  # a half-dead websocket: every call hangs
    items = by_name(await preflight(bittensor_settings(tmp_path), substrate=fake))
    assert items["chain"].verdict is Verdict.FAIL and "not reachable" in items["chain"].detail
    items = by_name(
        await preflight(bittensor_settings(tmp_path, wallet_name="nobody"), substrate=FakeSubstrate())
    )
    assert items["wallet"].verdict is Verdict.FAIL and "does not exist" in items["wallet"].detail


async def test_without_nvidia_smi_the_gpu_check_says_so_and_skips(tmp_path: Path) -> None:
    settings = load_settings([], data_dir=tmp_path)
    item = await gpu_item_without_smi(settings)
    assert item.verdict is Verdict.SKIP and "nvidia-smi not found" in item.detail
    asked = load_settings([], data_dir=tmp_path, gpu_device_ids=["0"])
    item = await gpu_item_without_smi(asked)
    assert item.verdict is Verdict.WARN, "GPUs were asked for but none can be seen"


async def gpu_item_without_smi(settings: Settings) -> Item:
    """The GPU check on a machine without nvidia-smi (PATH emptied for the call)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", "")
        return await gpu_item(settings)


def test_the_command_prints_the_checklist_and_exits_1_on_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain_file = tmp_path / "chain.json"
    base = [
        "preflight",
        "--chain",
        "local",
        "--local-chain-file",
        str(chain_file),
        "--validator-hotkey",
        "5Val",
        "--netuid",
        "1",
        "--data-dir",
        str(tmp_path / "var"),
        "--subsets",
        '["openbookqa"]',
        "--docker-host",
        f"unix://{tmp_path}/no-docker.sock",
        "--health-timeout-s",
        "1",
    ]
    assert cli_main(base) == 1  # the chain file does not exist
    out = capsys.readouterr().out
    assert "[FAIL] chain:" in out and "does not exist" in out and "weights would not land" in out
    chain = LocalChain.create(chain_file, 1, validator_hotkey="5Val")
    chain.register(1, "5Val")
    assert cli_main(base) == 0
    out = capsys.readouterr().out
    assert "[  ok] hotkey registered: uid 0 on subnet 1" in out
    assert "[skip] wallet: local chain" in out and "preflight: ready to run" in out
    assert cli_main(base[:1] + base[3:]) == 2, "preflight without --chain refuses to guess"
    assert "--chain bittensor" in capsys.readouterr().err
