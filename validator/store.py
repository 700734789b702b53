"""The validator's memory: one SQLite file (WAL) holding submissions, evaluations, every sample result,
subset scores and weight sets, so a restart loses nothing and resumes where it stopped.

Methods are synchronous and short; the daemon calls them through ``asyncio.to_thread``. One connection is
shared under a lock, which keeps every multi-statement change atomic without a connection pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from evaluation.types import EvaluationResult, SampleResult, SpeechDetails, Submission
from validator.chain.port import Neuron
from validator.weights import Standing

# Each entry migrates the schema from version i to i+1; PRAGMA user_version records where a file stands.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE submissions (
        id            INTEGER PRIMARY KEY,
        hotkey        TEXT    NOT NULL,
        uid           INTEGER NOT NULL,
        repo_id       TEXT    NOT NULL,
        revision      TEXT    NOT NULL,
        competition   TEXT    NOT NULL,
        commit_block  INTEGER NOT NULL,
        status        TEXT    NOT NULL CHECK (status IN
                          ('queued', 'running', 'evaluated', 'rejected', 'failed', 'superseded')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        not_before    REAL    NOT NULL DEFAULT 0,
        last_error    TEXT,
        created_at    REAL    NOT NULL,
        updated_at    REAL    NOT NULL,
        UNIQUE (hotkey, repo_id, revision, competition)
    );
    CREATE INDEX submissions_queue ON submissions (status, not_before, commit_block);
    CREATE INDEX submissions_hotkey ON submissions (hotkey, commit_block);

    CREATE TABLE evaluations (
        id             INTEGER PRIMARY KEY,
        submission_id  INTEGER NOT NULL REFERENCES submissions (id),
        started_at     REAL    NOT NULL,
        finished_at    REAL,
        score          REAL,
        error          TEXT,
        duration_s     REAL
    );
    CREATE INDEX evaluations_submission ON evaluations (submission_id);

    CREATE TABLE sample_results (
        evaluation_id  INTEGER NOT NULL REFERENCES evaluations (id),
        subset         TEXT    NOT NULL,
        item_id        TEXT    NOT NULL,
        score          REAL    NOT NULL,
        response       TEXT    NOT NULL,
        error          TEXT,
        latency_s      REAL    NOT NULL,
        PRIMARY KEY (evaluation_id, subset, item_id)
    );

    CREATE TABLE subset_scores (
        evaluation_id  INTEGER NOT NULL REFERENCES evaluations (id),
        subset         TEXT    NOT NULL,
        score          REAL    NOT NULL,
        samples        INTEGER NOT NULL,
        failures       INTEGER NOT NULL,
        PRIMARY KEY (evaluation_id, subset)
    );

    CREATE TABLE weight_sets (
        id          INTEGER PRIMARY KEY,
        created_at  REAL    NOT NULL,
        block       INTEGER NOT NULL,
        weights     TEXT    NOT NULL,
        success     INTEGER NOT NULL,
        message     TEXT    NOT NULL
    );
    """,
    """
    ALTER TABLE submissions ADD COLUMN fingerprints TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE weight_sets ADD COLUMN leader TEXT;
    ALTER TABLE weight_sets ADD COLUMN dry_run INTEGER NOT NULL DEFAULT 0;
    """,
    """
    ALTER TABLE evaluations ADD COLUMN round_seed INTEGER;
    """,
    """
    ALTER TABLE evaluations ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
    """,
    # Resumable evaluations: the round seed and the sampled items (JSON [[subset, item_id], ...]) are kept
    # when an evaluation starts, and an evaluation left open by a crash is continued, not started over.
    # sample_results' primary key (evaluation_id, subset, item_id) already keeps each item once.
    # Evaluations left open by an older validator have no stored plan to resume: they are closed.
    """
    ALTER TABLE evaluations ADD COLUMN items TEXT;
    UPDATE evaluations SET finished_at = started_at, error = 'interrupted before evaluations were resumable'
        WHERE finished_at IS NULL;
    CREATE INDEX evaluations_open ON evaluations (submission_id) WHERE finished_at IS NULL;
    """,
    # Voice-to-voice samples: transcript, text, WER, consistency, MOS (JSON of SpeechDetails); NULL for
    # voice-to-text samples.
    """
    ALTER TABLE sample_results ADD COLUMN speech TEXT;
    """,
    # Fingerprints of every submission ever evaluated, with its commitment block: a copy of a model whose
    # miner has since deregistered is still a copy (the earliest commitment ever seen wins). Backfilled
    # from the submissions already evaluated. chain_facts: what the daemon last learned from the chain
    # about its own hotkey and its weights (permit, a blocked weight path, a pending reveal) for the
    # status command. weight_sets.refusal: the kind of a refused set.
    """
    CREATE TABLE fingerprints (
        fingerprint    TEXT    NOT NULL,
        hotkey         TEXT    NOT NULL,
        commit_block   INTEGER NOT NULL,
        submission_id  INTEGER NOT NULL REFERENCES submissions (id),
        PRIMARY KEY (fingerprint, submission_id)
    );
    CREATE INDEX fingerprints_earliest ON fingerprints (fingerprint, commit_block);
    INSERT OR IGNORE INTO fingerprints (fingerprint, hotkey, commit_block, submission_id)
        SELECT j.value, s.hotkey, s.commit_block, s.id FROM submissions s, json_each(s.fingerprints) j
        WHERE s.status IN ('evaluated', 'rejected') AND json_valid(s.fingerprints);
    CREATE TABLE chain_facts (
        name        TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  REAL NOT NULL
    );
    ALTER TABLE weight_sets ADD COLUMN refusal TEXT;
    """,
)

SCORED_STATUSES = ("evaluated", "rejected")

log = structlog.get_logger(__name__)

ItemKey = tuple[str, str]
"""(subset, item_id): one sampled benchmark item."""


class StoreError(RuntimeError):
    """The database file cannot be used (newer schema, corrupt file) or written (disk full)."""


@dataclass(frozen=True)
class QueuedEvaluation:
    """A submission claimed by a worker, with the evaluation row opened for it."""

    submission_id: int
    evaluation_id: int
    submission: Submission
    attempt: int
    # Set when the claim continues an evaluation a crash or an infrastructure failure interrupted: its
    # items are those of this seed, whatever round the chain is in now.
    round_seed: int | None = None


@dataclass(frozen=True)
class MinerRow:
    """One line of the status table: a hotkey's newest submission and its outcome."""

    uid: int
    hotkey: str
    repo_id: str
    revision: str
    status: str
    score: float | None
    error: str | None
    commit_block: int


@dataclass(frozen=True)
class WeightSetRow:
    """A weight set as recorded, successful or not."""

    created_at: float
    block: int
    weights: dict[int, float]
    success: bool
    message: str
    leader: str | None = None
    dry_run: bool = False
    refusal: str | None = None


class Store:
    """SQLite-backed persistence for the validator."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # A torn write or a bad disk shows here, at start, not in the middle of a weight set.
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StoreError(f"database {path} failed its integrity check: {'; '.join(problems[:5])}")
            store = cls(conn, path)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot use database {path}: {exc}") from exc
        return store

    def close(self) -> None:
        """Close the connection; the WAL is checkpointed by SQLite."""
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        """The schema version the file is at."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this validator knows "
                f"({len(MIGRATIONS)}); upgrade the validator"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction() as conn:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back by itself (disk full, I/O error).
                    if self._conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise self._write_error(exc) from exc

    def _write_error(self, exc: sqlite3.OperationalError) -> Exception:
        """A clear StoreError for a write the disk refused; other errors (bugs, locks) pass unchanged.

        The transaction was rolled back, so the file holds everything committed before it: free space and
        the validator carries on where it stopped.
        """
        code = getattr(exc, "sqlite_errorcode", None)
        where = self._path or "the database"
        if code == sqlite3.SQLITE_FULL:
            return StoreError(
                f"cannot write {where}: the disk is full ({exc}); nothing was half-written, free space on"
                " that filesystem and the validator carries on"
            )
        if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
            return StoreError(f"cannot write {where}: I/O error ({exc}); check the disk")
        return exc

    # --- submissions ---------------------------------------------------------------------------

    def record_submission(self, sub: Submission) -> tuple[int, bool]:
        """Queue ``sub`` unless it is already known. Returns (id, created).

        A new revision from a hotkey supersedes that hotkey's older submissions still waiting in the
        queue: only the newest commitment is worth GPU time.
        """
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, uid FROM submissions"
                " WHERE hotkey = ? AND repo_id = ? AND revision = ? AND competition = ?",
                (sub.hotkey, sub.repo_id, sub.revision, sub.competition),
            ).fetchone()
            if row is not None:
                if row["uid"] != sub.uid:
                    conn.execute(
                        "UPDATE submissions SET uid = ?, updated_at = ? WHERE id = ?",
                        (sub.uid, now, row["id"]),
                    )
                return int(row["id"]), False
            conn.execute(
                "UPDATE submissions SET status = 'superseded', updated_at = ?"
                " WHERE hotkey = ? AND status = 'queued'",
                (now, sub.hotkey),
            )
            cursor = conn.execute(
                "INSERT INTO submissions (hotkey, uid, repo_id, revision, competition, commit_block,"
                " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (sub.hotkey, sub.uid, sub.repo_id, sub.revision, sub.competition, sub.block, now, now),
            )
            return int(cursor.lastrowid or 0), True

    def requeue_interrupted(self) -> int:
        """Put back in the queue what a previous run was evaluating when it stopped.

        Its evaluation stays open: the next claim continues it with the same items and the samples
        already answered (see :meth:`plan_evaluation`).
        """
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE submissions SET status = 'queued', updated_at = ? WHERE status = 'running'",
                (time.time(),),
            )
            return cursor.rowcount

    def claim_next(self, now: float | None = None) -> QueuedEvaluation | None:
        """Take the oldest queued submission that is due, mark it running and open its evaluation, or
        continue the one it already has open (interrupted by a crash or a failure on our side).

        A submission row that cannot be read (a value of the wrong type) is marked failed with the reason
        and logged; the queue goes on with the next one instead of stopping on it forever.
        """
        now = time.time() if now is None else now
        with self._transaction() as conn:
            while True:
                row = conn.execute(
                    "SELECT * FROM submissions WHERE status = 'queued' AND not_before <= ?"
                    " ORDER BY commit_block, id LIMIT 1",
                    (now,),
                ).fetchone()
                if row is None:
                    return None
                try:
                    submission, attempts = _submission(row), int(row["attempts"])
                except (TypeError, ValueError) as exc:
                    error = f"malformed submissions row {row['id']}: {exc}"
                    log.error("malformed row in the store; submission set aside", error=error)
                    conn.execute(
                        "UPDATE submissions SET status = 'failed', last_error = ?, updated_at = ?"
                        " WHERE id = ?",
                        (error, now, row["id"]),
                    )
                    continue
                break
            conn.execute(
                "UPDATE submissions SET status = 'running', attempts = attempts + 1, updated_at = ?"
                " WHERE id = ?",
                (now, row["id"]),
            )
            open_row = conn.execute(
                "SELECT id, round_seed FROM evaluations WHERE submission_id = ? AND finished_at IS NULL"
                " ORDER BY id DESC LIMIT 1",
                (row["id"],),
            ).fetchone()
            seed: int | None = None
            if open_row is not None:
                evaluation_id = int(open_row["id"])
                if isinstance(open_row["round_seed"], int):
                    seed = open_row["round_seed"]
            else:
                cursor = conn.execute(
                    "INSERT INTO evaluations (submission_id, started_at) VALUES (?, ?)", (row["id"], now)
                )
                evaluation_id = int(cursor.lastrowid or 0)
            return QueuedEvaluation(
                submission_id=int(row["id"]),
                evaluation_id=evaluation_id,
                submission=submission,
                attempt=attempts + 1,
                round_seed=seed,
            )

    def release(self, claim: QueuedEvaluation, not_before: float) -> None:
        """Give a claim back untried (its round seed could not be read): no attempt is counted."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE submissions SET status = 'queued', attempts = MAX(attempts - 1, 0), not_before = ?,"
                " updated_at = ? WHERE id = ? AND status = 'running'",
                (not_before, time.time(), claim.submission_id),
            )

    def plan_evaluation(
        self, evaluation_id: int, seed: int, items: Sequence[ItemKey]
    ) -> dict[ItemKey, SampleResult]:
        """Record the evaluation's round seed and sampled items; return the samples already answered.

        Called before any request is sent, so a crash at any later point resumes with the same items.
        Answered samples of those items come back to be skipped; failed ones (timeout, dropped
        connection) do not, since an interruption such as a dockerd restart is what makes requests fail,
        and they are asked again. If the items differ from those recorded (the configuration or the
        dataset changed), samples of items no longer in the plan are dropped so the score covers one set.
        """
        wanted = {(str(subset), str(item)) for subset, item in items}
        done: dict[ItemKey, SampleResult] = {}
        with self._transaction() as conn:
            row = conn.execute("SELECT items FROM evaluations WHERE id = ?", (evaluation_id,)).fetchone()
            if row is None:
                raise KeyError(f"no evaluation {evaluation_id}")
            previous = _item_keys(row["items"])
            if previous is not None and previous != wanted:
                stale = [
                    key
                    for key in conn.execute(
                        "SELECT subset, item_id FROM sample_results WHERE evaluation_id = ?", (evaluation_id,)
                    ).fetchall()
                    if (key[0], key[1]) not in wanted
                ]
                conn.executemany(
                    "DELETE FROM sample_results WHERE evaluation_id = ? AND subset = ? AND item_id = ?",
                    [(evaluation_id, key[0], key[1]) for key in stale],
                )
                log.warning(
                    "the evaluation's items changed since it began (configuration or dataset changed);"
                    " samples of items no longer sampled are dropped",
                    evaluation_id=evaluation_id,
                    dropped=len(stale),
                )
            conn.execute(
                "UPDATE evaluations SET round_seed = ?, items = ? WHERE id = ?",
                (seed, json.dumps(sorted(wanted)), evaluation_id),
            )
            for r in conn.execute(
                "SELECT * FROM sample_results WHERE evaluation_id = ? AND error IS NULL", (evaluation_id,)
            ).fetchall():
                try:
                    result = _sample(r)
                except (TypeError, ValueError) as exc:
                    # Asked again rather than trusted or fatal.
                    log.error(
                        "malformed row in the store; the sample will be asked again",
                        evaluation_id=evaluation_id,
                        subset=r["subset"],
                        item_id=r["item_id"],
                        error=str(exc),
                    )
                    continue
                if (result.subset, result.item_id) in wanted:
                    done[(result.subset, result.item_id)] = result
        return done

    def save_sample(self, evaluation_id: int, result: SampleResult) -> None:
        """Keep one sample's outcome as soon as it is known.

        Each item is kept once per evaluation (the table's primary key); a failed sample asked again on a
        resumed evaluation is replaced by its new outcome, an answered one is never overwritten.
        """
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO sample_results"
                " (evaluation_id, subset, item_id, score, response, error, latency_s, speech)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (evaluation_id, subset, item_id) DO UPDATE SET score = excluded.score,"
                " response = excluded.response, error = excluded.error, latency_s = excluded.latency_s,"
                " speech = excluded.speech WHERE sample_results.error IS NOT NULL",
                (
                    evaluation_id,
                    result.subset,
                    result.item_id,
                    result.score,
                    result.response,
                    result.error,
                    result.latency_s,
                    None if result.speech is None else json.dumps(dataclasses.asdict(result.speech)),
                ),
            )

    def finish_evaluation(self, claim: QueuedEvaluation, result: EvaluationResult) -> None:
        """Record a finished evaluation: scored, or rejected for the miner's fault (score 0)."""
        now = time.time()
        status = "evaluated" if result.ok else "rejected"
        with self._transaction() as conn:
            conn.execute(
                "UPDATE evaluations SET finished_at = ?, score = ?, error = ?, duration_s = ?,"
                " round_seed = ?, details = ? WHERE id = ?",
                (
                    now,
                    result.score,
                    result.error,
                    result.duration_s,
                    result.seed,
                    json.dumps(result.details, sort_keys=True),
                    claim.evaluation_id,
                ),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO subset_scores VALUES (?, ?, ?, ?, ?)",
                [(claim.evaluation_id, s.subset, s.score, s.samples, s.failures) for s in result.subsets],
            )
            conn.execute(
                "UPDATE submissions SET status = ?, last_error = ?, fingerprints = ?, updated_at = ?"
                " WHERE id = ?",
                (status, result.error, json.dumps(sorted(result.fingerprints)), now, claim.submission_id),
            )
            sub = claim.submission
            conn.executemany(
                "INSERT OR IGNORE INTO fingerprints (fingerprint, hotkey, commit_block, submission_id)"
                " VALUES (?, ?, ?, ?)",
                [(fp, sub.hotkey, sub.block, claim.submission_id) for fp in sorted(result.fingerprints)],
            )

    def fail_evaluation(self, claim: QueuedEvaluation, error: str, retry_at: float | None) -> None:
        """Record that our side failed; queue it again at ``retry_at``, or give up when None.

        A retried evaluation stays open (with the error noted) so the retry continues it: the samples
        answered so far are kept and not asked again.
        """
        now = time.time()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE evaluations SET finished_at = ?, error = ? WHERE id = ?",
                (None if retry_at is not None else now, error, claim.evaluation_id),
            )
            conn.execute(
                "UPDATE submissions SET status = ?, not_before = ?, last_error = ?, updated_at = ?"
                " WHERE id = ?",
                (
                    "queued" if retry_at is not None else "failed",
                    retry_at or 0,
                    error,
                    now,
                    claim.submission_id,
                ),
            )

    def pending_count(self) -> int:
        """Submissions waiting for or under evaluation."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM submissions WHERE status IN ('queued', 'running')"
            ).fetchone()
        return int(row[0])

    # --- scores and weights --------------------------------------------------------------------

    def standings(self, neurons: Sequence[Neuron]) -> list[Standing]:
        """Each registered neuron's current standing: its newest finished submission since it registered,
        with the scores of that submission's valid evaluations and its fingerprints.

        A neuron whose newest revision is still in the queue keeps its previous standing meanwhile, so
        committing a new revision never drops a miner to zero. A rejected submission has no valid
        evaluation, so it stands with no scores. A neuron never evaluated is absent.
        """
        standings: list[Standing] = []
        with self._lock:
            for neuron in neurons:
                row = self._conn.execute(
                    "SELECT id, commit_block, fingerprints FROM submissions"
                    " WHERE hotkey = ? AND commit_block >= ? AND status IN (?, ?)"
                    " ORDER BY commit_block DESC, id DESC LIMIT 1",
                    (neuron.hotkey, neuron.registered_block, *SCORED_STATUSES),
                ).fetchone()
                if row is None:
                    continue
                scores = self._conn.execute(
                    "SELECT score FROM evaluations WHERE submission_id = ? AND finished_at IS NOT NULL"
                    " AND error IS NULL AND score IS NOT NULL ORDER BY id",
                    (row["id"],),
                ).fetchall()
                try:
                    standing = Standing(
                        uid=neuron.uid,
                        hotkey=neuron.hotkey,
                        commit_block=int(row["commit_block"]),
                        scores=tuple(float(r["score"]) for r in scores),
                        fingerprints=frozenset(json.loads(row["fingerprints"])),
                    )
                except (TypeError, ValueError) as exc:
                    # One unreadable row must not stop every miner's weights: this one is left out.
                    log.error(
                        "malformed row in the store; this miner is left out of the weights",
                        submission_id=row["id"],
                        uid=neuron.uid,
                        hotkey=neuron.hotkey,
                        error=str(exc),
                    )
                    continue
                standings.append(standing)
        return standings

    def record_weight_set(
        self,
        block: int,
        weights: dict[int, float],
        success: bool,
        message: str,
        *,
        leader: str | None = None,
        dry_run: bool = False,
        refusal: str | None = None,
    ) -> None:
        """Keep every weight set attempt, including refused ones (with the kind of refusal) and dry runs."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO weight_sets"
                " (created_at, block, weights, success, message, leader, dry_run, refusal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    block,
                    json.dumps({str(k): v for k, v in weights.items()}),
                    int(success),
                    message,
                    leader,
                    int(dry_run),
                    refusal,
                ),
            )

    def last_weight_set(self, *, successful_only: bool = True) -> WeightSetRow | None:
        """The newest recorded weight set; with ``successful_only``, the newest accepted or dry-run one."""
        where = "WHERE success = 1 OR dry_run = 1" if successful_only else ""
        with self._lock:
            row = self._conn.execute(f"SELECT * FROM weight_sets {where} ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return WeightSetRow(
            created_at=float(row["created_at"]),
            block=int(row["block"]),
            weights={int(k): float(v) for k, v in json.loads(row["weights"]).items()},
            success=bool(row["success"]),
            message=str(row["message"]),
            leader=row["leader"],
            dry_run=bool(row["dry_run"]),
            refusal=row["refusal"],
        )

    def fingerprint_history(self, fingerprints: Iterable[str]) -> dict[str, dict[str, int]]:
        """For each fingerprint, every hotkey that ever submitted it with its earliest commitment block.

        Covers every evaluated submission ever stored, deregistered hotkeys included.
        """
        wanted = sorted(set(fingerprints))
        history: dict[str, dict[str, int]] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                rows = self._conn.execute(
                    "SELECT fingerprint, hotkey, MIN(commit_block) AS block FROM fingerprints"
                    f" WHERE fingerprint IN ({', '.join('?' * len(chunk))}) GROUP BY fingerprint, hotkey",
                    chunk,
                ).fetchall()
                for row in rows:
                    history.setdefault(str(row["fingerprint"]), {})[str(row["hotkey"])] = int(row["block"])
        return history

    def set_fact(self, name: str, value: Mapping[str, object] | None) -> None:
        """Record (or, with None, forget) one thing learned from the chain, for the status command."""
        with self._transaction() as conn:
            if value is None:
                conn.execute("DELETE FROM chain_facts WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO chain_facts (name, value, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (name, json.dumps(dict(value), sort_keys=True), time.time()),
                )

    def facts(self) -> dict[str, dict[str, object]]:
        """Every recorded chain fact by name; an unreadable one is left out."""
        with self._lock:
            rows = self._conn.execute("SELECT name, value FROM chain_facts ORDER BY name").fetchall()
        out: dict[str, dict[str, object]] = {}
        for row in rows:
            try:
                value = json.loads(row["value"])
            except (TypeError, ValueError):
                continue
            if isinstance(value, dict):
                out[str(row["name"])] = value
        return out

    def miner_rows(self) -> list[MinerRow]:
        """Each hotkey's newest submission with its latest outcome, for status tables."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT s.*, (SELECT e.score FROM evaluations e WHERE e.submission_id = s.id"
                "             AND e.finished_at IS NOT NULL ORDER BY e.id DESC LIMIT 1) AS score"
                " FROM submissions s WHERE s.id = (SELECT s2.id FROM submissions s2"
                "   WHERE s2.hotkey = s.hotkey ORDER BY s2.commit_block DESC, s2.id DESC LIMIT 1)"
                " ORDER BY s.uid"
            ).fetchall()
        return [
            MinerRow(
                # The status table shows a malformed row (as -1) rather than failing as a whole.
                uid=_int_or(r["uid"], -1),
                hotkey=r["hotkey"],
                repo_id=r["repo_id"],
                revision=r["revision"],
                status=r["status"],
                score=None if r["score"] is None else _float_or_none(r["score"]),
                error=r["last_error"],
                commit_block=_int_or(r["commit_block"], -1),
            )
            for r in rows
        ]

    def sample_results(self, evaluation_id: int) -> list[SampleResult]:
        """Every sample kept for one evaluation."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM sample_results WHERE evaluation_id = ? ORDER BY subset, item_id",
                (evaluation_id,),
            ).fetchall()
        return [_sample(r) for r in rows]

    def last_evaluation_finished_at(self) -> float:
        """When the newest evaluation finished (0 when none has)."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(finished_at) FROM evaluations").fetchone()
        return float(row[0] or 0.0)

    def evaluation_details(self, hotkey: str, revision: str) -> list[dict[str, str]]:
        """The recorded details (judge model, revision, prompt version) of a revision's evaluations."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.details FROM evaluations e JOIN submissions s ON s.id = e.submission_id"
                " WHERE s.hotkey = ? AND s.revision = ? ORDER BY e.id",
                (hotkey, revision),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def evaluation_count(self, hotkey: str, revision: str) -> int:
        """How many evaluations a revision has had (restart tests and operators use this)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM evaluations e JOIN submissions s ON s.id = e.submission_id"
                " WHERE s.hotkey = ? AND s.revision = ?",
                (hotkey, revision),
            ).fetchone()
        return int(row[0])

    def latest_evaluation_id(self, hotkey: str, revision: str) -> int | None:
        """Id of a revision's newest finished evaluation (None when none finished)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT e.id FROM evaluations e JOIN submissions s ON s.id = e.submission_id"
                " WHERE s.hotkey = ? AND s.revision = ? AND e.finished_at IS NOT NULL"
                " ORDER BY e.id DESC LIMIT 1",
                (hotkey, revision),
            ).fetchone()
        return None if row is None else int(row[0])

    def subset_scores(self, hotkey: str, revision: str) -> dict[str, float]:
        """Per-subset 0-100 scores of a revision's newest finished evaluation (empty when none)."""
        evaluation_id = self.latest_evaluation_id(hotkey, revision)
        with self._lock:
            rows = self._conn.execute(
                "SELECT subset, score FROM subset_scores WHERE evaluation_id = ?", (evaluation_id,)
            ).fetchall()
        return {r["subset"]: float(r["score"]) for r in rows}

    def running_evaluations(self) -> list[RunningEvaluation]:
        """Evaluations under way now (opened, not finished), oldest first, with the samples saved so far."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.id, e.started_at, s.uid, s.hotkey, s.repo_id, s.revision,"
                " (SELECT COUNT(*) FROM sample_results r WHERE r.evaluation_id = e.id) AS done,"
                " (SELECT COUNT(*) FROM sample_results r WHERE r.evaluation_id = e.id"
                "  AND r.error IS NOT NULL) AS failed"
                " FROM evaluations e JOIN submissions s ON s.id = e.submission_id"
                " WHERE e.finished_at IS NULL AND s.status = 'running' ORDER BY e.id"
            ).fetchall()
        return [
            RunningEvaluation(
                evaluation_id=int(r["id"]),
                uid=int(r["uid"]),
                hotkey=r["hotkey"],
                repo_id=r["repo_id"],
                revision=r["revision"],
                started_at=float(r["started_at"]),
                samples_done=int(r["done"]),
                samples_failed=int(r["failed"]),
            )
            for r in rows
        ]


@dataclass(frozen=True)
class RunningEvaluation:
    """An evaluation under way, as the status command shows it."""

    evaluation_id: int
    uid: int
    hotkey: str
    repo_id: str
    revision: str
    started_at: float
    samples_done: int
    samples_failed: int


def _sample(row: sqlite3.Row) -> SampleResult:
    """A sample row as a result; ValueError/TypeError for a value of the wrong type."""
    score = float(row["score"])
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score {score!r} outside [0, 1]")
    return SampleResult(
        subset=str(row["subset"]),
        item_id=str(row["item_id"]),
        score=score,
        response=str(row["response"]),
        error=row["error"],
        latency_s=float(row["latency_s"]),
        speech=_speech(row["speech"]),
    )


def _speech(raw: str | None) -> SpeechDetails | None:
    """A stored SpeechDetails; ValueError/TypeError when the JSON does not hold one."""
    if raw is None:
        return None
    fields = json.loads(raw)
    if not isinstance(fields, dict):
        raise ValueError("speech details must be a JSON object")
    details = SpeechDetails(**fields)
    for name in ("content_score", "consistency", "duration_s", "clipped_fraction"):
        float(getattr(details, name))  # a string here would poison the score later: refuse it now
    return details


def _int_or(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default


def _float_or_none(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _item_keys(raw: str | None) -> set[ItemKey] | None:
    """The recorded plan of an evaluation; None when there is none (or it cannot be read)."""
    if raw is None:
        return None
    try:
        return {(str(subset), str(item)) for subset, item in json.loads(raw)}
    except (TypeError, ValueError):
        return None


def _submission(row: sqlite3.Row) -> Submission:
    return Submission(
        uid=int(row["uid"]),
        hotkey=row["hotkey"],
        repo_id=row["repo_id"],
        revision=row["revision"],
        competition=row["competition"],
        block=int(row["commit_block"]),
    )
