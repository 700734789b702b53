"""Weight setting through the daemon on the local chain: copies, hotkey changes, rate limits, dry runs,
retries and the miner-side commit command."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from tests.scenario import NETUID, World, world
from validator.app import open_app
from validator.chain.local import LocalChain
from validator.chain.port import WeightSetResult
from validator.cli import main as cli_main
from validator.commitments import subnet_hash

ALICE, BOB, ERIN, ZED = "5Alice-w", "5Bob-w", "5Erin-w", "5Zed-w"


@pytest.fixture(scope="module")
def benchmark(voicebench_dir: Path) -> dict[str, list]:
    return {"openbookqa": load_subset(voicebench_dir, "openbookqa")}


async def evaluate_all(w: World, benchmark: dict, **overrides: object) -> WeightSetResult | None:
    settings = w.settings.model_copy(update=overrides)
    async with open_app(settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
        await app.service.sync_once()
        while await app.service.evaluate_next():
            pass
        return await app.service.set_weights_once()


async def test_a_copy_with_its_own_hotkey_earns_nothing(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(BOB, "bob/voice", "B")
        w.miner(ALICE, "alice/voice", "C", name="alice")
        # Erin re-uploads Bob's model under her name with her own hotkey.txt: it passes every file
        # check and scores as well as Bob, but Bob committed first.
        w.miner(ERIN, "erin/voice", "B")
        result = await evaluate_all(w, benchmark)
        assert result is not None and result.success
        assert w.uids[ERIN] not in w.weights()
        assert w.uids[BOB] in w.weights() and w.uids[ALICE] in w.weights()


async def test_new_hotkey_on_a_uid_does_not_inherit_the_old_score(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(ALICE, "alice/voice", "A")
        w.miner(BOB, "bob/voice", "B")
        assert await evaluate_all(w, benchmark) is not None
        alice_uid = w.uids[ALICE]
        w.chain.deregister(NETUID, ALICE)
        assert w.register(ZED) == alice_uid  # Zed takes Alice's freed uid
        await evaluate_all(w, benchmark)
        assert w.weights() == {w.uids[BOB]: pytest.approx(1.0)}  # Zed has nothing evaluated yet


async def test_rate_limit_is_waited_for_not_spammed(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.chain.configure(NETUID, weights_rate_limit=100)
        w.miner(ALICE, "alice/voice", "A")
        first = await evaluate_all(w, benchmark)
        assert first is not None and first.success
        history = len(w.chain.weights_history(NETUID))
        assert await evaluate_all(w, benchmark) is None  # too soon: nothing sent
        assert len(w.chain.weights_history(NETUID)) == history
        w.chain.advance(100)
        again = await evaluate_all(w, benchmark)
        assert again is not None and again.success


async def test_dry_run_records_but_never_submits(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(ALICE, "alice/voice", "A")
        assert await evaluate_all(w, benchmark, weights_dry_run=True) is None
        assert w.weights() == {}
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            recorded = app.store.last_weight_set()
        assert recorded is not None and recorded.dry_run and recorded.weights == {w.uids[ALICE]: 1.0}


async def test_nothing_evaluated_leaves_chain_untouched_even_with_burn_uid(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.register(ALICE)
        assert await evaluate_all(w, benchmark, weights_burn_uid=0) is None
        assert w.weights() == {}


async def test_burn_uid_takes_all_when_nobody_beats_the_baseline(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(ALICE, "alice/voice", "A")  # scores 41.67
        result = await evaluate_all(w, benchmark, weights_burn_uid=0, weights_baseline=50.0)
        assert result is not None and result.success
        assert w.weights() == {0: pytest.approx(1.0)}


async def test_transient_failures_are_retried(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(ALICE, "alice/voice", "A")
        calls: list[int] = []
        real = type(w.chain).set_weights

        async def flaky(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
            calls.append(version_key)
            if len(calls) < 3:
                return WeightSetResult(False, "transaction pool full", -1)
            return await real(self, netuid, weights, version_key)

        monkeypatch.setattr(type(w.chain), "set_weights", flaky)
        result = await evaluate_all(w, benchmark, version_key=321, weights_retry_backoff_s=0.0)
        assert result is not None and result.success
        assert calls == [321, 321, 321]


def test_commit_command_writes_the_subnet_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain_file = tmp_path / "chain.json"
    base = ["--chain", "local", "--local-chain-file", str(chain_file), "--validator-hotkey", "5Miner"]
    assert cli_main(["chain", "init", "--chain-file", str(chain_file)]) == 0
    assert cli_main(["chain", "register", "--hotkey", "5Miner", "--chain-file", str(chain_file)]) == 0
    assert cli_main(["commit", "--repo", "me/model", "--revision", "ab" * 20, *base]) == 0
    assert cli_main(["commit", "--repo", "me/model", "--revision", "main", *base]) == 2
    capsys.readouterr()
    # Without --chain the command refuses to guess where to write.
    assert cli_main(["commit", "--repo", "me/model", "--revision", "cd" * 20, *base[2:]]) == 2
    assert "--chain bittensor" in capsys.readouterr().err
    (commitment,) = LocalChain(chain_file, "5Miner").snapshot(NETUID).commitments
    # The live competition, and the hash the subnet's own upload tool writes (never a shared constant).
    assert commitment.value == f"me:model:0:{'ab' * 20}:{subnet_hash('me/model', 0, 'v4')}:v4"


async def test_a_copy_of_a_deregistered_miners_model_is_still_a_copy_after_a_restart(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(BOB, "bob/voice", "B")
        w.miner(ALICE, "alice/voice", "C", name="alice")
        assert await evaluate_all(w, benchmark) is not None
        assert w.uids[BOB] in w.weights()
        # Bob leaves the subnet; later Erin re-uploads his model under her name and commits it.
        w.chain.deregister(NETUID, BOB)
        w.miner(ERIN, "erin/voice", "B")
        result = await evaluate_all(w, benchmark)  # a new app: the validator restarted in between
        assert result is not None and result.success
        assert w.uids[ERIN] not in w.weights(), "a copy of a deregistered miner's model earned weight"
        assert w.weights() == {w.uids[ALICE]: pytest.approx(1.0)}
