"""The SQLite store on a real file: queueing, resume after restart, scores, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evaluation.types import EvaluationResult, SampleResult, Submission, SubsetScore
from validator.chain.port import Neuron
from validator.store import MIGRATIONS, Store, StoreError

REV_A = "a" * 40
REV_B = "b" * 40


def sub(hotkey: str = "hk1", revision: str = REV_A, uid: int = 1, block: int = 10) -> Submission:
    return Submission(uid=uid, hotkey=hotkey, repo_id=f"ns/{hotkey}", revision=revision, block=block)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "v.db")
    yield s
    s.close()


def finish(store: Store, score: float, error: str | None = None) -> None:
    claim = store.claim_next()
    assert claim is not None
    result = EvaluationResult(claim.submission, score, (SubsetScore("openbookqa", score, 2, 0),), error)
    store.finish_evaluation(claim, result)


def test_new_file_is_at_latest_schema_in_wal_mode(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "deep" / "v.db")
    assert store.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(tmp_path / "deep" / "v.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(tmp_path / "v.db")


def test_corrupt_file_gives_store_error(tmp_path: Path) -> None:
    (tmp_path / "v.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        Store.open(tmp_path / "v.db")


def test_submission_recorded_once(store: Store) -> None:
    first = store.record_submission(sub())
    again = store.record_submission(sub())
    assert first[1] is True and again == (first[0], False)
    assert store.pending_count() == 1


def test_new_revision_supersedes_queued_one(store: Store) -> None:
    store.record_submission(sub(revision=REV_A, block=10))
    store.record_submission(sub(revision=REV_B, block=20))
    claim = store.claim_next()
    assert claim is not None and claim.submission.revision == REV_B
    assert store.claim_next() is None


def test_queue_is_oldest_commit_first(store: Store) -> None:
    store.record_submission(sub("late", block=50))
    store.record_submission(sub("early", block=5))
    claim = store.claim_next()
    assert claim is not None and claim.submission.hotkey == "early"


def test_restart_requeues_running_and_keeps_samples(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    store.record_submission(sub())
    claim = store.claim_next()
    assert claim is not None
    store.save_sample(claim.evaluation_id, SampleResult("openbookqa", "q1", 1.0, "A"))
    store.close()  # the process dies mid-evaluation

    reopened = Store.open(tmp_path / "v.db")
    assert reopened.requeue_interrupted() == 1
    again = reopened.claim_next()
    assert again is not None and again.attempt == 2 and again.submission == claim.submission
    assert reopened.sample_results(claim.evaluation_id)[0].response == "A"
    reopened.close()


def test_failed_evaluation_retries_after_backoff_then_gives_up(store: Store) -> None:
    store.record_submission(sub())
    claim = store.claim_next(now=100.0)
    assert claim is not None
    store.fail_evaluation(claim, "docker down", retry_at=200.0)
    assert store.claim_next(now=150.0) is None
    retry = store.claim_next(now=250.0)
    assert retry is not None
    store.fail_evaluation(retry, "docker down", retry_at=None)
    assert store.pending_count() == 0
    assert store.miner_rows()[0].status == "failed"


def test_current_scores_use_newest_scored_revision(store: Store) -> None:
    store.record_submission(sub(revision=REV_A, block=10))
    finish(store, 40.0)
    store.record_submission(sub(revision=REV_B, block=20))
    neurons = [Neuron(uid=1, hotkey="hk1", registered_block=1)]
    assert store.current_scores(neurons) == {1: 40.0}  # B still queued: A's score stands
    finish(store, 70.0)
    assert store.current_scores(neurons) == {1: 70.0}


def test_rejected_submission_scores_zero(store: Store) -> None:
    store.record_submission(sub())
    finish(store, 0.0, error="RepoInvalid: hotkey mismatch")
    assert store.current_scores([Neuron(1, "hk1", 1)]) == {1: 0.0}
    assert store.miner_rows()[0].status == "rejected"


def test_scores_before_reregistration_do_not_count(store: Store) -> None:
    store.record_submission(sub(block=10))
    finish(store, 90.0)
    assert store.current_scores([Neuron(uid=1, hotkey="hk1", registered_block=11)]) == {}


def test_weight_sets_are_kept(store: Store) -> None:
    assert store.last_weight_set() is None
    store.record_weight_set(5, {1: 0.25, 2: 0.75}, True, "ok")
    store.record_weight_set(6, {1: 1.0}, False, "rate limited")
    assert store.last_weight_set() is not None and store.last_weight_set().weights == {1: 0.25, 2: 0.75}
    latest = store.last_weight_set(successful_only=False)
    assert latest is not None and latest.success is False and latest.block == 6
