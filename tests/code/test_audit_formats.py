"""Audit trails across leaf formats: batches sealed in the JSON format (creditgov-record-json-1, before
the binary format) still verify, prove and name tampering next to binary ones; a JSON-format batch
interrupted before its seal is completed in its own format. Small synthetic decision logs, SQLite."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from creditgov.governance import audit, merkle


def _log(path, start: int, n: int, row_group_size: int = 50):
    ids = [hashlib.sha256(f"d{start + i}".encode()).hexdigest()[:32] for i in range(n)]
    t = pa.table({
        "decision_id": ids, "status": ["decided"] * n, "policy_hash": ["p" * 64] * n,
        "action": ["approve" if i % 3 else "decline" for i in range(n)],
        "pd": np.linspace(0.01, 0.5, n), "limit": pa.array([500.0 if i % 4 else None for i in range(n)]),
        "reasons_en": [["Few assets", "Price"][: i % 3] for i in range(n)],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path, row_group_size=row_group_size)
    return ids


@pytest.fixture()
def trail(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv(audit.URL_ENV, url)
    old, new = tmp_path / "decisions" / "old.parquet", tmp_path / "decisions" / "new.parquet"
    old_ids, new_ids = _log(old, 0, 130), _log(new, 1000, 70)
    with monkeypatch.context() as m:  # the JSON format, as the version before format 2 sealed batches
        m.setattr(merkle, "LEAF_FORMAT", merkle.FORMAT_JSON)
        audit.record_log(old, chunk_rows=64)
    audit.record_log(new, chunk_rows=64)
    return tmp_path, url, old, new, old_ids, new_ids


def _formats(db) -> list[str]:
    with closing(sqlite3.connect(db)) as c:
        return [json.loads(p)["leaf_format"] for (p,) in
                c.execute("SELECT payload FROM audit_entries WHERE kind = 'batch' ORDER BY seq")]


def test_json_and_binary_batches_verify_and_prove_side_by_side(trail):
    root, url, old, new, old_ids, new_ids = trail
    assert _formats(root / "audit.db") == [merkle.FORMAT_JSON, merkle.FORMAT_BIN]
    r = audit.verify(url)
    assert r.ok and r.decisions == 200, r.problems
    for did, fmt in ((old_ids[77], merkle.FORMAT_JSON), (new_ids[5], merkle.FORMAT_BIN)):
        p = audit.prove(did, url)
        assert p["leaf_format"] == fmt
        record = p["record"].encode() if fmt == merkle.FORMAT_JSON else bytes.fromhex(p["record"])
        fields = json.loads(record) if fmt == merkle.FORMAT_JSON else p["fields"]
        assert fields["decision_id"] == did
        path = [bytes.fromhex(h) for h in p["path"]]
        assert merkle.verify_inclusion(hashlib.sha256(b"\x00" + record).digest(), p["leaf_index"], p["tree_size"],
                                       path, bytes.fromhex(p["root"]))
        assert audit.find_decision(did, url)["decision_id"] == did


def test_an_altered_row_is_named_in_either_format(trail):
    root, url, old, new, old_ids, new_ids = trail
    for log, ids, row in ((old, old_ids, 90), (new, new_ids, 12)):
        t = pq.read_table(log)
        action = t.column("action").to_pylist()
        action[row] = "approve" if action[row] == "decline" else "decline"
        pq.write_table(t.set_column(t.column_names.index("action"), "action", pa.array(action)), log,
                       row_group_size=50)
    r = audit.verify(url)
    assert not r.ok
    text = "\n".join(r.problems)
    assert f"decision {old_ids[90]}: row 91 of old.parquet does not match its record in the trail (altered)" in text
    assert f"decision {new_ids[12]}: row 13 of new.parquet does not match its record in the trail (altered)" in text


def test_a_json_batch_interrupted_before_its_seal_is_completed_in_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = tmp_path / "decisions" / "cut.parquet"
    ids = _log(log, 0, 150)
    with monkeypatch.context() as m:  # the earlier version indexed the first chunk, then was killed
        m.setattr(merkle, "LEAF_FORMAT", merkle.FORMAT_JSON)
        m.setattr(audit, "_chain", lambda c, records: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            audit.record_log(log, url, chunk_rows=64)
    assert "incomplete" in "\n".join(audit.verify(url).problems)
    done = audit.record_log(log, url, chunk_rows=64)
    assert done.tree_size == 150 and not done.already_sealed
    assert _formats(tmp_path / "audit.db") == [merkle.FORMAT_JSON]
    r = audit.verify(url)
    assert r.ok and r.decisions == 150, r.problems
    assert audit.prove(ids[149], url)["leaf_format"] == merkle.FORMAT_JSON


def test_chunks_indexed_several_per_transaction_give_the_same_trail(tmp_path, monkeypatch):
    """The default append indexes INDEX_ROWS decisions per transaction (several chunks, the last group
    partial): the same root, index rows and positions as one transaction per chunk."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "decisions" / "grouped.parquet"
    ids = _log(log, 5000, 230)
    one = audit.record_log(log, f"sqlite:///{tmp_path / 'one.db'}", chunk_rows=64)
    monkeypatch.setattr(audit, "CHUNK_ROWS", 32)
    monkeypatch.setattr(audit, "INDEX_ROWS", 96)  # 3 chunks per transaction: 96, 96, then 38 rows
    url = f"sqlite:///{tmp_path / 'grouped.db'}"
    grouped = audit.record_log(log, url)
    assert grouped.inserted == 230 and grouped.merkle_root == one.merkle_root
    r = audit.verify(url, scan=[])
    assert r.ok and r.decisions == 230, r.problems
    with closing(sqlite3.connect(tmp_path / "grouped.db")) as c:
        rows = c.execute("SELECT position, decision_id FROM audit_decisions ORDER BY position").fetchall()
    assert [p for p, _ in rows] == list(range(230)) and [bytes(d).hex() for _, d in rows] == ids


def test_rows_inserted_in_key_order_give_the_same_index_and_skip_the_same_duplicates(tmp_path, monkeypatch):
    """From SORTED_ROWS rows on, SQLite gets a transaction's id rows in key order (positions carried along):
    the same index rows (positional and id) as in log order, and a decision already in the trail (another log
    holding it) is skipped the same way."""
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "decisions" / "first.parquet", tmp_path / "decisions" / "second.parquet"
    _log(first, 20000, 120)
    _log(second, 20050, 300)  # its first 70 decisions are the first log's last 70

    def trail(db: str, sorted_rows: int) -> tuple[list, list]:
        monkeypatch.setattr(audit, "SORTED_ROWS", sorted_rows)
        url = f"sqlite:///{tmp_path / db}"
        got = [audit.record_log(p, url, chunk_rows=64).inserted for p in (first, second)]
        problems = audit.verify(url, scan=[]).problems  # (the 70 shared ids hold other records in the second)
        assert problems[-1] == "70 in all: decisions" and not [p for p in problems if "index" in p], problems
        with closing(sqlite3.connect(tmp_path / db)) as c:
            return got, c.execute("SELECT batch, position, decision_id, leaf FROM audit_decisions "
                                  "ORDER BY batch, position").fetchall(), c.execute(
                "SELECT decision_id, batch, position FROM audit_ids ORDER BY decision_id").fetchall()

    in_order, keyed = trail("order.db", 10**9), trail("keyed.db", 16)
    assert keyed == in_order and keyed[0] == [120, 230]
    assert sorted((bytes(d), b, p) for b, p, d, _ in keyed[1]) == [(bytes(d), b, p) for d, b, p in keyed[2]]
    ids = np.frombuffer(b"".join(bytes(r[2]) for r in keyed[1]), np.uint8).reshape(-1, 16)
    order = audit._key_order(ids)  # the permutation is the blobs' bytewise order
    assert [bytes(ids[i]) for i in order] == sorted(bytes(i) for i in ids)


def test_small_dictionary_text_columns_are_read_as_dictionaries_with_the_same_leaves(tmp_path, monkeypatch):
    """Text columns stored as small dictionaries (a policy hash, catalogue reasons) are read as Arrow
    dictionaries and encoded from them; the ids are not. The root is the one of the plainly read log,
    across row groups (each its own dictionary)."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "decisions" / "dict.parquet"
    _log(log, 7000, 3000, row_group_size=1000)
    picked = audit._dictionary_columns(pq.ParquetFile(log))
    assert {"status", "policy_hash", "action", "reasons_en.list.element"} <= set(picked)
    assert "decision_id" not in picked
    a = audit.record_log(log, f"sqlite:///{tmp_path / 'audit.db'}", chunk_rows=768)
    plain = pq.read_table(log)
    assert a.merkle_root == merkle.root(merkle.leaf_hashes_for(plain, merkle.FORMAT_BIN)).hex()


def test_an_append_failing_mid_log_stops_its_index_writer_and_a_rerun_completes_it(tmp_path, monkeypatch):
    """The reader fails after some chunks were handed to the index writer: the error comes out (no hang),
    the committed chunks stay, the batch is open (verify says incomplete) and the same append completes it."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = tmp_path / "decisions" / "fail.parquet"
    _log(log, 9000, 400)
    real, calls = merkle.prepare_for, []

    def failing(table, fmt):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk read error")
        return real(table, fmt)

    with monkeypatch.context() as m:
        m.setattr(merkle, "prepare_for", failing)
        with pytest.raises(OSError, match="disk read error"):
            audit.record_log(log, url, chunk_rows=64)
    assert "incomplete" in "\n".join(audit.verify(url, scan=[]).problems)
    done = audit.record_log(log, url, chunk_rows=64)
    assert not done.already_sealed and 0 < done.inserted < 400
    r = audit.verify(url, scan=[])
    assert r.ok and r.decisions == 400, r.problems


def test_a_service_sets_a_smaller_sqlite_page_cache_for_connections_opened_after(tmp_path):
    # serve's memory grew with the store under the bulk append's 256 MiB page cache (+10.7% over 100k requests)
    from sqlalchemy import text

    from creditgov.governance import audit
    from creditgov.jobs import serve

    before = audit._cache_kib
    try:
        audit.set_cache_kib(serve.SERVE_SQLITE_CACHE_KIB)
        with audit._engine(f"sqlite:///{tmp_path / 'audit.db'}").connect() as c:
            assert c.execute(text("PRAGMA cache_size")).scalar() == -serve.SERVE_SQLITE_CACHE_KIB
    finally:
        audit.set_cache_kib(before)


def test_a_postgresql_store_of_the_earlier_layout_migrates_and_its_index_tables_are_checked(tmp_path, monkeypatch,
                                                                                             postgres):
    """On PostgreSQL: a store of the earlier layout (one table, its unique index on decision_id) is migrated to
    the id table when opened and verifies; a row of either index table changed, or the id table's unique key
    dropped, is named."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "decisions" / "pg.parquet"
    ids = _log(log, 30000, 300)
    url = postgres.url()
    assert audit.record_log(log, url, chunk_rows=64).inserted == 300
    assert audit.verify(url, scan=[]).ok
    con = postgres.connect(url.rsplit("/", 1)[1])
    try:
        cur = con.cursor()
        cur.execute("DROP TABLE audit_ids")
        cur.execute("CREATE UNIQUE INDEX audit_decisions_id ON audit_decisions (decision_id)")
        audit._engines.pop(url).dispose()  # opened again, as a new process would
        r = audit.verify(url, scan=[])
        assert r.ok and r.decisions == 300, r.problems
        cur.execute("SELECT COUNT(*) FROM audit_ids")
        assert cur.fetchone()[0] == 300
        cur.execute("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'audit_decisions_id'")
        assert cur.fetchone()[0] == 0
        assert audit.recorded([ids[0], "f" * 32], url) == {ids[0]}
        cur.execute("UPDATE audit_ids SET position = 7 WHERE decision_id = %s", (bytes.fromhex(ids[3]),))
        cur.execute("ALTER TABLE audit_ids DROP CONSTRAINT audit_ids_pkey")
        problems = audit.verify(url, scan=[]).problems
    finally:
        con.close()
    assert f"decision {ids[3]}: the id index places it at row 8 of pg.parquet, which the positional index holds " \
           f"as decision {ids[7]} (the index tables disagree)" in problems
    assert "the unique key on decision ids (the primary key of audit_ids) is missing (dropped)" in problems


def test_the_id_index_in_memory_answers_membership_like_the_store():
    """verify checks the decisions of logs on disk against the id index's keys in memory (two words a key,
    in key order); keys sharing their first word are told apart by the second."""
    keys = sorted({bytes([0] * 8 + [i]) + bytes(7) for i in (1, 5, 9)} | {bytes([7] * 16), bytes([200] * 16)})
    held = audit._HeldIds([audit._HeldIds.words(np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 16))])
    asked = [keys[2], bytes([0] * 8 + [5]) + bytes(7), bytes([0] * 8 + [6]) + bytes(7), bytes([7] * 16), bytes(16),
             bytes([255] * 16), keys[0]]
    assert held.missing(np.frombuffer(b"".join(asked), np.uint8).reshape(-1, 16)) == 3
    assert held.missing(np.zeros((0, 16), np.uint8)) == 0
    assert audit._HeldIds([]).missing(np.frombuffer(bytes(32), np.uint8).reshape(2, 16)) == 2
