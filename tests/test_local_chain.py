"""The local file-backed chain, on real temp files and real concurrent processes."""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.chain_contract import (
    ContractSetup,
    check_set_weights_not_registered,
    check_set_weights_rate_limited,
    run_chain_contract,
)
from validator.chain.local import (
    MAX_COMMITMENT_BYTES,
    ChainFileMissingError,
    CorruptChainFileError,
    LocalChain,
    LocalChainError,
)
from validator.chain.port import Hyperparameters, Neuron, RawCommitment

REPO_ROOT = Path(__file__).resolve().parents[1]
NETUID = 1
VALIDATOR = "validator-hk"


@pytest.fixture
def chain_path(tmp_path: Path) -> Path:
    return tmp_path / "chain" / "local-chain.json"


@pytest.fixture
def chain(chain_path: Path) -> LocalChain:
    chain = LocalChain(chain_path, VALIDATOR)
    chain.ensure_file()
    return chain


def test_an_empty_chain_file_reads_as_empty(chain: LocalChain) -> None:
    snapshot = chain.snapshot(NETUID)
    assert (snapshot.block, snapshot.neurons, snapshot.commitments, snapshot.exists) == (0, [], [], False)
    assert asyncio.run(chain.block()) == 0
    assert chain.weights(NETUID) == ({}, None)
    chain.ensure_file()  # an existing file is left as it is
    assert chain.snapshot(NETUID).block == 0


def test_a_missing_chain_file_is_an_error_not_an_empty_chain(chain_path: Path) -> None:
    chain = LocalChain(chain_path, VALIDATOR)
    reads = [
        lambda: chain.snapshot(NETUID),
        lambda: chain.weights(NETUID),
        lambda: asyncio.run(chain.block()),
        lambda: asyncio.run(chain.neurons(NETUID)),
        lambda: asyncio.run(chain.commitments(NETUID)),
    ]
    writes = [
        lambda: chain.register(NETUID, "m1"),
        lambda: chain.commit(NETUID, "m1", "x"),
        lambda: chain.advance(1),
        lambda: chain.set_weights_sync(NETUID, {0: 1.0}, 1),
    ]
    for call in reads + writes:
        with pytest.raises(ChainFileMissingError, match="does not exist") as caught:
            call()
        assert str(chain_path) in str(caught.value) and "chain init" in str(caught.value)
    assert not chain_path.exists() and not chain.lock_path.exists(), "a refused call left files behind"
    chain.configure(NETUID)  # `chain init` creates it
    assert chain.snapshot(NETUID).exists


def test_create_sets_hyperparameters_once(chain_path: Path) -> None:
    chain = LocalChain.create(
        chain_path, NETUID, validator_hotkey=VALIDATOR, weights_rate_limit=5, max_uids=4
    )
    assert chain.path.exists()
    snapshot = chain.snapshot(NETUID)
    assert (snapshot.exists, snapshot.weights_rate_limit, snapshot.max_uids) == (True, 5, 4)
    LocalChain.create(chain_path, NETUID, weights_rate_limit=0)  # exist_ok: left as it is
    assert chain.snapshot(NETUID).weights_rate_limit == 5
    with pytest.raises(LocalChainError, match="already exists"):
        LocalChain.create(chain_path, NETUID, exist_ok=False)
    chain.configure(NETUID, weights_rate_limit=2)
    assert chain.snapshot(NETUID).weights_rate_limit == 2


def _n(uid: int, hotkey: str, block: int) -> Neuron:
    """A local-chain neuron: no stake there, so every registered hotkey holds a permit."""
    return Neuron(uid, hotkey, block, validator_permit=True)


def test_register_uses_lowest_free_uid_and_new_blocks(chain: LocalChain) -> None:
    assert chain.register(NETUID, "a") == _n(0, "a", 1)
    assert chain.register(NETUID, "b") == _n(1, "b", 2)
    assert chain.register(NETUID, "c") == _n(2, "c", 3)
    chain.deregister(NETUID, "b")  # block 4
    assert chain.register(NETUID, "d") == _n(1, "d", 5)
    assert asyncio.run(chain.neurons(NETUID)) == [_n(0, "a", 1), _n(1, "d", 5), _n(2, "c", 3)]


def test_reregistration_gets_a_new_registered_block(chain: LocalChain) -> None:
    first = chain.register(NETUID, "a")
    chain.deregister(NETUID, "a")
    chain.advance(10)
    again = chain.register(NETUID, "a")
    assert again.registered_block > first.registered_block
    assert again.registered_block == asyncio.run(chain.block())


def test_register_refusals_change_nothing(chain: LocalChain) -> None:
    chain.configure(NETUID, max_uids=2)
    chain.register(NETUID, "a")
    block = chain.snapshot(NETUID).block
    with pytest.raises(LocalChainError, match="already registered"):
        chain.register(NETUID, "a")
    chain.register(NETUID, "b")
    with pytest.raises(LocalChainError, match="full"):
        chain.register(NETUID, "c")
    with pytest.raises(LocalChainError, match="hotkey"):
        chain.register(NETUID, "")
    with pytest.raises(LocalChainError, match="not registered"):
        chain.deregister(NETUID, "zzz")
    assert chain.snapshot(NETUID).block == block + 1  # only b's registration


def test_subnets_are_separate_but_share_the_block(chain: LocalChain) -> None:
    chain.register(1, "a")
    chain.register(2, "a")
    assert [n.uid for n in asyncio.run(chain.neurons(1))] == [0]
    assert asyncio.run(chain.neurons(2)) == [_n(0, "a", 2)]
    assert asyncio.run(chain.neurons(3)) == []
    with pytest.raises(LocalChainError, match="netuid"):
        chain.snapshot(-1)


def test_commit_and_read_back(chain: LocalChain) -> None:
    chain.register(NETUID, "a")
    block = chain.commit(NETUID, "a", "first")
    assert block == 2
    assert chain.commit(NETUID, "a", "second") == 3
    assert asyncio.run(chain.commitments(NETUID)) == [RawCommitment("a", "second", 3)]


def test_commit_refuses_unregistered_hotkeys(chain: LocalChain) -> None:
    with pytest.raises(LocalChainError, match="not registered"):
        chain.commit(NETUID, "nobody", "x")
    assert asyncio.run(chain.commitments(NETUID)) == []


def test_commit_enforces_128_bytes_of_utf8(chain: LocalChain) -> None:
    chain.register(NETUID, "a")
    chain.commit(NETUID, "a", "x" * MAX_COMMITMENT_BYTES)
    chain.commit(NETUID, "a", "\u00e9" * 64)  # 128 bytes in 64 characters
    for too_big in ("x" * (MAX_COMMITMENT_BYTES + 1), "\u00e9" * 65, "x" * 10_000):
        with pytest.raises(LocalChainError, match="at most 128"):
            chain.commit(NETUID, "a", too_big)
    with pytest.raises(LocalChainError, match="UTF-8"):
        chain.commit(NETUID, "a", "bad\udc80")
    assert asyncio.run(chain.commitments(NETUID))[0].value == "\u00e9" * 64


def test_malformed_values_are_stored_verbatim(chain: LocalChain) -> None:
    chain.register(NETUID, "a")
    hostile = 'x\x00y\x1b[2J"\\\n\u202e'
    chain.commit(NETUID, "a", hostile)
    assert asyncio.run(chain.commitments(NETUID))[0].value == hostile
    # ensure_ascii keeps the file itself plain ASCII whatever miners commit.
    assert chain.path.read_bytes().isascii()


def test_deregistration_keeps_the_commitment(chain: LocalChain) -> None:
    chain.register(NETUID, "a")
    chain.commit(NETUID, "a", "value")
    chain.deregister(NETUID, "a")
    assert asyncio.run(chain.neurons(NETUID)) == []
    assert asyncio.run(chain.commitments(NETUID)) == [RawCommitment("a", "value", 2)]


def test_advance(chain: LocalChain) -> None:
    assert chain.advance() == 1
    assert chain.advance(5) == 6
    assert chain.advance(0) == 6
    with pytest.raises(LocalChainError):
        chain.advance(-1)
    assert asyncio.run(chain.block()) == 6


async def test_set_weights_normalises_and_records(chain: LocalChain) -> None:
    for hotkey in (VALIDATOR, "m1", "m2", "m3"):
        chain.register(NETUID, hotkey)
    result = await chain.set_weights(NETUID, {1: 3.0, 2: 1.0, 3: 0.0}, version_key=7)
    assert result.success and result.block == 5
    assert await chain.block() == 5
    weights, block = chain.weights(NETUID)
    assert block == 5
    assert weights == {1: 0.75, 2: 0.25}
    assert math.isclose(sum(weights.values()), 1.0)
    latest = chain.latest_weight_set(NETUID, VALIDATOR)
    assert latest is not None
    assert (latest.version_key, latest.u16) == (7, {1: 65535, 2: 21845})
    await chain.set_weights(NETUID, {3: 1.0}, version_key=7)
    assert chain.weights(NETUID) == ({3: 1.0}, 6)
    assert [ws.block for ws in chain.weights_history(NETUID)] == [5, 6]
    assert chain.weights_history(NETUID, "someone-else") == []


async def test_set_weights_accepts_numpy_scalars(chain: LocalChain) -> None:
    chain.register(NETUID, VALIDATOR)
    chain.register(NETUID, "m1")
    result = await chain.set_weights(NETUID, {np.int64(1): np.float32(0.5)}, version_key=1)  # type: ignore[dict-item]
    assert result.success, result
    assert chain.weights(NETUID)[0] == {1: 1.0}


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        ({}, "no weights"),
        ({1: 0.0, 2: 0}, "all weights are zero"),
        ({1: -1.0, 2: 2.0}, "negative"),
        ({1: math.nan}, "not a finite"),
        ({1: math.inf}, "not a finite"),
        ({1: "1"}, "not a finite"),
        ({-1: 1.0}, "invalid uid"),
        ({9: 1.0}, "not registered"),
    ],
)
async def test_set_weights_refusals_are_results(
    chain: LocalChain, weights: dict[int, float], fragment: str
) -> None:
    chain.register(NETUID, VALIDATOR)
    chain.register(NETUID, "m1")
    chain.register(NETUID, "m2")
    result = await chain.set_weights(NETUID, weights, version_key=1)
    assert result.success is False
    assert fragment in result.message
    assert result.block == 3 == await chain.block()  # a refused extrinsic makes no block
    assert chain.weights(NETUID) == ({}, None)


async def test_set_weights_needs_a_registered_validator(chain_path: Path) -> None:
    admin = LocalChain(chain_path, "")
    admin.ensure_file()
    admin.register(NETUID, "m1")
    result = await admin.set_weights(NETUID, {0: 1.0}, version_key=1)
    assert not result.success and "not registered" in result.message
    other = LocalChain(chain_path, VALIDATOR)
    result = await other.set_weights(NETUID, {0: 1.0}, version_key=1)
    assert not result.success and VALIDATOR in result.message
    result = await other.set_weights(42, {0: 1.0}, version_key=1)
    assert not result.success and "does not exist" in result.message


async def test_rate_limit(chain: LocalChain) -> None:
    chain.configure(NETUID, weights_rate_limit=3)
    chain.register(NETUID, VALIDATOR)
    chain.register(NETUID, "m1")
    first = await chain.set_weights(NETUID, {1: 1.0}, version_key=1)
    assert first.success and first.block == 3
    limited = await chain.set_weights(NETUID, {1: 1.0}, version_key=1)
    assert not limited.success
    assert limited.message.startswith("rate limited")
    assert "block 6" in limited.message
    chain.advance()  # block 4: a set would land at block 5, still too soon
    assert not (await chain.set_weights(NETUID, {1: 1.0}, version_key=1)).success
    chain.advance()  # block 5: lands at 6 = 3 + 3
    again = await chain.set_weights(NETUID, {1: 1.0}, version_key=1)
    assert again.success and again.block == 6
    assert [ws.block for ws in chain.weights_history(NETUID)] == [3, 6]


async def test_rate_limit_is_per_validator(chain_path: Path) -> None:
    chain_a = LocalChain(chain_path, "val-a")
    chain_a.ensure_file()
    chain_b = LocalChain(chain_path, "val-b")
    chain_a.configure(NETUID, weights_rate_limit=100)
    chain_a.register(NETUID, "val-a")
    chain_a.register(NETUID, "val-b")
    assert (await chain_a.set_weights(NETUID, {0: 1.0}, 1)).success
    assert (await chain_b.set_weights(NETUID, {1: 1.0}, 1)).success
    assert chain_a.weights(NETUID) == ({0: 1.0}, 3)
    assert chain_a.weights(NETUID, "val-b") == ({1: 1.0}, 4)


def test_writes_are_atomic_and_leave_no_temp_files(chain: LocalChain) -> None:
    chain.register(NETUID, "a")
    for n in range(20):
        chain.commit(NETUID, "a", f"v{n}")
    names = sorted(p.name for p in chain.path.parent.iterdir())
    assert names == ["local-chain.json", "local-chain.json.lock"]
    assert json.loads(chain.path.read_text())["block"] == 21


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "is not valid JSON (line 1, column 2"),
        ("", "is not valid JSON"),
        ("[1, 2]", "is not a local chain file"),
        ('{"format": "something-else"}', "is not a local chain file"),
        ('{"format": "voice-validator-local-chain", "version": 99}', "format version 99"),
        ('{"format": "voice-validator-local-chain", "version": 1, "block": 1}', "unexpected shape"),
        (
            '{"format": "voice-validator-local-chain", "version": 1, "block": 1,'
            ' "subnets": {"x": {"weights_rate_limit": 0}}}',
            "unexpected shape",
        ),
    ],
)
async def test_corrupt_file_gives_a_clear_error(chain: LocalChain, content: str, fragment: str) -> None:
    chain.path.write_text(content)
    with pytest.raises(CorruptChainFileError, match=r"local-chain\.json") as caught:
        await chain.neurons(NETUID)
    assert fragment in str(caught.value)
    with pytest.raises(CorruptChainFileError):
        chain.register(NETUID, "a")
    # The refused write left the broken file for a person to inspect.
    assert chain.path.read_text() == content


def test_binary_garbage_gives_a_clear_error(chain: LocalChain) -> None:
    chain.path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptChainFileError, match="not UTF-8"):
        chain.snapshot(NETUID)


def test_lock_wait_has_a_deadline(chain_path: Path) -> None:
    chain = LocalChain(chain_path, VALIDATOR, lock_timeout_s=0.2)
    chain.ensure_file()
    chain.advance()
    with open(chain.lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LocalChainError, match="timed out"):
            chain.advance()
        with pytest.raises(LocalChainError, match="timed out"):
            chain.snapshot(NETUID)
    assert chain.advance() == 2


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from validator.chain.local import LocalChain

    path, tag, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    chain = LocalChain(path, "")
    for n in range(count):
        chain.register(1, f"{tag}-{n}")
        chain.commit(1, f"{tag}-{n}", f"{tag}:{n}")
        chain.advance()
    """
)


def test_concurrent_processes_lose_no_update(chain: LocalChain) -> None:
    count = 40
    tags = ["p0", "p1", "p2"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(chain.path), tag, str(count)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in tags
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    snapshot = chain.snapshot(NETUID)
    assert snapshot.block == 3 * count * len(tags)
    assert len(snapshot.neurons) == count * len(tags)
    assert sorted(n.uid for n in snapshot.neurons) == list(range(count * len(tags)))
    assert {c.hotkey: c.value for c in snapshot.commitments} == {
        f"{tag}-{n}": f"{tag}:{n}" for tag in tags for n in range(count)
    }
    # Every extrinsic got its own block.
    blocks = [n.registered_block for n in snapshot.neurons] + [c.block for c in snapshot.commitments]
    assert len(set(blocks)) == len(blocks)


async def test_concurrent_threads_lose_no_update(chain: LocalChain) -> None:
    chain.register(NETUID, VALIDATOR)
    advances = [asyncio.to_thread(chain.advance) for _ in range(30)]
    weight_sets = [chain.set_weights(NETUID, {0: 1.0}, 1) for _ in range(10)]
    reads = [chain.block() for _ in range(10)]
    _, results, _ = await asyncio.gather(
        asyncio.gather(*advances), asyncio.gather(*weight_sets), asyncio.gather(*reads)
    )
    assert all(r.success for r in results)
    assert await chain.block() == 1 + 30 + 10
    assert len(chain.weights_history(NETUID)) == 10


# ---- the shared Chain contract ---------------------------------------------------------------------


async def test_local_chain_passes_the_chain_contract(chain_path: Path) -> None:
    chain = LocalChain(chain_path, VALIDATOR)
    chain.ensure_file()
    for hotkey in (VALIDATOR, "m1", "m2", "gone"):
        chain.register(NETUID, hotkey)
    chain.commit(NETUID, "m1", "alice:voice:0:" + "a" * 40 + ":0:v2")
    chain.commit(NETUID, "m2", "not even close")
    chain.commit(NETUID, "gone", "old")
    chain.deregister(NETUID, "gone")
    setup = ContractSetup(
        netuid=NETUID,
        registered=frozenset({VALIDATOR, "m1", "m2"}),
        committed={"m1": "alice:voice:0:" + "a" * 40 + ":0:v2", "m2": "not even close", "gone": "old"},
        weights={1: 0.7, 2: 0.3},
        own_hotkey=VALIDATOR,
        hyperparameters=Hyperparameters(tempo=360, weights_rate_limit=0, commit_reveal=False, version_key=0),
    )
    await run_chain_contract(chain, setup)


async def test_local_chain_passes_the_rate_limit_contract(chain_path: Path) -> None:
    chain = LocalChain.create(chain_path, NETUID, validator_hotkey=VALIDATOR, weights_rate_limit=10)
    chain.register(NETUID, VALIDATOR)
    chain.register(NETUID, "m1")
    setup = ContractSetup(netuid=NETUID, registered=frozenset({VALIDATOR, "m1"}), weights={1: 1.0})
    await check_set_weights_rate_limited(chain, setup)


async def test_local_chain_passes_the_not_registered_contract(chain_path: Path) -> None:
    admin = LocalChain(chain_path, "")
    admin.ensure_file()
    admin.register(NETUID, "m1")
    chain = LocalChain(chain_path, VALIDATOR)
    setup = ContractSetup(netuid=NETUID, registered=frozenset({"m1"}), weights={0: 1.0})
    await check_set_weights_not_registered(chain, setup)


async def test_commit_own_needs_a_hotkey(chain_path: Path) -> None:
    LocalChain(chain_path, "").ensure_file()
    with pytest.raises(LocalChainError, match="no hotkey"):
        await LocalChain(chain_path, "").commit_own(NETUID, "x")
    chain = LocalChain(chain_path, VALIDATOR)
    with pytest.raises(LocalChainError, match="not registered"):
        await chain.commit_own(NETUID, "x")
