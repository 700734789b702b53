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


def scores_of(store: Store, *neurons: Neuron) -> dict[int, tuple[float, ...]]:
    return {st.uid: st.scores for st in store.standings(list(neurons))}


def test_standing_is_newest_finished_revision(store: Store) -> None:
    store.record_submission(sub(revision=REV_A, block=10))
    finish(store, 40.0)
    store.record_submission(sub(revision=REV_B, block=20))
    neuron = Neuron(uid=1, hotkey="hk1", registered_block=1)
    assert scores_of(store, neuron) == {1: (40.0,)}  # B still queued: A's standing holds
    finish(store, 70.0)
    (standing,) = store.standings([neuron])
    assert standing.scores == (70.0,) and standing.commit_block == 20


def test_rejected_submission_has_no_valid_scores(store: Store) -> None:
    store.record_submission(sub())
    finish(store, 0.0, error="RepoInvalid: hotkey mismatch")
    assert scores_of(store, Neuron(1, "hk1", 1)) == {1: ()}
    assert store.miner_rows()[0].status == "rejected"


def test_standing_keeps_fingerprints(store: Store) -> None:
    store.record_submission(sub())
    claim = store.claim_next()
    assert claim is not None
    result = EvaluationResult(claim.submission, 50.0, fingerprints=("content:ab", "weights:cd"))
    store.finish_evaluation(claim, result)
    (standing,) = store.standings([Neuron(1, "hk1", 1)])
    assert standing.fingerprints == frozenset({"content:ab", "weights:cd"})


def test_scores_before_reregistration_do_not_count(store: Store) -> None:
    store.record_submission(sub(block=10))
    finish(store, 90.0)
    assert store.standings([Neuron(uid=1, hotkey="hk1", registered_block=11)]) == []


def test_database_from_schema_1_is_migrated_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v.db")
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO submissions (hotkey, uid, repo_id, revision, competition, commit_block, status,"
        " created_at, updated_at) VALUES ('hk1', 1, 'ns/m', ?, 'v2', 5, 'queued', 0, 0)",
        (REV_A,),
    )
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "v.db")
    assert store.schema_version == len(MIGRATIONS)
    claim = store.claim_next()
    assert claim is not None and claim.submission.revision == REV_A  # old rows survive the upgrade
    store.close()


def test_weight_sets_are_kept(store: Store) -> None:
    assert store.last_weight_set() is None
    store.record_weight_set(5, {1: 0.25, 2: 0.75}, True, "ok", leader="hk2")
    store.record_weight_set(6, {1: 1.0}, False, "rate limited")
    accepted = store.last_weight_set()
    assert accepted is not None and accepted.weights == {1: 0.25, 2: 0.75} and accepted.leader == "hk2"
    latest = store.last_weight_set(successful_only=False)
    assert latest is not None and latest.success is False and latest.block == 6
    store.record_weight_set(7, {1: 1.0}, False, "dry run", leader="hk1", dry_run=True)
    dry = store.last_weight_set()
    assert dry is not None and dry.dry_run and dry.leader == "hk1"  # a dry run's leader carries over


def test_round_seed_is_kept_with_the_evaluation(store: Store, tmp_path: Path) -> None:
    store.record_submission(sub())
    claim = store.claim_next()
    assert claim is not None
    store.finish_evaluation(claim, EvaluationResult(claim.submission, 10.0, seed=2**62 + 5))
    conn = sqlite3.connect(tmp_path / "v.db")
    assert conn.execute("SELECT round_seed FROM evaluations").fetchone()[0] == 2**62 + 5


def test_damaged_database_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    store = Store.open(path)
    for n in range(300):  # enough rows for the table and its indexes to span several pages
        store.record_submission(sub(hotkey=f"hk{n}", block=n))
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page : 3 * page] = b"\xff" * page  # a torn write in the middle of the file
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="integrity check"):
        Store.open(path)


def test_interrupted_evaluation_continues_with_its_seed_and_answered_samples(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    store.record_submission(sub())
    claim = store.claim_next()
    assert claim is not None and claim.round_seed is None
    plan = [("openbookqa", "q1"), ("openbookqa", "q2"), ("bbh", "b1")]
    assert store.plan_evaluation(claim.evaluation_id, 42, plan) == {}
    store.save_sample(claim.evaluation_id, SampleResult("openbookqa", "q1", 1.0, "A"))
    store.save_sample(claim.evaluation_id, SampleResult("bbh", "b1", 0.0, "", "timed out"))
    store.close()  # kill -9 here

    reopened = Store.open(tmp_path / "v.db")
    assert reopened.requeue_interrupted() == 1
    again = reopened.claim_next()
    assert again is not None
    assert (again.evaluation_id, again.round_seed, again.attempt) == (claim.evaluation_id, 42, 2)
    done = reopened.plan_evaluation(again.evaluation_id, 42, plan)
    # Only the answered sample is reused; the failed one is asked again.
    assert done == {("openbookqa", "q1"): SampleResult("openbookqa", "q1", 1.0, "A")}
    assert reopened.evaluation_count("hk1", REV_A) == 1
    reopened.close()


def test_answered_sample_is_never_overwritten_a_failed_one_is(store: Store) -> None:
    store.record_submission(sub())
    claim = store.claim_next()
    assert claim is not None
    store.save_sample(claim.evaluation_id, SampleResult("s", "1", 1.0, "A"))
    store.save_sample(claim.evaluation_id, SampleResult("s", "1", 0.0, "B"))
    store.save_sample(claim.evaluation_id, SampleResult("s", "2", 0.0, "", "connection refused"))
    store.save_sample(claim.evaluation_id, SampleResult("s", "2", 1.0, "A"))
    assert [(r.item_id, r.response, r.error) for r in store.sample_results(claim.evaluation_id)] == [
        ("1", "A", None),
        ("2", "A", None),
    ]


def test_changed_plan_drops_samples_outside_it(store: Store) -> None:
    store.record_submission(sub())
    claim = store.claim_next()
    assert claim is not None
    store.plan_evaluation(claim.evaluation_id, 7, [("s", "1"), ("s", "2")])
    store.save_sample(claim.evaluation_id, SampleResult("s", "1", 1.0, "A"))
    store.save_sample(claim.evaluation_id, SampleResult("s", "2", 1.0, "A"))
    done = store.plan_evaluation(claim.evaluation_id, 7, [("s", "2"), ("s", "3")])
    assert set(done) == {("s", "2")}
    assert [r.item_id for r in store.sample_results(claim.evaluation_id)] == ["2"]


def test_retry_after_our_failure_continues_the_same_evaluation(store: Store) -> None:
    store.record_submission(sub())
    first = store.claim_next(now=100.0)
    assert first is not None
    store.plan_evaluation(first.evaluation_id, 9, [("s", "1")])
    store.fail_evaluation(first, "JudgeUnavailable: down", retry_at=101.0)
    retry = store.claim_next(now=102.0)
    assert retry is not None and retry.evaluation_id == first.evaluation_id and retry.round_seed == 9
    store.finish_evaluation(retry, EvaluationResult(retry.submission, 50.0, seed=9))
    assert scores_of(store, Neuron(1, "hk1", 1)) == {1: (50.0,)}


def test_chain_outage_release_counts_no_attempt(store: Store) -> None:
    store.record_submission(sub())
    claim = store.claim_next(now=100.0)
    assert claim is not None
    store.release(claim, not_before=200.0)
    assert store.claim_next(now=150.0) is None
    again = store.claim_next(now=250.0)
    assert again is not None and again.attempt == 1 and again.evaluation_id == claim.evaluation_id


def test_database_at_schema_4_with_an_open_evaluation_is_upgraded(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v.db")
    for script in MIGRATIONS[:4]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO submissions (hotkey, uid, repo_id, revision, competition, commit_block, status,"
        " created_at, updated_at) VALUES ('hk1', 1, 'ns/m', ?, 'v2', 5, 'running', 0, 0)",
        (REV_A,),
    )
    conn.execute("INSERT INTO evaluations (submission_id, started_at) VALUES (1, 3.0)")
    conn.execute("INSERT INTO sample_results VALUES (1, 's', '1', 1.0, 'A', NULL, 0.1)")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "v.db")
    assert store.schema_version == len(MIGRATIONS) == 7
    assert store.requeue_interrupted() == 1
    claim = store.claim_next()
    # The old open evaluation has no recorded plan to resume: closed, and a fresh one begins.
    assert claim is not None and claim.evaluation_id == 2 and claim.round_seed is None
    assert store.sample_results(1)[0].response == "A"  # old results are kept for the record
    store.close()


def test_malformed_submission_row_is_set_aside_and_the_queue_goes_on(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    store.record_submission(sub("bad", block=1))
    store.record_submission(sub("good", block=2))
    conn = sqlite3.connect(tmp_path / "v.db")
    conn.execute("UPDATE submissions SET commit_block = 'garbage' WHERE hotkey = 'bad'")
    conn.commit()
    conn.close()
    claim = store.claim_next()
    assert claim is not None and claim.submission.hotkey == "good"
    assert store.claim_next() is None  # the malformed row is reached, set aside, not returned
    bad = next(r for r in store.miner_rows() if r.hotkey == "bad")
    assert bad.status == "failed" and "malformed submissions row" in (bad.error or "")
    store.close()


def finish_with(store: Store, fingerprints: frozenset[str]) -> None:
    claim = store.claim_next()
    assert claim is not None
    result = EvaluationResult(claim.submission, 50.0, (), None, fingerprints=tuple(sorted(fingerprints)))
    store.finish_evaluation(claim, result)


def test_fingerprint_history_keeps_every_submission_with_its_earliest_block(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    store.record_submission(sub("bob", REV_A, uid=1, block=10))
    finish_with(store, frozenset({"fp-model", "fp-bob"}))
    store.record_submission(sub("bob", REV_B, uid=1, block=30))  # Bob's next revision, same model
    finish_with(store, frozenset({"fp-model"}))
    store.record_submission(sub("erin", REV_A, uid=2, block=50))
    finish_with(store, frozenset({"fp-model"}))
    store.close()
    # Bob deregisters: nothing is deleted, and a restart keeps it all.
    store = Store.open(tmp_path / "v.db")
    assert store.fingerprint_history(["fp-model", "fp-bob", "fp-none"]) == {
        "fp-model": {"bob": 10, "erin": 50},
        "fp-bob": {"bob": 10},
    }
    assert store.fingerprint_history([]) == {}
    store.close()


def test_fingerprints_evaluated_before_the_migration_are_backfilled(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v.db")
    for script in MIGRATIONS[:6]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    rows = [
        ("bob", REV_A, 10, "evaluated", '["fp1", "fp2"]'),
        ("erin", REV_B, 40, "rejected", '["fp1"]'),
        ("carol", REV_A, 5, "queued", '["fp1"]'),  # never evaluated: owns nothing
        ("dave", REV_B, 7, "evaluated", "not json"),  # unreadable: skipped, not fatal
    ]
    for hotkey, revision, block, status, fingerprints in rows:
        conn.execute(
            "INSERT INTO submissions (hotkey, uid, repo_id, revision, competition, commit_block, status,"
            " created_at, updated_at, fingerprints) VALUES (?, 1, 'ns/m', ?, 'v4', ?, ?, 0, 0, ?)",
            (hotkey, revision, block, status, fingerprints),
        )
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "v.db")
    assert store.fingerprint_history(["fp1", "fp2"]) == {"fp1": {"bob": 10, "erin": 40}, "fp2": {"bob": 10}}
    store.close()


def test_chain_facts_are_kept_across_restarts(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    store.set_fact("validator", {"registered": True, "permit": False})
    store.set_fact("weights_blocked", {"kind": "runtime", "message": "m"})
    store.set_fact("weights_blocked", None)
    store.close()
    store = Store.open(tmp_path / "v.db")
    assert store.facts() == {"validator": {"permit": False, "registered": True}}
    store.close()


def test_refused_weight_sets_keep_their_kind(store: Store) -> None:
    store.record_weight_set(5, {1: 1.0}, False, "no permit", refusal="no_permit")
    latest = store.last_weight_set(successful_only=False)
    assert latest is not None and latest.refusal == "no_permit"
