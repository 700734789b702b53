"""GPU scheduling: one evaluation worker per GPU slot, each worker's containers pinned to its slot's ids,
CPU-only workers when no slot is configured."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import docker
import pytest
from pydantic import ValidationError

from evaluation.errors import InfrastructureError
from evaluation.judge.server import gpu_present, vllm_spec
from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig, SlotSandbox, device_requests
from evaluation.types import Submission
from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from tests.scenario import world
from validator.app import open_app, pin_judge_gpus, worker_sandboxes
from validator.settings import load_settings
from validator.slots import shared_devices, worker_slots

REVISION = "0123456789abcdef0123456789abcdef01234567"


# ------------------------------------------------------------------------------------------ pure


def test_slots_decide_the_workers_and_their_gpus() -> None:
    assert worker_slots([["0"], ["1", "2"]], eval_workers=1) == [("0",), ("1", "2")]
    # eval_workers does not add workers beyond the slots, nor remove any.
    assert worker_slots([["0"], ["1"], ["2"]], eval_workers=8) == [("0",), ("1",), ("2",)]


def test_no_slots_means_eval_workers_cpu_only_or_shared_gpus() -> None:
    assert worker_slots(None, eval_workers=3) == [(), (), ()]
    assert worker_slots([], eval_workers=2, gpu_device_ids=["0"]) == [("0",), ("0",)]


@pytest.mark.parametrize(
    ("slots", "message"),
    [([[]], "names no device"), ([["0"], [" "]], "blank"), ([["0", "0"]], "twice")],
)
def test_bad_slots_are_refused(slots: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        worker_slots(slots, eval_workers=1)


def test_a_card_shared_by_two_slots_is_reported() -> None:
    assert shared_devices([("0",), ("0",), ("1",)]) == {"0"}
    assert shared_devices([("0", "1"), ("2",)]) == set()


def test_settings_take_slots_as_json_and_refuse_both_ways_at_once() -> None:
    settings = load_settings(["--gpu-slots", '[["0"], ["1"]]', "--eval-workers", "4"])
    assert settings.worker_slots == [("0",), ("1",)]
    assert load_settings([]).worker_slots == [()]  # the default: one CPU-only worker
    with pytest.raises(ValidationError, match="not both"):
        load_settings(["--gpu-slots", '[["0"]]', "--gpu-device-ids", '["1"]'])
    with pytest.raises(ValidationError, match="gpu_slots"):
        load_settings(["--gpu-slots", "[[]]"])


def test_device_request_names_exactly_the_slot_ids() -> None:
    assert device_requests([]) == []
    (request,) = device_requests(["1", "3"])
    assert request["DeviceIDs"] == ["1", "3"] and request["Capabilities"] == [["gpu"]]
    assert not request.get("Count")  # never "any N GPUs": that could take another worker's card


def test_container_kwargs_carry_the_slot_not_the_global_setting() -> None:
    sandbox = DockerSandbox(SandboxConfig(gpu_device_ids=("7",)))  # no daemon contact until used
    kwargs = sandbox._container_kwargs("img", "name", "net", {}, device_ids=("2",))
    assert [r["DeviceIDs"] for r in kwargs["device_requests"]] == [["2"]]
    assert [r["DeviceIDs"] for r in sandbox._container_kwargs("img", "n", "net", {})["device_requests"]] == [
        ["7"]
    ]
    assert "device_requests" not in sandbox._container_kwargs("img", "n", "net", {}, device_ids=())


def test_each_worker_gets_a_view_pinned_to_its_slot() -> None:
    docker_sandbox = DockerSandbox(SandboxConfig())
    views = worker_sandboxes(docker_sandbox, [("0",), ("1", "2")])
    assert all(isinstance(v, SlotSandbox) for v in views)
    assert [v.device_ids for v in views] == [("0",), ("1", "2")]  # type: ignore[attr-defined]
    fake = InProcessSandbox()
    assert worker_sandboxes(fake, [(), ()]) == [fake, fake]


def test_judge_pinned_to_its_gpus() -> None:
    spec = vllm_spec(port=8011, gpu_memory_utilization=0.25)
    assert "CUDA_VISIBLE_DEVICES" not in pin_judge_gpus(spec, []).env
    pinned = pin_judge_gpus(spec, ["1", "2"])
    assert pinned.env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert pinned.env["VLLM_NO_USAGE_STATS"] == "1"  # the spec's own environment is kept
    assert "0.25" in pinned.argv  # the judge's share of its card


# ------------------------------------------------------------------------------- service workers


class _Recording(InProcessSandbox):
    def __init__(self, name: str, seen: list[str]) -> None:
        super().__init__()
        self._name = name
        self._seen = seen

    async def start(self, submission: Submission, repo_dir: Path):  # type: ignore[no-untyped-def]
        self._seen.append(self._name)
        return await super().start(submission, repo_dir)


async def test_each_worker_evaluates_on_its_own_sandbox(tmp_path: Path, voicebench_dir: Path) -> None:
    benchmark = {"openbookqa": load_subset(voicebench_dir, "openbookqa")[:3]}
    async with world(tmp_path, voicebench_dir, gpu_slots=[["0"], ["1"]]) as w:
        w.miner("5Alice-miner", "alice/voice", "A")
        w.miner("5Bob-miner", "bob/voice", "B")
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            seen: list[str] = []
            slots = [_Recording("slot0", seen), _Recording("slot1", seen)]
            service = type(app.service)(
                app.service._config, app.store, app.chain, app.pipeline, worker_sandboxes=slots
            )
            await service.sync_once()
            assert await service.evaluate_next(worker=1)
            assert await service.evaluate_next(worker=0)
            assert seen == ["slot1", "slot0"]
            # The daemon starts one evaluator task per slot.
            stop = asyncio.Event()
            runner = asyncio.create_task(app.service.run(stop))
            await asyncio.sleep(0.2)
            names = {t.get_name() for t in asyncio.all_tasks()}
            stop.set()
            await runner
        assert {"evaluator-0", "evaluator-1"} <= names and "evaluator-2" not in names


# ------------------------------------------------------------------------------------- on Docker


@pytest.mark.docker
def test_daemon_records_the_slot_device_request(docker_host: str, base_image: str) -> None:
    """Created (never started, which needs NVIDIA's runtime): the daemon's HostConfig shows the ids."""
    sandbox = DockerSandbox(SandboxConfig(docker_host=docker_host, validator_id=f"t-{secrets.token_hex(3)}"))
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    name = f"vv-slot-test-{secrets.token_hex(4)}"
    network = client.networks.create(f"{name}-net", driver="bridge", internal=True)
    try:
        kwargs = sandbox._container_kwargs(base_image, name, network.name, {}, device_ids=("1", "3"))
        container = client.containers.create(**kwargs)
        try:
            container.reload()
            (request,) = container.attrs["HostConfig"]["DeviceRequests"]
            assert request["DeviceIDs"] == ["1", "3"] and request["Capabilities"] == [["gpu"]]
        finally:
            container.remove(force=True)
    finally:
        network.remove()
        client.close()


@pytest.mark.docker
async def test_slot_view_sends_its_gpus_to_the_daemon(
    docker_host: str, base_image: str, sandbox_config: SandboxConfig, tmp_path: Path
) -> None:
    """A slot's start reaches the daemon with its device request: here, without a GPU runtime, the daemon
    refuses it at start, and that is our side's fault (retried later), never the miner's."""
    if gpu_present():
        pytest.skip("a GPU is present: the refusal this test relies on does not happen")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(
        'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD ["sleep", "60"]\n', encoding="utf-8"
    )
    sandbox = DockerSandbox(sandbox_config)
    try:
        submission = Submission(uid=5, hotkey="5Slot", repo_id="t/slot", revision=REVISION)
        with pytest.raises(InfrastructureError, match="device driver"):
            await sandbox.for_slot(["0"]).start(submission, repo)
        client = docker.DockerClient(base_url=docker_host, timeout=30)
        try:  # nothing left behind
            mine = f"vv-{sandbox_config.validator_id}-uid{submission.uid}-"  # other tests share the id
            assert not client.containers.list(all=True, filters={"name": mine})
        finally:
            client.close()
    finally:
        await sandbox.close()


@pytest.mark.gpu
@pytest.mark.docker
def test_container_sees_only_its_slot_gpu(docker_host: str, base_image: str) -> None:
    if not gpu_present():
        pytest.skip("no NVIDIA GPU")
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        out = client.containers.run(
            base_image,
            ["sh", "-c", "ls /dev | grep -E '^nvidia[0-9]+$'"],
            device_requests=device_requests(["0"]),
            remove=True,
        )
    finally:
        client.close()
    assert out.decode().split() == ["nvidia0"]
