"""Errors raised by the evaluation library.

Every failure that is the miner's fault derives from :class:`SubmissionRejected`, so the caller can tell
"this model is bad" (score it 0, do not retry) from "our side failed" (retry later).
"""

from __future__ import annotations


class EvaluationError(Exception):
    """Base class of every error the evaluation library raises on purpose."""


class SubmissionRejected(EvaluationError):
    """The submission itself is at fault; evaluating it again will not help."""


class RepoInvalid(SubmissionRejected):
    """The repo is missing files, too large, or its hotkey.txt does not match."""


class DockerfileRefused(RepoInvalid):
    """The Dockerfile asks the daemon for something the build policy refuses; found before any build.

    ``reasons`` holds one line per violation (``line 4: ADD http://...: ...``); the message lists them all.
    """

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class BuildFailed(SubmissionRejected):
    """The repo's Dockerfile did not build."""


class StartFailed(SubmissionRejected):
    """The container exited or never reported its model loaded before the deadline."""


class MinerResponseError(SubmissionRejected):
    """A miner answer was malformed, oversized, or an HTTP error."""


class InfrastructureError(EvaluationError):
    """Something on the validator's side failed (docker daemon, hub, disk); worth retrying later."""
