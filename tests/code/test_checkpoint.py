"""Checkpoints of a partitioned decide: frames come back as written, partitions are all or nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd

from creditgov.decision import checkpoint
from creditgov.decision.decide import write_log


def _awkward() -> pd.DataFrame:
    """The kinds of column a decision log holds, including those Parquet does not give back as they were."""
    return pd.DataFrame({
        "input_Income": pd.Series([130, 58, 250], dtype=object),  # whole numbers in an object column
        "input_Home": pd.Series(["owner", None, "rent"], dtype=object),
        "input_Debt": pd.Series([0.5, np.nan, 2.0], dtype=object),
        "reason_codes": [["R1", "R2"], [], ["R3"]],
        "reason_attributions": [[0.25, 0.125], [], [1.5]],
        "changed_features": [[], [], []],  # never filled: an empty-list column
        "counterfactual": [None, '{"found": false}', None],
        "quarantine_rules": [None, None, None],
        "pd": [0.1, 0.2, np.nan],
        "row_number": np.array([1, 2, 3], dtype=np.int64),
        "review_queue": [True, False, True],
    })


def test_frames_come_back_as_written(tmp_path):
    frame = _awkward()
    checkpoint.write_frame(frame, tmp_path / "f.parquet")
    back = checkpoint.read_frame(tmp_path / "f.parquet")
    assert list(back.dtypes.astype(str)) == list(frame.dtypes.astype(str))
    assert back["input_Income"].tolist() == [130, 58, 250]
    assert type(back["input_Income"].iloc[0]) is int
    assert back["reason_codes"].tolist() == [["R1", "R2"], [], ["R3"]]
    assert type(back["reason_attributions"].iloc[0]) is list
    # so the log written from it is byte-identical to the log written from the original
    a = write_log(frame, tmp_path / "a.parquet").read_bytes()
    b = write_log(back, tmp_path / "b.parquet").read_bytes()
    assert a == b


def test_whole_numbers_with_a_missing_value_come_back_whole(tmp_path):
    """A finished log part: a quarantined row has no inputs, so an object column of whole numbers has a gap."""
    frame = _awkward()
    frame["input_Income"] = pd.Series([130, np.nan, 250], dtype=object)
    checkpoint.write_frame(frame, tmp_path / "f.parquet")
    back = checkpoint.read_frame(tmp_path / "f.parquet")
    assert back["input_Income"].dtype == object
    assert [type(v) for v in back["input_Income"]] == [int, type(None), int]
    a = write_log(frame, tmp_path / "a.parquet").read_bytes()
    assert write_log(back, tmp_path / "b.parquet").read_bytes() == a  # int64 with a null, not double


def test_concatenated_checkpoints_write_the_same_log(tmp_path):
    frame = _awkward()
    whole = write_log(frame, tmp_path / "whole.parquet").read_bytes()
    pieces = []
    for k, (a, b) in enumerate([(0, 1), (1, 3)]):
        checkpoint.write_frame(frame.iloc[a:b], tmp_path / f"p{k}.parquet")
        pieces.append(checkpoint.read_frame(tmp_path / f"p{k}.parquet"))
    joined = pd.concat(pieces, ignore_index=True)
    assert write_log(joined, tmp_path / "joined.parquet").read_bytes() == whole


def test_work_dir_partitions_are_all_or_nothing(tmp_path):
    log = tmp_path / "decisions" / "app-2026-11-01-v3-abc.parquet"
    facts = {"input_hash": "abc", "version": "3", "layout": [[0, 2], [2, 1]]}
    work = checkpoint.WorkDir(log, facts)
    assert work.path.parent == tmp_path / "decisions" / checkpoint.PARTIAL
    assert work.done() == set() and not work.path.exists()
    work.open()
    work.save(1, {"rows": _awkward()}, meta={"integral": {"Income": True}})
    # a partition the kill interrupted: its temporary directory is there, the partition is not done
    killed = work.path / "part-000000.tmp-99999"
    killed.mkdir()
    (killed / "rows.parquet").write_bytes(b"PAR1 half")
    again = checkpoint.WorkDir(log, dict(facts))
    assert again.path == work.path
    assert again.done() == {1}
    again.open()
    assert not killed.exists() and again.done() == {1}
    assert again.load_meta(1) == {"integral": {"Income": True}}
    assert again.load(1, "rows")["reason_codes"].tolist() == [["R1", "R2"], [], ["R3"]]
    # saving a partition that another run already saved keeps the one there
    again.save(1, {"rows": _awkward().head(1)})
    assert len(again.load(1, "rows")) == 3
    again.save_json("pairs.json", {"0": [None, {"found": True, "cost": 0.5}]})
    assert again.load_json("pairs.json") == {"0": [None, {"found": True, "cost": 0.5}]}
    again.remove()
    assert not (tmp_path / "decisions" / checkpoint.PARTIAL).exists()


def test_any_changed_fact_gives_another_work_dir(tmp_path):
    log = tmp_path / "x.parquet"
    base = {"input_hash": "abc", "version": "3", "as_of": "2026-11-01", "pseudonym_key": "k1"}
    paths = {checkpoint.WorkDir(log, {**base, key: "other"}).path for key in base}
    assert len(paths) == len(base) and checkpoint.WorkDir(log, base).path not in paths
