"""The run store: one SQLite file in WAL mode that survives kill -9 and concurrent readers.

Durability choices (why, briefly):
- WAL journal: readers never block the writer and see a consistent snapshot; a killed
  writer leaves only whole committed transactions (the torn WAL tail is discarded on reopen).
- ``synchronous=NORMAL``: in WAL mode this is safe against any *process* crash (kill -9,
  OOM): a COMMIT is in the OS page cache before it returns. Only an OS crash or power cut
  can drop the last few commits, never corrupt the file; a run lost that way is simply
  re-run (runs are pure functions of their config). FULL would fsync on every
  ``log_metrics`` call, which costs more than a small training step. Pass
  ``synchronous="FULL"`` where that trade-off is wrong.
- Every write is one ``BEGIN IMMEDIATE ... COMMIT``: the write lock is taken up front, so a
  second writer waits (``busy_timeout``) instead of failing half-way through.
- ``log_metrics`` is ``INSERT OR REPLACE`` on the key (run_id, step, key): a replayed batch
  never duplicates. ``start_run`` drops an earlier attempt's metrics in the same transaction
  that bumps ``attempt``, so the metrics table only ever holds the current attempt.

Claims (two drivers on one store never run the same run twice): a driver claims the runs it
is about to run in one ``BEGIN IMMEDIATE`` transaction (:meth:`Store.claim`), so of two
drivers racing for a run exactly one gets it. A claim is a lease: its driver renews it while
it lives (:meth:`Store.renew_claims`); once it lapses (the driver was killed, its machine
lost) or its owner is a process on this host that no longer exists, another driver may claim
the run and redo it. Claims live in their own table (``claims``), added to older stores on
open; the schema version is unchanged because readers never look at it.

Timestamps are stored as unix seconds (REAL); ``runs()`` turns them into UTC datetimes.
NaN metric values are stored as NULL (SQLite has no NaN) and read back as NaN.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from proxylab.config import ConfigError
from proxylab.store.lease import owner_alive
from proxylab.store.meta import environment_meta
from proxylab.store.schema import (APPLICATION_ID, BUSY_TIMEOUT_MS, FINAL_STATUSES, RUN_COLUMNS, SCHEMA,
                                   SCHEMA_VERSION, STATUSES, as_list, cell, config_dict, default_db_path,
                                   dumps, flat_config, loads, real)

if TYPE_CHECKING:  # pandas is imported by the readers only: writers (workers, the CLI) start fast
    import pandas as pd


class Store:
    """A proxylab run store (see ``docs/internals.md``); one per process and file.

    ``create=False`` raises :class:`ConfigError` when the file does not exist. A store is
    safe to share between threads (calls are serialised) and survives ``fork`` (the child
    opens its own connection).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True,
                 synchronous: str = "NORMAL") -> None:
        self.path = Path(path) if path is not None else default_db_path()
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"synchronous: {synchronous!r} is not allowed; choose NORMAL, FULL or EXTRA")
        self._synchronous = synchronous.upper()
        self._lock = threading.RLock()
        self._stale: list[sqlite3.Connection] = []  # inherited across fork; never used or closed
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: is a directory, not a proxylab store (a SQLite file)")
        if not self.path.exists():
            if not create:
                raise ConfigError(f"{self.path}: no such store; pass a path (--db) or set PROXYLAB_DB")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            conn = self._connect()
            self._init_schema(conn)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise  # busy, not bad input
            raise ConfigError(f"{self.path}: cannot be opened as a proxylab store ({e})") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        self._ensure_claims_table()

    # ---- connection and transactions -------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)  # transactions are explicit, see _write
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        def header() -> tuple[int, int]:
            return (conn.execute("PRAGMA application_id").fetchone()[0],
                    conn.execute("PRAGMA user_version").fetchone()[0])

        if header() == (APPLICATION_ID, SCHEMA_VERSION):
            return
        conn.execute("BEGIN IMMEDIATE")  # decide under the write lock: two processes may race here
        try:
            app, version = header()
            empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if app == 0 and version == 0 and empty:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif app != APPLICATION_ID:
                raise ConfigError(f"{self.path}: a SQLite database, but not a proxylab store")
            elif version != SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path}: store schema version {version} is not supported; this proxylab "
                    f"reads version {SCHEMA_VERSION}"
                    + (" (upgrade proxylab)" if version > SCHEMA_VERSION else ""))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def _c(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: SQLite connections must not cross a fork
            self._stale.append(self._conn)
            self._conn, self._pid, self._lock = self._connect(), os.getpid(), threading.RLock()
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            c = self._c
            if c.in_transaction:
                raise RuntimeError("proxylab store: cannot write inside snapshot() or another write")
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads inside this block all see one consistent state (one read transaction)."""
        with self._lock:
            c = self._c
            if c.in_transaction:  # nested: reuse the outer snapshot
                yield c
                return
            c.execute("BEGIN")
            try:
                yield c
            finally:
                c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ---- writing ------------------------------------------------------------------------
    def add_sweep(self, name: str, spec: Mapping[str, Any]) -> None:
        """Insert or update a sweep's spec (``created`` keeps its first value)."""
        with self._write() as c:
            c.execute("INSERT INTO sweeps(name, spec_json, created) VALUES (?, ?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET spec_json = excluded.spec_json",
                      (name, dumps(spec), time.time()))

    def add_runs(self, sweep: str | None, runs: Iterable[tuple[str, Any]]) -> list[str]:
        """Register runs (``(run_id, config)``; config a dict or RunConfig), pending when new.

        Runs already stored keep their status, so a restarted sweep skips what is done.
        A sweep that was not added yet is created with an empty spec. Returns the new ids.
        """
        items = [(str(rid), dumps(config_dict(cfg))) for rid, cfg in runs]
        now, new = time.time(), []
        with self._write() as c:
            if sweep is not None:
                c.execute("INSERT OR IGNORE INTO sweeps(name, spec_json, created) VALUES (?, '{}', ?)",
                          (sweep, now))
                pos = c.execute("SELECT coalesce(max(pos) + 1, 0) FROM sweep_runs WHERE sweep = ?",
                                (sweep,)).fetchone()[0]
            for i, (rid, cfg_json) in enumerate(items):
                cur = c.execute("INSERT OR IGNORE INTO runs(run_id, config_json, created) VALUES (?, ?, ?)",
                                (rid, cfg_json, now))
                if cur.rowcount:
                    new.append(rid)
                if sweep is not None:
                    c.execute("INSERT OR IGNORE INTO sweep_runs(sweep, run_id, pos) VALUES (?, ?, ?)",
                              (sweep, rid, pos + i))
        return new

    def set_sweep(self, name: str, spec: Mapping[str, Any], runs: Iterable[tuple[str, Any]]) -> int:
        """Register a sweep as exactly ``runs`` (its current expansion), in one transaction.

        Runs are added as by :meth:`add_runs`; runs linked to the sweep by an earlier,
        different spec are unlinked (they stay in the store, reachable by id). Returns how
        many were unlinked.
        """
        items = [(str(rid), dumps(config_dict(cfg))) for rid, cfg in runs]
        now = time.time()
        with self._write() as c:
            c.execute("INSERT INTO sweeps(name, spec_json, created) VALUES (?, ?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET spec_json = excluded.spec_json",
                      (name, dumps(spec), now))
            before = {r[0] for r in c.execute("SELECT run_id FROM sweep_runs WHERE sweep = ?", (name,))}
            c.execute("DELETE FROM sweep_runs WHERE sweep = ?", (name,))
            for pos, (rid, cfg_json) in enumerate(items):
                c.execute("INSERT OR IGNORE INTO runs(run_id, config_json, created) VALUES (?, ?, ?)",
                          (rid, cfg_json, now))
                c.execute("INSERT OR IGNORE INTO sweep_runs(sweep, run_id, pos) VALUES (?, ?, ?)",
                          (name, rid, pos))
        return len(before - {rid for rid, _ in items})

    def start_run(self, run_id: str, meta: Mapping[str, Any] | None = None) -> int:
        """Mark a run running, bump its attempt, drop earlier attempts' metrics; -> attempt.

        ``meta`` (device, threads, data fingerprint, ...) is merged over
        :func:`proxylab.store.meta.environment_meta` (versions, git commit, host).
        """
        meta_json = dumps({**environment_meta(), **(meta or {})}, sort_keys=True)
        with self._write() as c:
            cur = c.execute("UPDATE runs SET status = 'running', attempt = attempt + 1, started = ?, "
                            "finished = NULL, meta_json = ?, summary_json = NULL, error = NULL "
                            "WHERE run_id = ?", (time.time(), meta_json, run_id))
            if cur.rowcount == 0:
                raise KeyError(f"run {run_id!r} is not in {self.path}; add it with add_runs first")
            c.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            return c.execute("SELECT attempt FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]

    def log_metrics(self, run_id: str, rows: Iterable[tuple[int, str, float]]) -> None:
        """Write ``(step, key, value)`` rows in one transaction; replays overwrite, never duplicate."""
        data = [(run_id, int(step), str(key), real(value)) for step, key, value in rows]
        if not data:
            return
        try:
            with self._write() as c:
                c.executemany("INSERT OR REPLACE INTO metrics(run_id, step, key, value) "
                              "VALUES (?, ?, ?, ?)", data)
        except sqlite3.IntegrityError:  # the foreign key: metrics need a stored run
            raise KeyError(f"run {run_id!r} is not in {self.path}; add it with add_runs first") from None

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None,
                   error: str | None = None) -> None:
        """Record the outcome: ``done``, ``diverged`` (with its metrics) or ``failed``."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"finish_run status {status!r}: choose one of {', '.join(FINAL_STATUSES)}")
        with self._write() as c:
            cur = c.execute("UPDATE runs SET status = ?, summary_json = ?, error = ?, finished = ? "
                            "WHERE run_id = ?", (status, dumps(dict(summary or {})), error,
                                                 time.time(), run_id))
            if cur.rowcount == 0:
                raise KeyError(f"run {run_id!r} is not in {self.path}")

    def mark_pending(self, run_ids: str | Iterable[str]) -> int:
        """Put runs back to ``pending`` (e.g. the ``interrupted()`` ones); -> how many changed.

        Their partial metrics stay visible until the next ``start_run`` drops them.
        """
        ids = as_list(run_ids)
        with self._write() as c:
            cur = c.execute("UPDATE runs SET status = 'pending', finished = NULL "
                            "WHERE run_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))
            return cur.rowcount

    # ---- claims: which driver runs what (see the module doc) -----------------------------
    _CLAIMS_SQL = ("CREATE TABLE IF NOT EXISTS claims (run_id TEXT PRIMARY KEY REFERENCES "
                   "runs(run_id), owner TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID")

    def _ensure_claims_table(self) -> None:
        with self._lock:
            c = self._c
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'claims'").fetchone():
                return
        with self._write() as c:
            c.execute(self._CLAIMS_SQL)

    def claim(self, run_ids: str | Iterable[str], owner: str, lease_s: float) -> list[str]:
        """Atomically claim the runs among ``run_ids`` that are not finished and not held by
        another live driver; -> the ids now held by ``owner`` (in the given order).

        A claim of another owner is taken over when its lease has lapsed, or when that owner
        is a process of this host (``owner_id``) that no longer exists.
        """
        ids = as_list(run_ids)
        now = time.time()
        with self._write() as c:
            status = dict(c.execute("SELECT run_id, status FROM runs WHERE run_id IN "
                                    "(SELECT value FROM json_each(?))", (json.dumps(ids),)))
            held = dict(((r, (o, e)) for r, o, e in c.execute(
                "SELECT run_id, owner, expires FROM claims WHERE run_id IN "
                "(SELECT value FROM json_each(?))", (json.dumps(ids),))))
            got = []
            for rid in ids:
                if rid not in status or status[rid] in ("done", "diverged"):
                    continue
                if rid in held and held[rid][0] != owner and held[rid][1] > now \
                        and owner_alive(held[rid][0]):
                    continue
                c.execute("INSERT INTO claims(run_id, owner, expires) VALUES (?, ?, ?) "
                          "ON CONFLICT(run_id) DO UPDATE SET owner = excluded.owner, "
                          "expires = excluded.expires", (rid, owner, now + lease_s))
                got.append(rid)
            return got

    def renew_claims(self, owner: str, lease_s: float) -> int:
        """Extend every lease ``owner`` holds by ``lease_s`` from now; -> how many."""
        with self._write() as c:
            return c.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                             (time.time() + lease_s, owner)).rowcount

    def release_claims(self, owner: str, run_ids: str | Iterable[str] | None = None) -> int:
        """Drop ``owner``'s claims (all, or those among ``run_ids``); -> how many."""
        sql, args = "DELETE FROM claims WHERE owner = ?", [owner]
        if run_ids is not None:
            sql += " AND run_id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(as_list(run_ids)))
        with self._write() as c:
            return c.execute(sql, args).rowcount

    def claims(self) -> dict[str, tuple[str, float]]:
        """``{run_id: (owner, expires unix s)}`` of every claim, lapsed ones included."""
        with self.snapshot() as c:
            return {r: (o, e) for r, o, e in c.execute("SELECT run_id, owner, expires FROM claims")}

    # ---- reading: plain values ----------------------------------------------------------
    def interrupted(self, run_ids: str | Iterable[str] | None = None) -> list[str]:
        """Runs left ``running`` (by a driver that died), optionally among ``run_ids``."""
        sql, args = "SELECT run_id FROM runs WHERE status = 'running'", []
        if run_ids is not None:
            sql += " AND run_id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(as_list(run_ids)))
        with self.snapshot() as c:
            return [r[0] for r in c.execute(sql + " ORDER BY rowid", args)]

    def status_of(self, run_ids: str | Iterable[str]) -> dict[str, str]:
        """``{run_id: status}`` for the given ids that are stored (unknown ids are left out)."""
        with self.snapshot() as c:
            return dict(c.execute("SELECT run_id, status FROM runs WHERE run_id IN "
                                  "(SELECT value FROM json_each(?))", (json.dumps(as_list(run_ids)),)))

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: config (nested), meta, summary, status, attempt, times (unix s), sweeps."""
        with self.snapshot() as c:
            row = c.execute("SELECT run_id, status, attempt, created, started, finished, error, "
                            "config_json, meta_json, summary_json FROM runs WHERE run_id = ?",
                            (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"run {run_id!r} is not in {self.path}")
            sweeps = [r[0] for r in c.execute("SELECT sweep FROM sweep_runs WHERE run_id = ? "
                                              "ORDER BY sweep", (run_id,))]
        out = dict(zip(("run_id", "status", "attempt", "created", "started", "finished", "error"), row))
        return {**out, "config": loads(row[7]), "meta": loads(row[8]),
                "summary": loads(row[9]), "sweeps": sweeps}

    def resolve_id(self, prefix: str) -> str:
        """The one stored run id starting with ``prefix`` (for CLI arguments)."""
        with self.snapshot() as c:
            hits = [r[0] for r in c.execute("SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? "
                                            "LIMIT 6", (len(prefix), prefix))]
        if not hits:
            raise ConfigError(f"run id {prefix!r}: no run in {self.path} matches")
        if len(hits) > 1:
            raise ConfigError(f"run id {prefix!r} is ambiguous in {self.path} "
                              f"({', '.join(hits[:5])}, ...); give more characters")
        return hits[0]

    def sweep_spec(self, name: str) -> dict[str, Any]:
        with self.snapshot() as c:
            row = c.execute("SELECT spec_json FROM sweeps WHERE name = ?", (name,)).fetchone()
        if row is None:
            self._unknown_sweep(name)
        return loads(row[0])

    def _unknown_sweep(self, name: str) -> None:
        with self.snapshot() as c:
            names = [r[0] for r in c.execute("SELECT name FROM sweeps ORDER BY name")]
        raise ConfigError(f"sweep {name!r} is not in {self.path}; stored sweeps: "
                          f"{', '.join(names) if names else '(none)'}")

    def _check_sweep(self, c: sqlite3.Connection, name: str | None) -> None:
        if name is not None and c.execute("SELECT 1 FROM sweeps WHERE name = ?", (name,)).fetchone() is None:
            self._unknown_sweep(name)

    # ---- reading: DataFrames ------------------------------------------------------------
    def sweeps(self) -> pd.DataFrame:
        """One row per sweep: name, created, n_runs, n_<status> counts, spec (JSON text)."""
        import pandas as pd

        counts = ", ".join(f"coalesce(sum(r.status = '{s}'), 0) AS n_{s}" for s in STATUSES)
        with self.snapshot() as c:
            rows = c.execute(f"SELECT s.name, s.created, count(r.run_id), {counts}, s.spec_json "
                             "FROM sweeps s LEFT JOIN sweep_runs sr ON sr.sweep = s.name "
                             "LEFT JOIN runs r ON r.run_id = sr.run_id "
                             "GROUP BY s.name ORDER BY s.created, s.name").fetchall()
        df = pd.DataFrame(rows, columns=["name", "created", "n_runs", *(f"n_{s}" for s in STATUSES), "spec"])
        df["created"] = pd.to_datetime(df["created"].astype("float64"), unit="s", utc=True)
        return df

    def runs(self, sweep: str | None = None, status: str | Iterable[str] | None = None) -> pd.DataFrame:
        """One row per run: ``RUN_COLUMNS``, then config columns, then summary columns.

        With ``sweep``, its runs in sweep order and ``sweep`` = that name. Without, every
        run in insertion order and ``sweep`` = the sorted names of all its sweeps joined by
        ``","`` (None for runs in no sweep). Config keys are dotted (``optim.lr``; dict
        values such as ``optim.extra`` as JSON text); summary keys keep their names, except
        one that clashes with an earlier column, which becomes ``summary.KEY``.
        """
        import pandas as pd

        sql = ("SELECT r.run_id, r.status, r.attempt, r.created, r.started, r.finished, r.error, "
               "r.config_json, r.summary_json FROM runs r")
        args: list[Any] = []
        if sweep is not None:
            sql += " JOIN sweep_runs s ON s.run_id = r.run_id AND s.sweep = ?"
            args.append(sweep)
        if status is not None:
            wanted = as_list(status)
            bad = [s for s in wanted if s not in STATUSES]
            if bad:
                raise ConfigError(f"status {bad[0]!r} is not allowed; choose from {', '.join(STATUSES)}")
            sql += " WHERE r.status IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(wanted))
        sql += " ORDER BY s.pos" if sweep is not None else " ORDER BY r.rowid"
        with self.snapshot() as c:
            self._check_sweep(c, sweep)
            rows = c.execute(sql, args).fetchall()
            member: dict[str, list[str]] = {}
            if sweep is None:
                for rid, name in c.execute("SELECT run_id, sweep FROM sweep_runs ORDER BY sweep"):
                    member.setdefault(rid, []).append(name)
        records, config_cols, summary_keys = [], {}, {}
        for rid, st, attempt, created, started, finished, error, cfg_json, summary_json in rows:
            sweep_col = sweep if sweep is not None else (",".join(member[rid]) if rid in member else None)
            cfg, summary = flat_config(loads(cfg_json)), loads(summary_json)
            config_cols.update(dict.fromkeys(cfg))
            summary_keys.update(dict.fromkeys(summary))
            records.append((dict(zip(RUN_COLUMNS, (rid, sweep_col, st, attempt, created, started,
                                                   finished, error))), cfg, summary))
        taken = set(RUN_COLUMNS) | set(config_cols)
        rename = {k: (f"summary.{k}" if k in taken else k) for k in summary_keys}
        data = [{**base, **cfg, **{rename[k]: cell(v) for k, v in summary.items()}}
                for base, cfg, summary in records]
        df = pd.DataFrame(data, columns=[*RUN_COLUMNS, *config_cols, *rename.values()])
        df["attempt"] = df["attempt"].astype("int64")
        for col in ("created", "started", "finished"):
            df[col] = pd.to_datetime(df[col].astype("float64"), unit="s", utc=True)
        return df

    def metrics(self, run_ids: str | Iterable[str] | None = None, keys: str | Iterable[str] | None = None,
                sweep: str | None = None) -> pd.DataFrame:
        """Long form ``run_id, step, key, value`` sorted by (run_id, step, key)."""
        import pandas as pd

        sql, conds, args = "SELECT run_id, step, key, value FROM metrics", [], []
        if sweep is not None:
            conds.append("run_id IN (SELECT run_id FROM sweep_runs WHERE sweep = ?)")
            args.append(sweep)
        for col, values in (("run_id", run_ids), ("key", keys)):
            if values is not None:
                conds.append(f"{col} IN (SELECT value FROM json_each(?))")
                args.append(json.dumps(as_list(values)))
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        with self.snapshot() as c:
            self._check_sweep(c, sweep)
            rows = c.execute(sql + " ORDER BY run_id, step, key", args).fetchall()
        df = pd.DataFrame(rows, columns=["run_id", "step", "key", "value"])
        return df.astype({"step": "int64", "value": "float64"})

    def curves(self, run_ids: str | Iterable[str] | None = None, keys: str | Iterable[str] | None = None,
               sweep: str | None = None) -> pd.DataFrame:
        """Wide form: index (run_id, step), one float column per key (NaN where not logged)."""
        long = self.metrics(run_ids=run_ids, keys=keys, sweep=sweep)
        wide = long.pivot(index=["run_id", "step"], columns="key", values="value")
        wide.columns.name = None
        return wide

