"""A small world for end-to-end tests: a local chain file, a local hub on 127.0.0.1, and miners that
publish variants of the example miner and commit them. Used with the in-process sandbox (fast) and with
real Docker (tests/test_e2e_docker.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.localhub import LocalHub, publish
from validator.chain.local import LocalChain
from validator.commitments import format_commitment
from validator.demo import default_example_dir, prepare_repo
from validator.settings import Settings, load_settings

NETUID = 1
VALIDATOR = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


@dataclass
class World:
    """The chain, the hub and the settings a validator under test runs with."""

    root: Path
    hub_url: str
    chain: LocalChain
    settings: Settings
    uids: dict[str, int] = field(default_factory=dict)

    @property
    def hub_root(self) -> Path:
        return self.root / "hub"

    def register(self, hotkey: str) -> int:
        self.uids[hotkey] = self.chain.register(NETUID, hotkey).uid
        return self.uids[hotkey]

    def publish(self, repo_id: str, hotkey_txt: str, **model_config: Any) -> str:
        """Publish a variant of the example miner; returns its revision."""
        n = len(list((self.root / "src").glob("*"))) if (self.root / "src").exists() else 0
        src = prepare_repo(default_example_dir(), self.root / "src" / f"{n}", hotkey_txt, model_config)
        return publish(self.hub_root, repo_id, src)

    def commit(self, hotkey: str, repo_id: str, revision: str) -> None:
        self.chain.commit(NETUID, hotkey, format_commitment(repo_id, revision))

    def miner(
        self, hotkey: str, repo_id: str, answer: str, *, repo_hotkey: str | None = None, **model_config: Any
    ) -> str:
        """Register (if needed), publish and commit in one step; returns the revision."""
        if hotkey not in self.uids:
            self.register(hotkey)
        revision = self.publish(repo_id, repo_hotkey or hotkey, answer=answer, **model_config)
        self.commit(hotkey, repo_id, revision)
        return revision

    def weights(self) -> dict[int, float]:
        return self.chain.weights(NETUID, VALIDATOR)[0]


@asynccontextmanager
async def world(root: Path, voicebench_dir: Path, **settings: Any) -> AsyncIterator[World]:
    """Start a hub and a chain under ``root``; settings point the validator at them."""
    async with LocalHub(root / "hub") as hub_url:
        chain_file = root / "chain.json"
        chain = LocalChain.create(chain_file, NETUID, validator_hotkey=VALIDATOR)
        chain.register(NETUID, VALIDATOR)
        values: dict[str, Any] = {
            "chain": "local",
            "data_dir": root / "var",
            "local_chain_file": chain_file,
            "validator_hotkey": VALIDATOR,
            "hub_endpoint": hub_url,
            "voicebench_dir": voicebench_dir,
            "voicebench_source": "fixture",
            "subsets": ["openbookqa"],
            "samples_per_subset": None,
            "netuid": NETUID,
            "sync_interval_s": 0.5,
            "weights_interval_s": 0.5,
            "retry_backoff_s": 0.0,
            "log_format": "json",
        }
        values.update(settings)
        yield World(root=root, hub_url=hub_url, chain=chain, settings=load_settings([], **values))
