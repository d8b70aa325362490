"""Durable job ledger (SQLite, WAL): jobs and their states survive a coordinator restart.

Every state change is one guarded UPDATE (`WHERE state IN allowed sources`), so concurrent
drivers, cancels and recoveries cannot move a job out of a terminal state: a job ends once.

Committing a result into a net is claimed first (`claim_commit`, one guarded UPDATE): from then on a
cancel or a re-queue is refused, so a cancelled job can never commit and a committing job can never be
cancelled. The claim holds the proposal, so a restart can finish (or redo) a half-done commit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.job_states import (CANCELLED, EVALUATING, FAILED, PENDING, REJECTED, RUNNING, STATES,  # noqa: F401
                                    SUCCEEDED, TERMINAL)

# target state -> states it may be reached from (RUNNING -> PENDING: a retry)
_SOURCES = {
    RUNNING: (PENDING,),
    PENDING: (RUNNING, EVALUATING),
    EVALUATING: (RUNNING,),
    SUCCEEDED: (EVALUATING,),
    REJECTED: (EVALUATING,),
    FAILED: (PENDING, RUNNING, EVALUATING),
    CANCELLED: (PENDING, RUNNING, EVALUATING),
}
_UNCLAIMED_ONLY = frozenset({CANCELLED, PENDING})  # refused once a commit is claimed
_JSON_FIELDS = ("metrics", "candidates", "commit_claim")
_COLUMNS = ("id", "spec", "state", "error", "created", "started", "finished", "attempts", "metrics",
            "adapter_module_id", "net_version", "candidates", "reason", "promoted", "commit_claim")
# columns added after the first release: (name, SQL type and default); older ledgers gain them on open
_ADDED = (("candidates", "TEXT NOT NULL DEFAULT '[]'"), ("reason", "TEXT NOT NULL DEFAULT ''"),
          ("promoted", "TEXT NOT NULL DEFAULT ''"), ("commit_claim", "TEXT NOT NULL DEFAULT ''"))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, started REAL NOT NULL DEFAULT 0, finished REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, metrics TEXT NOT NULL DEFAULT '{}',
    adapter_module_id TEXT NOT NULL DEFAULT '', net_version INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS progress (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, total INTEGER NOT NULL, loss REAL NOT NULL,
    distill_loss REAL NOT NULL, task_loss REAL NOT NULL, time REAL NOT NULL, method TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, method, step));
CREATE TABLE IF NOT EXISTS sites (
    site_id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, last_seen REAL NOT NULL);
"""


@dataclass
class JobRow:
    id: str
    spec: dict  # TransplantJobSpec as JSON (google.protobuf.json_format)
    state: str
    error: str = ""
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    attempts: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    adapter_module_id: str = ""
    net_version: int = 0
    candidates: list[dict] = field(default_factory=list)  # every method tried, with the site's figures
    reason: str = ""         # why the result did or did not enter the net
    promoted: str = ""       # set when an admin forced the result into the net
    commit_claim: dict = field(default_factory=dict)  # the proposal being committed; {} if none

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class SiteRow:
    site_id: str
    endpoint: str
    last_seen: float


class Ledger:
    """Thread-safe: one connection guarded by a lock (writes are tiny; SQLite serialises them anyway)."""

    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            _migrate_progress(self._db)
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED:
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # jobs

    def create_job(self, spec: dict) -> JobRow:
        row = JobRow(id=f"job-{uuid.uuid4().hex[:12]}", spec=spec, state=PENDING, created=time.time())
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, spec, state, created) VALUES (?, ?, ?, ?)",
                             (row.id, json.dumps(spec, sort_keys=True), row.state, row.created))
        return row

    def get_job(self, job_id: str) -> JobRow | None:
        with self._lock:
            found = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if found is None else _job(found)

    def require_job(self, job_id: str) -> JobRow:
        """A job known to exist (jobs are never deleted): for the scheduler's own jobs."""
        job = self.get_job(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} in the ledger")
        return job

    def list_jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[JobRow]:
        """Most recent first."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        args: list = list(states)
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
        query += " ORDER BY created DESC, rowid DESC"
        if limit:
            query += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [_job(r) for r in self._db.execute(query, args).fetchall()]

    def transition(self, job_id: str, state: str, **fields) -> bool:
        """Moves the job to `state` (setting `fields`) only if allowed from its current state.

        Entering RUNNING counts an attempt; terminal states stamp `finished`.
        """
        values = _encoded(fields)
        if state == RUNNING:
            values.setdefault("started", time.time())
        if state in TERMINAL:
            values.setdefault("finished", time.time())
        sets = ["state = ?"] + [f"{k} = ?" for k in values]
        if state == RUNNING:
            sets.append("attempts = attempts + 1")
        sources = _SOURCES[state]
        query = (f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? "
                 f"AND state IN ({', '.join('?' * len(sources))})")
        if state in _UNCLAIMED_ONLY:
            query += " AND commit_claim = ''"
        with self._lock:
            cursor = self._db.execute(query, [state, *values.values(), job_id, *sources])
        return cursor.rowcount == 1

    def claim_commit(self, job_id: str, proposal: dict, **fields) -> bool:
        """EVALUATING and not cancelled: from now on only this claim's holder ends the job."""
        values = _encoded({**fields, "commit_claim": proposal})
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cursor = self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND state = ? AND commit_claim = ''",
                                      [*values.values(), job_id, EVALUATING])
        return cursor.rowcount == 1

    def claimed_jobs(self) -> list[JobRow]:
        """Jobs whose commit was claimed but that never ended: a coordinator stopped mid-commit."""
        return [job for job in self.list_jobs((EVALUATING,)) if job.commit_claim]

    def record_promotion(self, job_id: str, net_version: int, promoted: str) -> bool:
        """An admin forced an evaluated job's result into a net; the job's state stays what it was."""
        with self._lock:
            cursor = self._db.execute("UPDATE jobs SET net_version = ?, promoted = ? WHERE id = ? AND state IN (?, ?)",
                                      (net_version, promoted, job_id, SUCCEEDED, REJECTED))
        return cursor.rowcount == 1

    def recover(self, max_attempts: int) -> list[str]:
        """At start-up: jobs cut off mid-run are re-queued (or failed once out of attempts).

        Returns every PENDING job id, oldest first, for the scheduler to pick up again.
        """
        for job in self.list_jobs((RUNNING, EVALUATING)):
            if job.commit_claim:
                continue  # mid-commit: finished by the server's repair, never re-run
            if job.attempts >= max_attempts:
                self.transition(job.id, FAILED, error="coordinator restarted too often "
                                f"({job.attempts} attempts, limit {max_attempts})")
            else:
                self.transition(job.id, PENDING)
        return [job.id for job in reversed(self.list_jobs((PENDING,)))]

    # progress (loss curves for reports, one per candidate method; a re-run overwrites the steps it repeats)

    def record_progress(self, job_id: str, step: int, total: int, loss: float, distill_loss: float,
                        task_loss: float, at: float, method: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (job_id, step, total, loss, distill_loss, task_loss, at, method))

    def job_progress(self, job_id: str) -> list[tuple[int, int, float, float, float, float, str]]:
        """(step, total, loss, distill_loss, task_loss, time, method) by method, then step."""
        with self._lock:
            return self._db.execute("SELECT step, total, loss, distill_loss, task_loss, time, method FROM progress "
                                    "WHERE job_id = ? ORDER BY method, step", (job_id,)).fetchall()

    # sites

    def record_site(self, site_id: str, endpoint: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO sites (site_id, endpoint, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT(site_id) DO UPDATE SET endpoint = excluded.endpoint, last_seen = excluded.last_seen",
                (site_id, endpoint, time.time()))

    def list_sites(self) -> list[SiteRow]:
        with self._lock:
            rows = self._db.execute("SELECT site_id, endpoint, last_seen FROM sites ORDER BY site_id").fetchall()
        return [SiteRow(*row) for row in rows]

    def count_jobs(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return dict(rows)

    def get_site(self, site_id: str) -> SiteRow | None:
        with self._lock:
            found = self._db.execute("SELECT site_id, endpoint, last_seen FROM sites WHERE site_id = ?",
                                     (site_id,)).fetchone()
        return None if found is None else SiteRow(*found)


def _migrate_progress(db: sqlite3.Connection) -> None:
    """Ledgers from before candidate methods keyed progress by (job, step): re-key it by method too."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(progress)")}
    if columns and "method" not in columns:
        db.executescript("ALTER TABLE progress RENAME TO progress_v1;" + _SCHEMA +
                         "INSERT INTO progress SELECT *, '' FROM progress_v1; DROP TABLE progress_v1;")


def _encoded(fields: dict) -> dict:
    unknown = set(fields) - set(_COLUMNS[3:])
    if unknown:
        raise ValueError(f"unknown job field(s) {sorted(unknown)}")
    return {k: json.dumps(v, sort_keys=True) if k in _JSON_FIELDS else v for k, v in fields.items()}


def _job(row: tuple) -> JobRow:
    doc = dict(zip(_COLUMNS, row))
    doc["spec"] = json.loads(doc["spec"])
    for key in _JSON_FIELDS:
        doc[key] = json.loads(doc[key]) if doc[key] else {}
    return JobRow(**doc)
