"""The bittensor 11 adapter: the real SDK ``Client`` over an in-memory substrate (no network)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import bittensor as bt
import pytest
import structlog
from bittensor._transport.errors import StorageFunctionNotFound

from tests.chain_contract import (
    ContractSetup,
    check_set_weights_not_registered,
    check_set_weights_rate_limited,
    run_chain_contract,
)
from tests.runtime_metadata import current_runtime, published_runtime
from tests.substrate_fake import FakeSubstrate
from validator.app import make_chain as app_make_chain
from validator.chain.bittensor_chain import (
    BittensorChain,
    ChainConnectionError,
    WalletNotFoundError,
    classify_chain_error,
    decode_commitment_fields,
)
from validator.chain.facade import ChainFacade, nested_timeout
from validator.chain.port import Hyperparameters, RawCommitment, Refusal
from validator.settings import Settings, load_settings

NETUID = 7
WALLET = "validator"
HOTKEY = "default"
M1 = "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX"
M2 = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"
GONE = "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y"
OTHER = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"
GOOD_VALUE = "alice:voice:0:" + "a" * 40 + ":0:v2"


@pytest.fixture(autouse=True)
def _sdk_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Client.connect caches token symbols on disk; keep that out of the real home directory.
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token-symbols.json"))


@pytest.fixture
def wallet_path(tmp_path: Path) -> Path:
    path = tmp_path / "wallets"
    wallet = bt.Wallet(name=WALLET, hotkey=HOTKEY, path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    return path


@pytest.fixture
def fake() -> FakeSubstrate:
    return FakeSubstrate()


def make_chain(fake: FakeSubstrate, wallet_path: Path, *, timeout_s: float = 5.0) -> BittensorChain:
    return BittensorChain(
        network="local",
        chain_endpoint=None,
        wallet_name=WALLET,
        wallet_hotkey=HOTKEY,
        wallet_path=str(wallet_path),
        call_timeout_s=timeout_s,
        substrate=fake,
    )


def populate(fake: FakeSubstrate, validator: str) -> None:
    fake.register(NETUID, validator, validator_permit=True, stake_tao=1000.0)
    fake.register(NETUID, M1)
    fake.register(NETUID, M2)
    fake.set_commitment(NETUID, M1, GOOD_VALUE)
    fake.set_commitment(NETUID, M2, "not even close")
    fake.set_commitment(NETUID, GONE, "old")  # never registered: commitments outlive registrations
    subnet = fake.subnet(NETUID)
    subnet.tempo = 99
    subnet.version_key = 3


# ---- the shared Chain contract ---------------------------------------------------------------------


async def test_bittensor_chain_passes_the_chain_contract(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    setup = ContractSetup(
        netuid=NETUID,
        registered=frozenset({chain.hotkey, M1, M2}),
        committed={M1: GOOD_VALUE, M2: "not even close", GONE: "old"},
        weights={1: 0.7, 2: 0.3},
        version_key=3,
        own_hotkey=chain.hotkey,
        hyperparameters=Hyperparameters(tempo=99, weights_rate_limit=0, commit_reveal=False, version_key=3),
    )
    await run_chain_contract(chain, setup)
    assert fake.connects == 1, "one long-lived client, not one per call"


async def test_bittensor_chain_passes_the_rate_limit_contract(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    fake.register(NETUID, chain.hotkey, validator_permit=True)
    fake.register(NETUID, M1)
    fake.subnet(NETUID).weights_rate_limit = 10
    setup = ContractSetup(netuid=NETUID, registered=frozenset({chain.hotkey, M1}), weights={1: 1.0})
    limited = await check_set_weights_rate_limited(chain, setup)
    assert limited.message.startswith("rate limited")
    assert len(fake.submitted) == 1, "the rate-limited set must not reach the chain"
    await chain.close()


async def test_bittensor_chain_passes_the_not_registered_contract(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path)
    fake.register(NETUID, M1)
    setup = ContractSetup(netuid=NETUID, registered=frozenset({M1}), weights={0: 1.0})
    result = await check_set_weights_not_registered(chain, setup)
    assert chain.hotkey in result.message
    assert fake.submitted == []
    await chain.close()


# ---- adapter specifics -----------------------------------------------------------------------------


async def test_neurons_carry_permit_stake_and_registration_block(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    validator, m1, _ = await chain.neurons(NETUID)
    assert (validator.uid, validator.hotkey, validator.validator_permit) == (0, chain.hotkey, True)
    assert validator.stake == pytest.approx(1000.0)
    assert validator.registered_block == 101
    assert (m1.uid, m1.hotkey, m1.validator_permit, m1.stake, m1.registered_block) == (1, M1, False, 0.0, 102)
    assert await chain.neurons(NETUID + 1) == []
    await chain.close()


async def test_set_weights_sends_set_mechanism_weights_in_u16(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    result = await chain.set_weights(NETUID, {1: 3.0, 2: 1.0}, version_key=42)
    assert result.success, result
    (sent,) = fake.submitted
    assert (sent.module, sent.function, sent.signer) == (
        "SubtensorModule",
        "set_mechanism_weights",
        chain.hotkey,
    )
    assert sent.params == {
        "netuid": NETUID,
        "mecid": 0,
        "dests": [1, 2],
        "weights": [65535, 21845],
        "version_key": 42,
    }
    assert result.block == sent.block
    assert await chain.current_weights(NETUID) == pytest.approx({1: 0.75, 2: 0.25}, abs=1e-4)
    await chain.close()


async def test_commit_reveal_path_is_taken_and_logged(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    fake.subnet(NETUID).commit_reveal = True
    assert (await chain.hyperparameters(NETUID)).commit_reveal is True
    with structlog.testing.capture_logs() as logs:
        result = await chain.set_weights(NETUID, {1: 1.0, 2: 1.0}, version_key=3)
    assert result.success, result
    assert "timelocked commit" in result.message
    (sent,) = fake.submitted
    assert (sent.module, sent.function) == ("SubtensorModule", "commit_timelocked_mechanism_weights")
    assert sent.params["netuid"] == NETUID and sent.params["reveal_round"] > 0
    assert sent.params["commit"], "the commit carries the encrypted weights"
    (event,) = [e for e in logs if e["event"] == "weights set"]
    assert (event["path"], event["reveal_round"]) == ("commit-reveal", sent.params["reveal_round"])
    await chain.close()


async def test_refused_vectors_never_reach_the_chain(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    for weights in ({}, {1: 0.0}, {1: -1.0}, {1: float("nan")}, {-1: 1.0}):
        result = await chain.set_weights(NETUID, weights, version_key=1)
        assert not result.success and result.message, weights
    assert fake.submitted == []
    await chain.close()


async def test_hung_call_times_out_and_the_next_call_reconnects(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path, timeout_s=0.3)
    assert await chain.block() == fake.block
    assert fake.connects == 1
    fake.hang(1)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out"):
        await chain.block()
    assert time.monotonic() - started < 0.3 + 0.5, "the deadline was not honoured"
    assert fake.closes == 1, "the dead client was closed"
    assert await chain.block() == fake.block
    assert (fake.connects, chain.clients_built) == (2, 2), "the next call must build a new client"
    assert await chain.block() == fake.block
    assert fake.connects == 2, "a healthy client is reused"
    await chain.close()


async def test_facade_retries_a_hung_read_on_a_fresh_client(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path, timeout_s=0.2)
    facade = ChainFacade(chain, timeout_s=1.0, retries=2, backoff_s=0.01)
    fake.register(NETUID, M1)
    await facade.block()
    fake.hang(1)
    assert [n.hotkey for n in await facade.neurons(NETUID)] == [M1]
    assert fake.connects == 2
    await facade.close()


async def test_connection_errors_drop_the_client(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    await chain.block()

    async def broken() -> int:
        raise bt.RpcConnectionError("socket closed")

    original = fake.block_number
    fake.block_number = broken  # type: ignore[method-assign]
    with pytest.raises(ChainConnectionError, match="socket closed"):
        await chain.block()
    fake.block_number = original  # type: ignore[method-assign]
    assert await chain.block() == fake.block
    assert fake.connects == 2
    await chain.close()


async def test_raw_fields_are_joined_and_other_variants_skipped(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path)
    fake.register(NETUID, M1)
    first, second = b"alice:voice:0:", ("a" * 40 + ":0:v2").encode()
    fake.set_commitment_fields(
        NETUID, M1, [{f"Raw{len(first)}": "0x" + first.hex()}, {f"Raw{len(second)}": "0x" + second.hex()}]
    )
    fake.set_commitment_fields(NETUID, M2, [{"BigRaw": "0x" + b"big".hex()}])
    fake.set_commitment_fields(NETUID, GONE, [{"Raw2": "0xfffe"}])  # not UTF-8
    fake.set_commitment_fields(NETUID, OTHER, ["ResetBondsFlag", {"Sha256": "0x" + "00" * 32}])
    found = await chain.commitments(NETUID)
    assert found == [RawCommitment(M1, GOOD_VALUE, fake.subnet(NETUID).commitments[M1]["block"])]
    await chain.close()


def test_decode_commitment_fields() -> None:
    assert decode_commitment_fields([{"Raw3": "0x616263"}, {"Raw1": "0x64"}]) == "abcd"
    assert decode_commitment_fields([]) is None
    assert decode_commitment_fields([{"BigRaw": "0x616263"}]) is None
    assert decode_commitment_fields([{"Raw3": "0xzz"}]) is None
    assert decode_commitment_fields(["None"]) is None
    assert decode_commitment_fields([{"Raw3": "0x616263", "Raw1": "0x64"}]) is None


async def test_commit_own_sends_one_raw_field(fake: FakeSubstrate, wallet_path: Path) -> None:
    chain = make_chain(fake, wallet_path)
    fake.register(NETUID, chain.hotkey)
    block = await chain.commit_own(NETUID, GOOD_VALUE)
    (sent,) = fake.submitted
    data = GOOD_VALUE.encode()
    assert (sent.module, sent.function, sent.signer) == ("Commitments", "set_commitment", chain.hotkey)
    assert sent.params == {"netuid": NETUID, "info": {"fields": [{f"Raw{len(data)}": "0x" + data.hex()}]}}
    assert block == sent.block
    with pytest.raises(Exception, match="128"):
        await chain.commit_own(NETUID, "x" * 129)
    await chain.close()


async def test_missing_wallet_names_the_path(fake: FakeSubstrate, tmp_path: Path) -> None:
    chain = make_chain(fake, tmp_path / "nowhere")
    expected = str(tmp_path / "nowhere" / WALLET / "hotkeys" / HOTKEY)
    with pytest.raises(WalletNotFoundError, match="does not exist") as caught:
        _ = chain.hotkey
    assert expected in str(caught.value)
    with pytest.raises(WalletNotFoundError):
        await chain.set_weights(NETUID, {0: 1.0}, version_key=1)


def test_constructor_checks_the_network_and_does_nothing_else(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="network"):
        BittensorChain("mainnet", None, WALLET, HOTKEY, str(tmp_path))
    with pytest.raises(ValueError, match="chain_endpoint"):
        BittensorChain("local", "http://127.0.0.1:9944", WALLET, HOTKEY, str(tmp_path))
    chain = BittensorChain("local", "ws://127.0.0.1:9944", WALLET, HOTKEY, str(tmp_path))
    assert chain.clients_built == 0
    asyncio.run(chain.close())


# ---- refusals by the SDK's error code (issue 15, item 1) ---------------------------------------------


def test_refusal_kinds_come_from_the_error_code_and_name_not_the_wording() -> None:
    cases = [
        (bt.ErrorCode.RATE_LIMITED, None, Refusal.RATE_LIMITED),
        (bt.ErrorCode.NOT_REGISTERED, "HotKeyNotRegisteredInSubNet", Refusal.NOT_REGISTERED),
        (bt.ErrorCode.NOT_AUTHORIZED, "NeuronNoValidatorPermit", Refusal.NO_PERMIT),
        (bt.ErrorCode.INSUFFICIENT_BALANCE, "NotEnoughStakeToSetWeights", Refusal.STAKE),
        (bt.ErrorCode.INSUFFICIENT_BALANCE, "StakeAmountTooLow", Refusal.STAKE),
        (bt.ErrorCode.INVALID_ARGUMENT, "IncorrectWeightVersionKey", Refusal.VERSION_KEY),
        (bt.ErrorCode.INVALID_ARGUMENT, "WeightVecLengthIsLow", Refusal.INVALID),
        (bt.ErrorCode.LIMIT_EXCEEDED, "TooManyPendingExtrinsics", Refusal.INVALID),
        (bt.ErrorCode.UNKNOWN, None, Refusal.TRANSIENT),
        (None, None, Refusal.TRANSIENT),
    ]
    for code, name, kind in cases:
        assert classify_chain_error(code, name) is kind, (code, name)


async def test_a_runtime_without_the_epoch_storage_is_named_and_the_chain_left_untouched(
    wallet_path: Path,
) -> None:
    fake = FakeSubstrate(runtime=published_runtime())
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    result = await chain.set_weights(NETUID, {1: 1.0}, version_key=3)
    assert (result.success, result.refusal) == (False, Refusal.RUNTIME)
    assert "SubtensorModule.SubnetEpochConsensus" in result.message and "spec 343" in result.message
    assert bt.__version__ in result.message
    assert fake.submitted == [], "nothing may reach the chain"
    info = await chain.runtime_info(NETUID)
    assert info.spec_version == 343
    assert set(info.missing_storage) == {
        "SubtensorModule.SubnetEpochConsensus",
        "SubtensorModule.LastEpochBlock",
        "SubtensorModule.PendingEpochAt",
        "SubtensorModule.SubnetEpochIndex",
    }
    # The reads the validator needs still work on that runtime.
    assert [n.hotkey for n in await chain.neurons(NETUID)] == [chain.hotkey, M1, M2]
    assert fake.connects == 1, "a runtime refusal is not a connection problem"
    await chain.close()


async def test_no_permit_stake_and_version_key_refusals_each_have_their_kind(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path)
    fake.register(NETUID, chain.hotkey, stake_tao=5.0)  # no validator permit
    fake.register(NETUID, M1)
    no_permit = await chain.set_weights(NETUID, {1: 1.0}, version_key=1)
    assert (no_permit.success, no_permit.refusal) == (False, Refusal.NO_PERMIT)
    assert "NeuronNoValidatorPermit" in no_permit.message and chain.hotkey in no_permit.message

    fake.subnet(NETUID).neurons[0].validator_permit = True
    fake.stake_threshold_rao = 10 * 10**9
    assert (await chain.hyperparameters(NETUID)).min_stake == pytest.approx(10.0)
    stake = await chain.set_weights(NETUID, {1: 1.0}, version_key=1)
    assert (stake.success, stake.refusal) == (False, Refusal.STAKE), stake
    assert "too little stake" in stake.message

    fake.stake_threshold_rao = 0
    fake.subnet(NETUID).version_key = 9
    old_key = await chain.set_weights(NETUID, {1: 1.0}, version_key=1)
    assert (old_key.success, old_key.refusal) == (False, Refusal.VERSION_KEY), old_key
    assert "IncorrectWeightVersionKey" in old_key.message
    assert (await chain.set_weights(NETUID, {1: 1.0}, version_key=9)).success
    await chain.close()


async def test_a_connection_lost_inside_execute_drops_the_client(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    fake.submit_error = ConnectionResetError("connection reset by peer")
    with pytest.raises(ChainConnectionError, match="lost the connection"):
        await chain.set_weights(NETUID, {1: 1.0}, version_key=3)
    assert fake.closes == 1, "the broken client was closed"
    assert (await chain.set_weights(NETUID, {1: 1.0}, version_key=3)).success
    assert fake.connects == 2, "the next call built a fresh client"
    # Through the facade the same loss is a result the weight setter acts on: rebuild and retry.
    facade = ChainFacade(chain, timeout_s=nested_timeout(chain.deadline_s))
    fake.advance(1)
    fake.submit_error = ConnectionResetError("connection reset by peer")
    result = await facade.set_weights(NETUID, {1: 1.0}, version_key=3)
    assert (result.success, result.refusal) == (False, Refusal.CONNECTION)
    await facade.close()


# ---- deadlines that nest (issue 15, item 2) -----------------------------------------------------------


async def test_with_the_production_deadlines_a_hung_connection_is_dropped_and_rebuilt(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    settings = load_settings(
        [],
        chain="bittensor",
        subtensor_network="local",
        wallet_name=WALLET,
        wallet_hotkey=HOTKEY,
        wallet_path=str(wallet_path),
    )
    assert settings.chain_timeout_s == Settings.model_fields["chain_timeout_s"].default
    facade = await app_make_chain(settings, substrate=fake)
    adapter = facade._chain
    assert isinstance(adapter, BittensorChain)
    assert facade.timeout_s > adapter.deadline_s > adapter.call_timeout_s == settings.chain_timeout_s
    fake.register(NETUID, M1)
    assert await facade.block() == fake.block
    fake.hang(1)
    started = time.monotonic()
    # The adapter gives up first (its deadline), drops the hung client, and the retry runs on a new one.
    assert [n.hotkey for n in await facade.neurons(NETUID)] == [M1]
    elapsed = time.monotonic() - started
    assert settings.chain_timeout_s <= elapsed < facade.timeout_s + 5, elapsed
    assert (fake.connects, fake.closes) == (2, 1)
    await facade.close()


# ---- the real codec (issue 15, item 6) ---------------------------------------------------------------


def test_the_fake_reads_and_writes_through_real_runtime_metadata() -> None:
    published, current = published_runtime(), current_runtime()
    assert (published.spec_version, published.is_v15) == (343, True)
    with pytest.raises(StorageFunctionNotFound):
        published.storage_entry("SubtensorModule", "SubnetEpochConsensus")
    entry = current.storage_entry("SubtensorModule", "SubnetEpochConsensus")
    assert current.decode(entry.value_type, entry.default_bytes) == "Yuma"
    assert current.decode(entry.value_type, b"\x01") == "Null"
    # Every item both runtimes share is byte-for-byte the same declaration.
    tempo = [r.storage_entry("SubtensorModule", "Tempo") for r in (published, current)]
    assert tempo[0] == tempo[1]


async def test_extrinsics_are_composed_signed_and_decoded_by_the_runtime(
    fake: FakeSubstrate, wallet_path: Path
) -> None:
    chain = make_chain(fake, wallet_path)
    populate(fake, chain.hotkey)
    composed = await fake.compose(
        bt.calls.SubtensorModule.set_mechanism_weights(
            netuid=NETUID, mecid=0, dests=[1], weights=[65535], version_key=3
        )
    )
    decoded = fake.runtime.decode_call(composed.data)
    assert (decoded["call_module"], decoded["call_function"]) == ("SubtensorModule", "set_mechanism_weights")
    with pytest.raises(ValueError, match="expected an integer"):  # a shape the runtime does not declare
        await fake.compose(
            bt.calls.SubtensorModule.set_mechanism_weights(
                netuid=NETUID, mecid=0, dests=["one"], weights=[1], version_key=3
            )
        )
    await chain.commit_own(NETUID, GOOD_VALUE)
    (sent,) = fake.submitted
    assert sent.signer == chain.hotkey  # recovered from the signed bytes, signature checked
    stored = dict(await fake.query_map("Commitments", "CommitmentOf", [NETUID]))
    assert set(stored) == {chain.hotkey, M1, M2, GONE}  # keys decoded back from the hashed storage keys
    assert stored[chain.hotkey]["info"]["fields"] == [
        {f"Raw{len(GOOD_VALUE)}": "0x" + GOOD_VALUE.encode().hex()}
    ]
    await chain.close()
