"""The container-runtime port: what the pipeline needs from a sandbox, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from evaluation.types import Submission


@dataclass(frozen=True)
class RunningModel:
    """A started miner container the validator may talk to."""

    base_url: str  # e.g. http://172.30.0.2:8000, reachable from the validator only
    container_id: str
    image_id: str


@dataclass(frozen=True)
class ContainerExit:
    """How a miner's container ended by its own doing (its process exited, crashed or ran out of memory)."""

    exit_code: int | None
    oom_killed: bool
    logs_tail: str

    def describe(self) -> str:
        """One line for a failure reason, then the container's last log lines."""
        code = "unknown" if self.exit_code is None else str(self.exit_code)
        oom = " (killed: out of memory)" if self.oom_killed else ""
        tail = f":\n{self.logs_tail}" if self.logs_tail else ""
        return f"the miner's container exited with code {code}{oom} during the evaluation{tail}"


class Sandbox(Protocol):
    """Builds a miner repo, runs it isolated, and removes everything it created."""

    async def start(self, submission: Submission, repo_dir: Path) -> RunningModel:
        """Build ``repo_dir`` and run it until ``/api/v1/health`` reports the model loaded.

        Raises ``BuildFailed`` or ``StartFailed`` for the miner's faults, ``InfrastructureError`` otherwise.
        """
        ...

    async def stop(self, model: RunningModel) -> None:
        """Stop and remove the container and the network made for it. Never raises for a gone container."""
        ...

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        """None while the model still runs; how it ended when it ended by its own doing.

        Raises ``InfrastructureError`` when our side lost it (the runtime restarted or is unreachable,
        the container was killed or removed from outside): its failed samples are not the miner's.
        """
        ...

    async def cleanup(self) -> int:
        """Remove every container and network this validator labelled (after a crash). Returns the count."""
        ...

    async def close(self) -> None:
        """Release the runtime client. Containers are stopped by ``stop``, not here."""
        ...
