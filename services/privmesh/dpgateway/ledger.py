"""The persistent privacy-budget ledger (SQLite by default, PostgreSQL in production).

Caps and spending per (analyst, dataset), and optionally per dataset across analysts (analyst "*"). A
query's cost is reserved in ONE transaction that locks the analyst's and the dataset-wide rows and checks
spent + reserved + cost <= cap for both, exactly (loss.py: sums round up, what remains rounds down). SQLite's
BEGIN IMMEDIATE serializes writers across processes; PostgreSQL's SELECT ... FOR UPDATE locks the rows, always
analyst first, then "*", so no deadlock. Only then is data read. On success the reservation becomes spending
in one transaction with the stored release; it is refunded only when the query failed before any data was
read. Committed spending is never undone. A reservation left by a crashed process is charged in full at the
next start (`recover_stale`): nobody can prove its query read no data.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from privmesh.dpgateway.datasets import now_us
from privmesh.dpgateway.loss import Exact, Loss, exact, fits, left, rounded_up
from privmesh.runtime.db import Cursor, Database

WIDE = "*"  # the analyst name of a dataset-wide budget

_BUDGET_COLUMNS = "has_cap, cap_eps, cap_delta, cap_rho, spent_eps, spent_delta, spent_rho, update_us, etag"


class NoBudget(Exception):
    """The analyst has no cap on the dataset."""


class BudgetExceeded(Exception):
    """The cost does not fit what remains (which: "analyst" or "dataset")."""

    def __init__(self, which: str) -> None:
        super().__init__(which)
        self.which = which


class EtagMismatch(Exception):
    pass


@dataclass(frozen=True)
class Budget:
    dataset_id: str
    analyst: str
    cap: Loss | None
    spent_exact: Exact  # summed from the ledger's entries, without rounding
    reserved_exact: Exact
    update_us: int
    etag: str

    @property
    def spent(self) -> Loss:
        return rounded_up(self.spent_exact)

    @property
    def reserved(self) -> Loss:
        return rounded_up(self.reserved_exact)

    @property
    def used(self) -> Exact:
        return (self.spent_exact[0] + self.reserved_exact[0], self.spent_exact[1] + self.reserved_exact[1],
                self.spent_exact[2] + self.reserved_exact[2])

    @property
    def remaining(self) -> Loss:
        if self.cap is None:
            return Loss()
        return left(self.cap, self.used)


@dataclass(frozen=True)
class LedgerEntry:
    sequence: int
    time_us: int
    kind: str  # "SPEND" or "CAP_SET"
    dataset_id: str
    analyst: str
    principal: str
    state: str  # "RESERVED", "COMMITTED", "REFUNDED" or "" (CAP_SET)
    query_digest: str
    release_id: str
    reserved: Loss
    charged: Loss
    cached: bool
    cap: Loss | None
    remaining: Loss
    update_us: int


@dataclass(frozen=True)
class Reservation:
    sequence: int
    cost: Loss
    remaining: Loss  # what the caller can still spend, reservation included


@dataclass(frozen=True)
class StoredRequest:
    fingerprint: str
    release_id: str
    charged: Loss


def _loss(values: Sequence[Any]) -> Loss:
    return Loss(float(values[0] or 0.0), float(values[1] or 0.0), float(values[2] or 0.0))


def _budget(dataset_id: str, analyst: str, row: Sequence[Any], spent: Exact, reserved: Exact) -> Budget:
    cap = _loss(row[1:4]) if row[0] else None
    return Budget(dataset_id, analyst, cap, spent, reserved, int(row[7]), str(row[8]))


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db
        real = "DOUBLE PRECISION"
        serial = "BIGSERIAL PRIMARY KEY" if db.dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        losses = ", ".join(f"{p}_{c} {real}" for p in ("res", "chg", "cap", "rem") for c in ("eps", "delta", "rho"))
        with db.transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS dp_budgets (dataset_id TEXT NOT NULL, analyst TEXT NOT NULL, "
                        f"has_cap INTEGER NOT NULL, cap_eps {real}, cap_delta {real}, cap_rho {real}, "
                        f"spent_eps {real} NOT NULL, spent_delta {real} NOT NULL, spent_rho {real} NOT NULL, "
                        "update_us BIGINT NOT NULL, etag TEXT NOT NULL, PRIMARY KEY (dataset_id, analyst))")
            cur.execute(f"CREATE TABLE IF NOT EXISTS dp_ledger (seq {serial}, time_us BIGINT NOT NULL, "
                        "kind TEXT NOT NULL, dataset_id TEXT NOT NULL, analyst TEXT NOT NULL, principal TEXT NOT NULL, "
                        "state TEXT NOT NULL, query_digest TEXT NOT NULL, release_id TEXT NOT NULL, "
                        f"cached INTEGER NOT NULL, has_cap INTEGER NOT NULL, {losses}, update_us BIGINT NOT NULL)")
            cur.execute("CREATE INDEX IF NOT EXISTS dp_ledger_state ON dp_ledger (state, dataset_id, analyst)")
            cur.execute("CREATE TABLE IF NOT EXISTS dp_releases (release_id TEXT PRIMARY KEY, "
                        "dataset_id TEXT NOT NULL, dataset_uid TEXT NOT NULL, analyst TEXT NOT NULL, "
                        "query_digest TEXT NOT NULL, body TEXT NOT NULL, create_us BIGINT NOT NULL)")
            cur.execute("CREATE INDEX IF NOT EXISTS dp_releases_cache ON dp_releases "
                        "(analyst, dataset_uid, query_digest, create_us)")
            cur.execute("CREATE TABLE IF NOT EXISTS dp_requests (principal TEXT NOT NULL, request_id TEXT NOT NULL, "
                        f"fingerprint TEXT NOT NULL, release_id TEXT NOT NULL, chg_eps {real} NOT NULL, "
                        f"chg_delta {real} NOT NULL, chg_rho {real} NOT NULL, create_us BIGINT NOT NULL, "
                        "PRIMARY KEY (principal, request_id))")

    # --- budgets -------------------------------------------------------------------------------------------

    def _lock_budget(self, cur: Cursor, dataset_id: str, analyst: str) -> Budget | None:
        select = f"SELECT {_BUDGET_COLUMNS} FROM dp_budgets WHERE dataset_id = ? AND analyst = ?"  # noqa: S608
        cur.execute(self.db.locking(select), (dataset_id, analyst))
        row = cur.fetchone()
        return None if row is None else _budget(dataset_id, analyst, row, *self._sums(cur, dataset_id, analyst))

    @staticmethod
    def _sums(cur: Cursor, dataset_id: str, analyst: str) -> tuple[Exact, Exact]:
        """What was spent and what in-flight queries hold, summed exactly from the entries (no running total
        to drift, no rounding to pass a cap)."""
        mine = "" if analyst == WIDE else " AND analyst = ?"
        cur.execute("SELECT state, res_eps, res_delta, res_rho, chg_eps, chg_delta, chg_rho "  # noqa: S608
                    f"FROM dp_ledger WHERE state IN ('RESERVED', 'COMMITTED') AND dataset_id = ?{mine}",
                    (dataset_id,) if analyst == WIDE else (dataset_id, analyst))
        rows = cur.fetchall()
        return (exact(_loss(r[4:7]) for r in rows if r[0] == "COMMITTED"),
                exact(_loss(r[1:4]) for r in rows if r[0] == "RESERVED"))

    def _ensure_wide(self, cur: Cursor, dataset_id: str) -> None:
        cur.execute("INSERT INTO dp_budgets (dataset_id, analyst, has_cap, spent_eps, spent_delta, spent_rho, "
                    "update_us, etag) VALUES (?, ?, 0, 0, 0, 0, ?, ?) "
                    "ON CONFLICT (dataset_id, analyst) DO NOTHING", (dataset_id, WIDE, now_us(), secrets.token_hex(8)))

    def _spend(self, cur: Cursor, dataset_id: str, analyst: str, spent: Loss) -> None:
        """Adds to the running total of a (locked) budget row, rounded up, for readers of the table; the checks
        use the exact sum of the entries."""
        cur.execute(self.db.locking("SELECT spent_eps, spent_delta, spent_rho FROM dp_budgets "
                                    "WHERE dataset_id = ? AND analyst = ?"), (dataset_id, analyst))
        now_spent = _loss(cur.fetchone()) + spent
        cur.execute("UPDATE dp_budgets SET spent_eps = ?, spent_delta = ?, spent_rho = ?, update_us = ?, etag = ? "
                    "WHERE dataset_id = ? AND analyst = ?",
                    (*_parts(now_spent), now_us(), secrets.token_hex(8), dataset_id, analyst))

    def get_budget(self, dataset_id: str, analyst: str) -> Budget | None:
        with self.db.transaction() as cur:
            return self._lock_budget(cur, dataset_id, analyst)

    def set_budget(self, dataset_id: str, analyst: str, cap: Loss | None, expected_etag: str,
                   principal: str) -> Budget:
        now, etag = now_us(), secrets.token_hex(8)
        with self.db.transaction() as cur:
            current = self._lock_budget(cur, dataset_id, analyst)
            if expected_etag and (current is None or not secrets.compare_digest(current.etag, expected_etag)):
                raise EtagMismatch
            values = (1 if cap else 0, *(_parts(cap) if cap else (None, None, None)))
            if current is None:
                cur.execute("INSERT INTO dp_budgets (dataset_id, analyst, has_cap, cap_eps, cap_delta, cap_rho, "
                            "spent_eps, spent_delta, spent_rho, update_us, etag) "
                            "VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)",
                            (dataset_id, analyst, *values, now, etag))
            else:
                cur.execute("UPDATE dp_budgets SET has_cap = ?, cap_eps = ?, cap_delta = ?, cap_rho = ?, "
                            "update_us = ?, etag = ? WHERE dataset_id = ? AND analyst = ?",
                            (*values, now, etag, dataset_id, analyst))
            budget = self._lock_budget(cur, dataset_id, analyst)
            assert budget is not None
            self._entry(cur, "CAP_SET", dataset_id, analyst, principal, "", "", "", Loss(), Loss(), False, cap,
                        budget.remaining)
        return budget

    # --- spending ------------------------------------------------------------------------------------------

    def reserve(self, dataset_id: str, analyst: str, cost: Loss, digest: str, principal: str) -> Reservation:
        """Reserves `cost` against both caps atomically; NoBudget or BudgetExceeded change nothing."""
        with self.db.transaction() as cur:
            own = self._lock_budget(cur, dataset_id, analyst)
            if own is None or own.cap is None:
                raise NoBudget
            self._ensure_wide(cur, dataset_id)
            wide = self._lock_budget(cur, dataset_id, WIDE)
            assert wide is not None
            if not fits(own.used, cost, own.cap):
                raise BudgetExceeded("analyst")
            if wide.cap is not None and not fits(wide.used, cost, wide.cap):
                raise BudgetExceeded("dataset")
            remaining = own.remaining.minus(cost)
            if wide.cap is not None:
                remaining = remaining.smaller(wide.remaining.minus(cost))
            sequence = self._entry(cur, "SPEND", dataset_id, analyst, principal, "RESERVED", digest, "", cost, Loss(),
                                   False, None, remaining)
        return Reservation(sequence, cost, remaining)

    def commit(self, reservation: Reservation, release_id: str, dataset_uid: str, body: str | None,
               request: tuple[str, str, str] | None = None) -> Loss:
        """Turns the reservation into spending and stores the release with it (none when the query failed after
        reading data: its cost stays charged); returns what remains."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT state, dataset_id, analyst, query_digest FROM dp_ledger WHERE seq = ?"),
                        (reservation.sequence,))
            state, dataset_id, analyst, digest = cur.fetchone()
            if state == "RESERVED":  # (a reservation charged by recover_stale stays as it is)
                self._lock_budget(cur, dataset_id, analyst)
                self._lock_budget(cur, dataset_id, WIDE)
                self._spend(cur, dataset_id, analyst, reservation.cost)
                self._spend(cur, dataset_id, WIDE, reservation.cost)
                cur.execute("UPDATE dp_ledger SET state = 'COMMITTED', chg_eps = ?, chg_delta = ?, chg_rho = ? "
                            "WHERE seq = ?", (*_parts(reservation.cost), reservation.sequence))
            remaining = self._remaining(cur, dataset_id, analyst)
            cur.execute("UPDATE dp_ledger SET release_id = ?, rem_eps = ?, rem_delta = ?, rem_rho = ?, update_us = ? "
                        "WHERE seq = ?", (release_id, *_parts(remaining), now_us(), reservation.sequence))
            if body is not None:
                cur.execute("INSERT INTO dp_releases (release_id, dataset_id, dataset_uid, analyst, query_digest, "
                            "body, create_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (release_id, dataset_id, dataset_uid, analyst, digest, body, now_us()))
            if request is not None and body is not None:
                self._save_request(cur, request, release_id, reservation.cost)
        return remaining

    def refund(self, reservation: Reservation) -> None:
        """Gives a reservation back: only for queries that failed before reading any data."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT state, dataset_id, analyst FROM dp_ledger WHERE seq = ?"),
                        (reservation.sequence,))
            state, dataset_id, analyst = cur.fetchone()
            if state != "RESERVED":
                return
            self._lock_budget(cur, dataset_id, analyst)
            cur.execute("UPDATE dp_ledger SET state = 'REFUNDED', update_us = ? WHERE seq = ?",
                        (now_us(), reservation.sequence))
            remaining = self._remaining(cur, dataset_id, analyst)
            cur.execute("UPDATE dp_ledger SET rem_eps = ?, rem_delta = ?, rem_rho = ? WHERE seq = ?",
                        (*_parts(remaining), reservation.sequence))

    def record_repeat(self, dataset_id: str, analyst: str, digest: str, release_id: str, principal: str,
                      request: tuple[str, str, str] | None = None) -> Loss:
        """Records a cached repeat (a zero-cost spend) and returns what remains."""
        with self.db.transaction() as cur:
            remaining = self._remaining(cur, dataset_id, analyst)
            self._entry(cur, "SPEND", dataset_id, analyst, principal, "COMMITTED", digest, release_id, Loss(), Loss(),
                        True, None, remaining)
            if request is not None:
                self._save_request(cur, request, release_id, Loss())
        return remaining

    def recover_stale(self, older_than_us: int) -> int:
        """Charges in full every reservation older than the given time (its process died mid-query)."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT seq, dataset_id, analyst, res_eps, res_delta, res_rho FROM dp_ledger "
                                        "WHERE state = 'RESERVED' AND time_us < ?"), (older_than_us,))
            stale = cur.fetchall()
            for seq, dataset_id, analyst, *amount in stale:
                cost = _loss(amount)
                self._spend(cur, dataset_id, analyst, cost)
                self._spend(cur, dataset_id, WIDE, cost)
                cur.execute("UPDATE dp_ledger SET state = 'COMMITTED', chg_eps = ?, chg_delta = ?, chg_rho = ?, "
                            "update_us = ? WHERE seq = ?", (*_parts(cost), now_us(), seq))
        return len(stale)

    def remaining(self, dataset_id: str, analyst: str) -> Loss:
        with self.db.transaction() as cur:
            return self._remaining(cur, dataset_id, analyst)

    def _remaining(self, cur: Cursor, dataset_id: str, analyst: str) -> Loss:
        own = self._lock_budget(cur, dataset_id, analyst)
        left = own.remaining if own is not None else Loss()
        wide = self._lock_budget(cur, dataset_id, WIDE)
        if wide is not None and wide.cap is not None and analyst != WIDE:
            left = left.smaller(wide.remaining)
        return left

    # --- entries, releases, requests -----------------------------------------------------------------------

    def _entry(self, cur: Cursor, kind: str, dataset_id: str, analyst: str, principal: str, state: str, digest: str,
               release_id: str, reserved: Loss, charged: Loss, cached: bool, cap: Loss | None,
               remaining: Loss) -> int:
        now = now_us()
        cur.execute("INSERT INTO dp_ledger (time_us, kind, dataset_id, analyst, principal, state, query_digest, "
                    "release_id, cached, has_cap, res_eps, res_delta, res_rho, chg_eps, chg_delta, chg_rho, cap_eps, "
                    "cap_delta, cap_rho, rem_eps, rem_delta, rem_rho, update_us) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                    (now, kind, dataset_id, analyst, principal, state, digest, release_id, int(cached),
                     1 if cap else 0, *_parts(reserved), *_parts(charged), *(_parts(cap) if cap else (0, 0, 0)),
                     *_parts(remaining), now))
        return int(cur.fetchone()[0])

    def entries(self, dataset_id: str, analyst: str, after: int, limit: int) -> list[LedgerEntry]:
        where, params = ["seq > ?"], [after]
        if dataset_id:
            where.append("dataset_id = ?")
            params.append(dataset_id)  # type: ignore[arg-type]
        if analyst:
            where.append("analyst = ?")
            params.append(analyst)  # type: ignore[arg-type]
        rows = self.db.read("SELECT seq, time_us, kind, dataset_id, analyst, principal, state, query_digest, "  # noqa: S608
                            "release_id, res_eps, res_delta, res_rho, chg_eps, chg_delta, chg_rho, cached, has_cap, "
                            "cap_eps, cap_delta, cap_rho, rem_eps, rem_delta, rem_rho, update_us FROM dp_ledger WHERE "
                            + " AND ".join(where) + " ORDER BY seq LIMIT ?", (*params, limit))
        return [LedgerEntry(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], _loss(r[9:12]),
                            _loss(r[12:15]), bool(r[15]), _loss(r[17:20]) if r[16] else None, _loss(r[20:23]),
                            int(r[23])) for r in rows]

    def find_release(self, analyst: str, dataset_uid: str, digest: str) -> tuple[str, str] | None:
        """The newest release with this query key: (release_id, body)."""
        rows = self.db.read("SELECT release_id, body FROM dp_releases WHERE analyst = ? AND dataset_uid = ? AND "
                            "query_digest = ? ORDER BY create_us DESC LIMIT 1", (analyst, dataset_uid, digest))
        return (rows[0][0], rows[0][1]) if rows else None

    def release_body(self, release_id: str) -> str | None:
        rows = self.db.read("SELECT body FROM dp_releases WHERE release_id = ?", (release_id,))
        return rows[0][0] if rows else None

    def find_request(self, principal: str, request_id: str) -> StoredRequest | None:
        rows = self.db.read("SELECT fingerprint, release_id, chg_eps, chg_delta, chg_rho FROM dp_requests WHERE "
                            "principal = ? AND request_id = ? AND create_us > ?",
                            (principal, request_id, now_us() - 24 * 3600 * 1_000_000))
        return StoredRequest(rows[0][0], rows[0][1], _loss(rows[0][2:5])) if rows else None

    def remember_request(self, principal: str, request_id: str, fingerprint: str, reference: str) -> None:
        with self.db.transaction() as cur:
            self._save_request(cur, (principal, request_id, fingerprint), reference, Loss())

    def _save_request(self, cur: Cursor, request: tuple[str, str, str], release_id: str, charged: Loss) -> None:
        principal, request_id, fingerprint = request
        cur.execute("DELETE FROM dp_requests WHERE create_us < ?", (now_us() - 24 * 3600 * 1_000_000,))
        cur.execute("INSERT INTO dp_requests (principal, request_id, fingerprint, release_id, chg_eps, chg_delta, "
                    "chg_rho, create_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (principal, request_id) "
                    "DO NOTHING", (principal, request_id, fingerprint, release_id, *_parts(charged), now_us()))


def _parts(loss: Loss) -> tuple[float, float, float]:
    return loss.epsilon, loss.delta, loss.rho
