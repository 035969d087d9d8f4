"""Tamper-evident audit trail of decisions, reviews, contests and prunes.

Every record is appended to a SQL store (SQLite `audit.db` by default; any SQLAlchemy URL via
CREDITGOV_AUDIT_URL) with a hash chain: hash[n] = SHA-256(seq, kind, record_id, recorded_at,
payload, hash[n-1]). `verify` recomputes the chain and names the first record that was altered,
inserted or deleted. The chain head (last seq and hash) is kept in a separate table and printed
by `creditgov audit verify`: publishing it elsewhere (a ticket, a signed email) is what protects
against someone who rewrites the whole chain. Retention is enforced by `prune`, which deletes a
prefix of the chain and appends a prune record carrying the hash it cut at, so the remaining
chain still verifies.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from creditgov.errors import CreditGovError

URL_ENV = "CREDITGOV_AUDIT_URL"
GENESIS = "0" * 64


class AuditError(CreditGovError):
    exit_code = 8


def audit_url() -> str:
    return os.environ.get(URL_ENV) or f"sqlite:///{(Path.cwd() / 'audit.db').resolve()}"


def _engine(url: str | None = None):
    from sqlalchemy import create_engine, event

    url = url or audit_url()
    eng = create_engine(url, future=True)
    if url.startswith("sqlite"):
        @event.listens_for(eng, "connect")
        def _pragmas(conn, _):  # durable appends, and readers wait instead of failing on a busy file
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
    with eng.begin() as c:
        from sqlalchemy import text

        c.execute(text("""CREATE TABLE IF NOT EXISTS audit_records (
            seq INTEGER PRIMARY KEY, kind VARCHAR(16) NOT NULL, record_id VARCHAR(64) NOT NULL,
            recorded_at VARCHAR(32) NOT NULL, payload TEXT NOT NULL, prev_hash CHAR(64) NOT NULL,
            hash CHAR(64) NOT NULL)"""))
        c.execute(text("CREATE INDEX IF NOT EXISTS audit_record_id ON audit_records (record_id)"))
        c.execute(text("CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
                       "seq INTEGER NOT NULL, hash CHAR(64) NOT NULL)"))
    return eng


def _finite(v):
    """NaN and infinities are not JSON: they are recorded as null."""
    import math

    import numpy as np

    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_finite(x) for x in v]
    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
        return None
    return v


def _canonical(payload: dict) -> str:
    return json.dumps(_finite(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_jsonable, allow_nan=False)


def _jsonable(v):
    import numpy as np

    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return str(v)


def record_hash(seq: int, kind: str, record_id: str, recorded_at: str, payload: str, prev: str) -> str:
    h = hashlib.sha256()
    for part in (str(seq), kind, record_id, recorded_at, payload, prev):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def append(records: list[tuple[str, str, dict]], url: str | None = None) -> int:
    """Append (kind, record_id, payload) records atomically, chained to the current head."""
    from sqlalchemy import text

    from sqlalchemy.exc import IntegrityError, OperationalError

    eng = _engine(url)
    for attempt in range(20):  # a concurrent writer took the same seq: re-read the head and chain again
        try:
            return _append_once(eng, records)
        except (IntegrityError, OperationalError) as exc:
            if attempt == 19:
                raise AuditError(f"audit log at {url or audit_url()}: append failed: "
                                 f"{str(exc).splitlines()[0][:200]}") from None
            import time

            time.sleep(0.05 * (attempt + 1))
    return 0


def _append_once(eng, records: list[tuple[str, str, dict]]) -> int:
    from sqlalchemy import text

    with eng.begin() as c:
        head = c.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).first()
        seq, prev = (head[0], head[1]) if head else (0, GENESIS)
        rows = []
        for kind, rid, payload in records:
            seq += 1
            at = _now()
            body = _canonical(payload)
            h = record_hash(seq, kind, rid, at, body, prev)
            rows.append({"seq": seq, "kind": kind, "record_id": rid, "recorded_at": at, "payload": body,
                         "prev_hash": prev, "hash": h})
            prev = h
        if rows:
            c.execute(text("INSERT INTO audit_records (seq, kind, record_id, recorded_at, payload, prev_hash, hash) "
                           "VALUES (:seq, :kind, :record_id, :recorded_at, :payload, :prev_hash, :hash)"), rows)
            c.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :seq, :hash) "
                           "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"),
                      {"seq": seq, "hash": prev})
    return len(rows)


def append_decisions(log: pd.DataFrame, url: str | None = None) -> int:
    """Every row of a decision log becomes one audit record (its full content; the log holds no personal data).

    Idempotent: a decision id already recorded is not appended again (decision ids are deterministic,
    so re-running or resuming a batch never duplicates a decision in the trail).
    """
    from sqlalchemy import bindparam, text

    ids = [str(i) for i in log["decision_id"]]
    known: set[str] = set()
    eng = _engine(url)
    q = text("SELECT record_id FROM audit_records WHERE kind = 'decision' AND record_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    with eng.connect() as c:
        for i in range(0, len(ids), 500):
            known.update(r[0] for r in c.execute(q, {"ids": ids[i:i + 500]}))
    records = [("decision", str(rec["decision_id"]), rec) for rec in log.to_dict("records")
               if str(rec["decision_id"]) not in known]
    return append(records, url)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    problems: list[str]


def verify(url: str | None = None) -> VerifyResult:
    from sqlalchemy import text

    eng = _engine(url)
    problems: list[str] = []
    with eng.connect() as c:
        if eng.dialect.name == "sqlite":
            check = c.execute(text("PRAGMA integrity_check")).scalar()
            if check != "ok":
                problems.append(f"SQLite integrity check failed: {check}")
        rows = c.execute(text("SELECT seq, kind, record_id, recorded_at, payload, prev_hash, hash "
                              "FROM audit_records ORDER BY seq")).all()
        head = c.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).first()
    prev, expected_seq = None, None
    for seq, kind, rid, at, payload, prev_hash, h in rows:
        name = f"record {seq} ({kind} {rid})"
        if expected_seq is None:
            # the chain starts at genesis, or where a prune cut it (its anchor is in the prune record)
            if seq != 1 and not _pruned_anchor_ok(rows, prev_hash):
                problems.append(f"{name}: chain does not start at record 1 and no prune record anchors it "
                                "(records deleted)")
        elif seq != expected_seq:
            problems.append(f"records {expected_seq} to {seq - 1} are missing before {name} (deleted)")
        elif prev_hash != prev:
            problems.append(f"{name}: does not link to the record before it (inserted, reordered or altered)")
        if record_hash(seq, kind, rid, at, payload, prev_hash) != h:
            problems.append(f"{name}: content does not match its hash (altered)")
        else:
            try:
                json.loads(payload)
            except ValueError:
                problems.append(f"{name}: payload is not valid JSON (altered)")
        prev, expected_seq = h, seq + 1
    if head is None:
        if rows:
            problems.append("chain head is missing (audit_head deleted)")
    else:
        last_seq, last_hash = (rows[-1][0], rows[-1][6]) if rows else (0, GENESIS)
        if (head[0], head[1]) != (last_seq, last_hash):
            problems.append(f"chain head says record {head[0]} but the last record is {last_seq} "
                            "(records appended or deleted at the end)")
    return VerifyResult(not problems, len(rows), head[0] if head else 0, head[1] if head else GENESIS, problems)


def _pruned_anchor_ok(rows, first_prev_hash: str) -> bool:
    for _, kind, _, _, payload, _, _ in rows:
        if kind == "prune":
            try:
                if json.loads(payload).get("cut_hash") == first_prev_hash:
                    return True
            except ValueError:
                return False
    return False


def exists(url: str | None = None) -> bool:
    """False for a default SQLite store that was never written (reading must not create one)."""
    url = url or audit_url()
    return not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists()


def events_for(decision_id: str, url: str | None = None) -> list[dict]:
    """Review and contest records about a decision, oldest first (for the per-decision report)."""
    from sqlalchemy import text

    eng = _engine(url)
    with eng.connect() as c:
        rows = c.execute(text("SELECT seq, kind, recorded_at, payload FROM audit_records "
                              "WHERE kind IN ('review', 'contest') AND record_id = :rid ORDER BY seq"),
                         {"rid": decision_id}).all()
    return [{"seq": s, "kind": k, "recorded_at": at, **json.loads(p)} for s, k, at, p in rows]


def find_decision(decision_id: str, url: str | None = None) -> dict:
    from sqlalchemy import text

    eng = _engine(url)
    with eng.connect() as c:
        row = c.execute(text("SELECT payload FROM audit_records WHERE kind = 'decision' AND record_id = :rid "
                             "ORDER BY seq DESC LIMIT 1"), {"rid": decision_id}).first()
    if row is None:
        raise AuditError(f"decision {decision_id} is not in the audit log at {audit_url() if url is None else url}")
    return json.loads(row[0])


def prune(retention_months: int, url: str | None = None, now: datetime | None = None) -> int:
    """Delete decision records older than the retention period (a prefix of the chain) and record the prune."""
    from sqlalchemy import text

    now = now or datetime.now(timezone.utc)
    cutoff = (now - timedelta(days=round(30.4375 * retention_months))).isoformat(timespec="microseconds")
    eng = _engine(url)
    with eng.begin() as c:
        rows = c.execute(text("SELECT seq, kind, recorded_at, hash FROM audit_records ORDER BY seq")).all()
        cut = 0
        for seq, kind, at, h in rows:
            if at < cutoff:
                cut = seq
            else:
                break
        if cut == 0:
            pruned = 0
        else:
            cut_hash = next(h for seq, _, _, h in rows if seq == cut)
            pruned = c.execute(text("DELETE FROM audit_records WHERE seq <= :cut"), {"cut": cut}).rowcount
    if cut:
        append([("prune", f"prune-{cut}", {"pruned_through_seq": cut, "records": pruned, "cut_hash": cut_hash,
                                           "retention_months": retention_months, "cutoff": cutoff})], url)
    return pruned if cut else 0
