"""`creditgov serve` (issue 16) as a client sees it: a real server process on 127.0.0.1 (a free port), the
session's trained application model (@champion) in a copy of its project, real HTTP.

One server for the module (start-up: imports, the model, the warm-up); its last test stops it with SIGTERM
while requests are in flight. What is checked: API keys; a served decision equals, field for field, the
batch decision of the same rows (same model version, policy and as-of; only input_source and input_hash,
which name where the rows came from, differ); refusals (422 naming field and rule, 413) and the server log
without personal data; many concurrent clients, after which `creditgov audit verify` passes and the
served records in the trail equal the 2xx decisions; human oversight (POST /v1/reviews, /v1/contests) recorded
in the trail; a graceful shutdown that loses no audit record; kill -9 under load (on a second server) after
which the trail verifies and holds every 2xx decision; start-up refusals in one line."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx
import pandas as pd
import pytest

from creditgov.jobs.serve import records as records_of
from creditgov.spec import load_spec
from helpers import (APPLICATION_FAST, cli_env, copy_project, copy_trained_project, creditgov_argv, in_project,
                     names_leaked, quiet, start_serve)

pytestmark = pytest.mark.e2e

AS_OF = "2026-11-01"
KEYS = ("serve-test-key-one", "serve-test-key-two")
PERSONAL_ID = "ZZ-PERSONAL-4711"  # an identifier that must never reach the server's log
CLIENTS = 12
REQUESTS = 96


def _start(root: Path, err, reload_seconds: float = 0, merge_delay: float | None = None) -> tuple[subprocess.Popen, str]:
    more = ("--merge-delay", str(merge_delay)) if merge_delay is not None else ()
    return start_serve(root, err, "--spec", APPLICATION_FAST, "--port", "0", "--as-of", AS_OF, "--reload-seconds",
                       str(reload_seconds), *more, env=cli_env(CREDITGOV_API_KEYS=",".join(KEYS)))


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_application_fast):
    root = copy_trained_project(trained_application_fast.root, tmp_path_factory.mktemp("serve"))
    err = open(root / "server.log", "w")
    proc, url = _start(root, err, reload_seconds=0.5)  # the @champion polled (test_champion_moved_under_load)
    yield type("Server", (), {"url": url, "root": root, "proc": proc, "log": root / "server.log"})
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    err.close()


@pytest.fixture(scope="module")
def rows(credit_data, spec):
    """credit_data rows without the target, as JSON objects (ids as the batch file reads them)."""
    frame = credit_data.drop(columns=[spec.target.column]).head(400).reset_index(drop=True)
    return frame, json.loads(frame.to_json(orient="records"))


def _client(server, key=KEYS[0]) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key} if key else {}, timeout=60)


def _served_records(root: Path) -> int:
    with closing(sqlite3.connect(root / "audit.db")) as c:
        return c.execute("SELECT COUNT(*) FROM audit_decisions d JOIN audit_batches b ON b.batch = d.batch "
                         "WHERE b.log_path LIKE ?", (f"%{os.sep}served{os.sep}%",)).fetchone()[0]


def _all_sealed(server, seconds: float = 60) -> None:
    """Wait (bounded) until the server has sealed every journaled decision into the trail (/readyz `unsealed`:
    the server's default merge delay is 1 s)."""
    deadline = time.monotonic() + seconds
    with _client(server) as c:
        while c.get("/readyz").json()["unsealed"] and time.monotonic() < deadline:
            time.sleep(0.1)


def test_api_keys(server, rows):
    body = {"rows": rows[1][:1]}
    with _client(server, None) as c:
        assert c.post("/v1/decisions", json=body).status_code == 401
        assert c.get("/healthz").status_code == 200  # liveness and readiness need no key
        assert c.get("/readyz").json()["model_version"]
    with _client(server, "serve-test-key-wrong") as c:
        r = c.post("/v1/decisions", json=body)
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert c.get("/v1/decisions/" + "0" * 32).status_code == 401
    with _client(server, KEYS[0][:-1]) as c:  # a prefix of a key is not the key
        assert c.post("/v1/decisions", json=body).status_code == 401
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEYS[1]}"}, timeout=60) as c:
        assert c.post("/v1/decisions", json=body).status_code == 200


def test_served_decisions_equal_the_batch_decisions_of_the_same_rows(server, rows, tmp_path):
    from creditgov.decision import decide
    from creditgov.jobs.serve import records
    from creditgov.spec import load_spec

    frame, recs = rows
    batch = frame.iloc[20:32].reset_index(drop=True)
    with _client(server) as c:
        served = c.post("/v1/decisions", json={"rows": recs[20:32]}).json()
        single = c.post("/v1/decisions", json={"rows": [recs[20]]}).json()
    # the batch path, on the same rows as a file, with the same registered model, policy and as-of date; its
    # own audit store so that the server's stays the server's
    csv = tmp_path / "batch.csv"
    batch.to_csv(csv, index=False)
    with in_project(server.root, CREDITGOV_AUDIT_URL=f"sqlite:///{tmp_path / 'batch-audit.db'}"):
        spec = load_spec(APPLICATION_FAST)
        result = decide.decide(spec, str(csv), as_of=AS_OF, out_dir=tmp_path / "decisions", log=quiet)
    want = records(result.log)
    assert served["model_version"] == result.model_version and served["as_of"] == AS_OF
    assert {r["action"] for r in want} >= {"approve"} and len(want) == 12
    adverse = [r for r in want if r["action"] in ("decline", "review")]
    assert adverse and all(r["counterfactual"] for r in adverse if r["action"] == "decline")
    transport = {"input_source", "input_hash"}
    for got, exp in zip(served["decisions"], want):
        assert set(got) == set(exp)
        diff = {k for k in exp if k not in transport and got[k] != exp[k]}
        assert not diff, {k: (got[k], exp[k]) for k in diff}
        assert got["input_source"] == "api"
    assert {k: v for k, v in single["decisions"][0].items() if k not in transport} == \
        {k: v for k, v in want[0].items() if k not in transport}  # one row alone: the batch's row 1
    # the desk's view: the recorded decision, checked against the trail, with the notice text
    with _client(server) as c:
        got = c.get(f"/v1/decisions/{served['decisions'][3]['decision_id']}").json()
        assert c.get("/v1/decisions/" + "f" * 32).status_code == 404
    assert got["verified"] and got["decision"] == served["decisions"][3]
    # the notice is the notice page's wording: the lender, the outcome, reasons by their labels, the rights
    spec = load_spec(server.root / APPLICATION_FAST)
    for lang in ("en", "zh"):
        n = got["notice"][lang]
        assert n["lender"] == getattr(spec.lender.name, lang) and n["contact"] and n["outcome"] and n["rights"]
        assert n["reasons"] == got["decision"][f"reasons_{lang}"]
        assert n["decision_date"] == got["decision"]["decision_time"][:10]
        said = [n["outcome"], n["contact"], n["counterfactual"] or "", *n["reasons"], *n["remedy"],
                *(text for _, text in n["rights"])]  # what the customer reads (rights keys are for machines)
        assert not names_leaked(" ".join(said), spec, lang)


def test_refusals_name_the_field_and_rule_and_the_log_has_no_personal_data(server, rows):
    frame, recs = rows
    bad = dict(recs[40], rownames=PERSONAL_ID, Age=150)
    text = dict(recs[41], rownames=PERSONAL_ID, Seniority="eleven")
    with _client(server) as c:
        r = c.post("/v1/decisions", json={"rows": [recs[42], bad]})
        assert r.status_code == 422
        assert r.json()["rows"] == [{"row": 2, "rules": ["Age: within [18, 100]"]}]
        r = c.post("/v1/decisions", json={"rows": [text]})
        assert r.status_code == 422 and "Seniority" in r.json()["error"] and "numeric type" in r.json()["error"]
        r = c.post("/v1/decisions", json={"rows": [dict(recs[43], Home="castle")]})
        assert r.status_code == 422 and "Home: one of" in r.json()["rows"][0]["rules"][0]
        assert c.post("/v1/decisions", content=b"{not json").status_code == 422
        assert c.post("/v1/decisions", json={"rows": []}).status_code == 422
        assert c.post("/v1/decisions", json=[1, 2]).status_code == 422
        assert c.post("/v1/decisions", json={"rows": [recs[44]], "as_of": "yesterday"}).status_code == 422
        assert c.post("/v1/decisions", json={"rows": [recs[44]] * 1001}).status_code == 413
        assert c.post("/v1/decisions", content=b" " * (2 << 20),
                      headers={"content-type": "application/json"}).status_code == 413
        ok = c.post("/v1/decisions", json={"rows": [dict(recs[45], rownames=PERSONAL_ID)]})
        assert ok.status_code == 200
    time.sleep(0.2)
    log = server.log.read_text(encoding="utf-8")
    assert "breaks Age: within [18, 100]" in log  # the refusal is logged, by rule
    assert PERSONAL_ID not in log and "eleven" not in log and "castle" not in log
    assert "127.0.0.1" not in log.split("listening on")[-1]  # no client addresses


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server):
    """Property-based requests generated from the OpenAPI schema (itself generated from the catalogue):
    valid and schema-breaking rows, every answer in the schema, none a 5xx."""
    import schemathesis
    from schemathesis.specs.openapi.checks import positive_data_acceptance
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    for path, method, n in (("/v1/decisions", "POST", 60), ("/v1/decisions/{decision_id}", "GET", 15),
                            ("/v1/reviews", "POST", 10), ("/v1/contests", "POST", 10)):
        @given(case=schema[path][method].as_strategy())
        @settings(max_examples=n, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            # schema-valid rows may still be refused by rules a schema cannot say (an identifier repeated across
            # rows, a lone surrogate): a 422, documented; what must never happen is a 5xx or an off-schema answer
            case.call_and_validate(base_url=server.url, headers={"X-API-Key": KEYS[0]},
                                   excluded_checks=[positive_data_acceptance])

        run()


def _oversight_entries(root: Path, decision_id: str) -> list[tuple[str, dict]]:
    with closing(sqlite3.connect(root / "audit.db")) as c:
        rows = c.execute("SELECT kind, payload FROM audit_entries WHERE kind IN ('review', 'contest') "
                         "AND record_id = ? ORDER BY seq", (decision_id,)).fetchall()
    return [(k, json.loads(p)) for k, p in rows]


def test_reviews_and_contests_are_recorded_in_the_trail(server, rows):
    """Human oversight over HTTP: the same functions as `creditgov review` / `creditgov contest`, their events in
    the audit trail (the next test's `audit verify` runs after them)."""
    frame, recs = rows
    with _client(server) as c:
        # rows no other test of the module sends (the load tests count the records their own requests add)
        decided = c.post("/v1/decisions", json={"rows": recs[340:400]}).json()["decisions"]
        declined = next(d for d in decided if d["action"] == "decline" and d["counterfactual"]
                        and json.loads(d["counterfactual"]).get("found"))
        first = decided[0]["decision_id"]
        # refusals: no key, unknown decision, invalid bodies
        assert _client(server, None).post("/v1/reviews", json={"decision_id": first}).status_code == 401
        unknown = {"decision_id": "f" * 32, "reviewer": "desk-7", "reason": "r", "approve": True}
        assert c.post("/v1/reviews", json=unknown).status_code == 404
        assert c.post("/v1/contests", json={"decision_id": "nope", "row": recs[340]}).status_code == 404
        both = c.post("/v1/reviews", json={"decision_id": first, "reviewer": "desk-7", "reason": "checked",
                                           "approve": True, "override": "decline"})
        assert both.status_code == 422 and "exactly one of" in both.json()["error"]
        assert c.post("/v1/reviews", json={"decision_id": first, "reason": "checked",
                                           "approve": True}).status_code == 422
        assert c.post("/v1/reviews", json={"decision_id": first, "reviewer": "desk-7", "reason": "checked",
                                           "override": "upgrade"}).status_code == 422
        assert c.post("/v1/reviews", content=b"{not json").status_code == 422
        r = c.post("/v1/contests", json={"decision_id": first, "row": dict(recs[340], Age=150)})
        assert r.status_code == 422 and r.json()["rows"] == [{"row": 1, "rules": ["Age: within [18, 100]"]}]
        r = c.post("/v1/contests", json={"decision_id": first, "row": recs[341]})  # another applicant's row
        assert r.status_code == 422 and "another account" in r.json()["error"]
        assert _oversight_entries(server.root, first) == []  # nothing refused reached the trail

        r = c.post("/v1/reviews", json={"decision_id": first, "reviewer": "desk-7", "reason": "income verified",
                                        "override": "decline"})
        assert r.status_code == 200, r.text
        review = r.json()["review"]
        assert review["resolution"] == "overridden" and review["final_action"] == "decline"
        assert review["original_action"] == decided[0]["action"]

        corrected = dict(recs[340 + decided.index(declined)])
        for change in json.loads(declined["counterfactual"])["changes"]:
            corrected[change["feature"]] = change["to"]
        r = c.post("/v1/contests", json={"decision_id": declined["decision_id"], "row": corrected,
                                         "reason": "the requested amount was entered wrongly"})
        assert r.status_code == 200, r.text
        contest, new = r.json()["contest"], r.json()["decision"]
        assert contest["new_decision_id"] == new["decision_id"] != declined["decision_id"]
        assert contest["original_action"] == "decline" and new["action"] != "decline"
        assert new["model_version"] == declined["model_version"] and new["account_key"] == declined["account_key"]
        assert c.get(f"/v1/decisions/{new['decision_id']}").json()["decision"] == new
        paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/reviews", "/v1/contests"} <= set(paths)
    assert [(k, e["reviewer"]) for k, e in _oversight_entries(server.root, first)] == [("review", "desk-7")]
    assert [(k, e.get("role"), e["new_decision_id"]) for k, e in _oversight_entries(server.root, new["decision_id"])] \
        == [("contest", "new", new["decision_id"])]
    assert [k for k, _ in _oversight_entries(server.root, declined["decision_id"])] == ["contest"]


async def _load(url: str, bodies: list[dict], clients: int) -> list[int]:
    sem = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEYS[0]}, timeout=120,
                                 limits=httpx.Limits(max_connections=clients)) as c:
        async def one(b):
            async with sem:
                try:
                    return (await c.post("/v1/decisions", json=b)).status_code
                except httpx.TransportError:
                    return 0

        return await asyncio.gather(*(one(b) for b in bodies))


def test_many_clients_then_audit_verify_and_records_equal_2xx(server, rows):
    frame, recs = rows
    before = _served_records(server.root)
    bodies = [{"rows": [recs[100 + i]]} for i in range(REQUESTS - 16)] + \
             [{"rows": recs[200 + 4 * i:204 + 4 * i]} for i in range(16)]  # some small batches among them
    codes = asyncio.run(_load(server.url, bodies, CLIENTS))
    assert codes.count(200) == len(bodies), sorted(set(codes))
    decided = sum(len(b["rows"]) for b, code in zip(bodies, codes) if code == 200)
    _all_sealed(server)  # answered from the journal: in the trail within the merge delay
    assert _served_records(server.root) - before == decided
    v = subprocess.run(creditgov_argv("audit", "verify"), cwd=server.root, env=cli_env(), capture_output=True,
                       text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.fixture(scope="module")
def local_decider(server):
    """The served spec and model in this process (the server's project, its registered @champion)."""
    from creditgov.decision import decide
    from creditgov.jobs.serve import Decider

    with in_project(server.root):
        spec = load_spec(APPLICATION_FAST)
        return Decider(spec, decide.load_model(spec), AS_OF)


def test_journal_answers_once_durable_and_merge_delay_0_after_the_seal(local_decider, rows, tmp_path):
    """In process, the service's own batcher and audit writer on a store of their own. --merge-delay 0: each
    answer comes after its seal (the trail holds it when the answer is given; no journal). With the journal
    (a merge delay longer than the test): answers carry the promise while the trail holds none of them, the
    segment is locked and `audit verify` lists it as pending, not as a problem; the shutdown seals it, and
    the record hashes promised are the leaves the index holds. A segment's frames read back make the same
    decision log, byte for byte, as the frames they were made from."""
    from concurrent.futures import ThreadPoolExecutor

    from creditgov.governance import audit, journal
    from creditgov.jobs import serve

    frame, recs = rows
    d = local_decider
    out = tmp_path / "decisions" / "served"

    async def serving(merge_delay, bodies, during):
        writer = serve.AuditWriter(d.spec, out, merge_delay=merge_delay)
        pool = ThreadPoolExecutor(1)
        batcher = serve.DecideBatcher(d, writer, pool)
        writer.start()
        batcher.start()
        try:
            answers = await asyncio.gather(*(batcher.decide(b) for b in bodies))
            await asyncio.to_thread(during, answers, writer)
        finally:
            await batcher.stop()
            await writer.stop()
            pool.shutdown()
        return answers

    def ids_of(answers):
        return [r["decision_id"] for a in answers for r in a.records]

    def sealed_at_answer(answers, writer):
        assert all(a.journal is None for a in answers) and not journal.segments(out)
        assert audit.recorded(ids_of(answers)) == set(ids_of(answers))

    def promised(answers, writer):
        ids = ids_of(answers)
        assert not audit.recorded(ids)  # answered from the journal alone
        (seg,) = journal.segments(out)
        assert journal.is_live(seg) and all(writer.is_pending(i) for i in ids)
        for a in answers:
            assert a.journal["segment"] == seg.name and len(a.journal["record_hashes"]) == len(a.records)
            assert all(re.fullmatch("[0-9a-f]{64}", h) for h in a.journal["record_hashes"])
        r = audit.verify()
        assert r.ok, r.problems
        assert r.pending == [f"journal segment {seg.resolve()}: {len(set(ids))} decisions answered and not yet "
                             "sealed: its server is running and seals them within its merge delay"]

    with in_project(tmp_path, CREDITGOV_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}"):
        asyncio.run(serving(0, [{"rows": [recs[i]]} for i in range(0, 5)] + [{"rows": recs[5:8]}], sealed_at_answer))
        answers = asyncio.run(serving(600, [{"rows": [recs[i]]} for i in range(8, 14)] + [{"rows": recs[14:17]}],
                                      promised))
        assert not journal.segments(out)  # sealed at the shutdown, then deleted
        ids = ids_of(answers)
        assert audit.recorded(ids) == set(ids)
        with closing(sqlite3.connect(tmp_path / "audit.db")) as c:
            leaves = {bytes(k).hex(): bytes(leaf).hex()  # (a 32-hex-digit id is kept as its 16 bytes)
                      for k, leaf in c.execute("SELECT decision_id, leaf FROM audit_decisions")}
        assert [leaves[i] for i in ids] == [h for a in answers for h in a.journal["record_hashes"]]
        r = audit.verify()
        assert r.ok and not r.pending, r.problems

        # one-row micro-batches (their Arrow types differ: a null column where another has text) and merged ones
        frames = [f for i in range(20, 32) for f in d.decide_many([{"rows": [recs[i]]}])[1]]
        frames += d.decide_many([{"rows": recs[32:35]}, {"rows": [recs[35]]}])[1]
        tables = [serve._arrow_table(f) for f in frames]
        assert len({tuple(t.schema.types) for t in tables}) > 1
        seg = journal.Segment.create(tmp_path, "roundtrip")
        seg.append([journal.frame_bytes(t) for t in tables], 0, [])
        back = serve.journal_frames(journal.read_segment(seg.path).tables)
        assert serve._log_bytes(pd.concat(back, ignore_index=True))[0] == \
            serve._log_bytes(pd.concat(frames, ignore_index=True))[0]
        seg.delete()


def test_micro_batch_gives_each_request_the_records_it_gets_alone(server, rows, local_decider):
    """Requests decided together in one micro-batch (one decide_rows call) get, field for field, what each
    gets decided alone: row numbers, input hash, decision ids, counterfactuals (rounding, pair stage) included;
    a request with a refused row (here a duplicate id) is refused alone and the others are still decided."""
    from creditgov.jobs.serve import Refused
    from creditgov.decision.policy import ADVERSE_ACTIONS

    frame, recs = rows
    with in_project(server.root):
        d = local_decider
        bodies = [{"rows": [recs[i]]} for i in range(40, 70)] + [{"rows": recs[70 + 3 * i:73 + 3 * i]} for i in range(6)]
        bodies.insert(5, {"rows": [recs[90], recs[90]]})  # refused: "id unique"
        outs, frames = d.decide_many(bodies)
        assert len(frames) < len(bodies) - 1  # merged: fewer decision logs than requests
        for body, got in zip(bodies, outs):
            try:
                alone = d.decide(body)
            except Refused as r:
                assert isinstance(got, Refused) and got.body == r.body
                continue
            assert got.records == records_of(alone.log) and got.model_version == alone.model_version
    assert sum(isinstance(o, Refused) for o in outs) == 1
    # adverse actions carry a counterfactual (a human review is no adverse action: none)
    adverse = [r for o in outs if not isinstance(o, Refused) for r in o.records if r["action"] in ADVERSE_ACTIONS]
    assert adverse and all(r["counterfactual"] for r in adverse)


def test_champion_moved_under_load_is_swapped_between_requests(server, rows):
    """The @champion alias moves to another version while many clients send requests: no request fails, each
    answer's decisions all carry the version the answer names (never two in one request), both versions
    answer, the trail holds exactly the 2xx decisions and verifies."""
    from creditgov.governance import registry
    from creditgov.governance.promote import promote

    frame, recs = rows
    spec = load_spec(server.root / APPLICATION_FAST)
    name = spec.registry.model_name
    with in_project(server.root):
        registry.configure()  # the server's store (MLflow's global URI may still name another test's project)
        c = registry.client()
        v1 = c.get_model_version_by_alias(name, "champion")
        v2 = c.create_model_version(name, v1.source, run_id=v1.run_id, tags={"creditgov.registration": "complete"})
    before = _served_records(server.root)
    answers: list[tuple[int, dict]] = []

    async def go():
        sem = asyncio.Semaphore(CLIENTS)
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEYS[0]}, timeout=120,
                                     limits=httpx.Limits(max_connections=CLIENTS)) as cl:
            async def one(b):
                async with sem:
                    r = await cl.post("/v1/decisions", json=b)
                    answers.append((r.status_code, r.json()))

            async def moved():
                while len(answers) < 20:
                    await asyncio.sleep(0.01)
                with in_project(server.root):  # as `creditgov promote` moves it: gates, approver, audit entry
                    await asyncio.to_thread(promote, spec, "reload test approver", str(v2.version))

            idc = spec.source.id_column  # fresh ids: decisions no earlier test put in the trail
            bodies = [{"rows": [{**r, idc: 9_000_000 + i + j} for j, r in enumerate(recs[i:i + 1 + i % 3])]}
                      for i in range(100, 400, 4)]
            mover = asyncio.ensure_future(moved())
            deadline = time.monotonic() + 120
            k = 0
            while time.monotonic() < deadline and not (mover.done() and any(
                    a[1].get("model_version") == str(v2.version) for a in answers[-CLIENTS:])):
                await asyncio.gather(*(one(bodies[(k + j) % len(bodies)]) for j in range(CLIENTS)))
                k += CLIENTS
            await mover

    asyncio.run(go())
    codes = [code for code, _ in answers]
    assert codes.count(200) == len(answers), sorted(set(codes))
    for _, body in answers:
        assert {d["model_version"] for d in body["decisions"]} == {body["model_version"]}
    assert {body["model_version"] for _, body in answers} == {str(v1.version), str(v2.version)}
    _all_sealed(server)
    assert _served_records(server.root) - before == len({d["decision_id"] for _, b in answers for d in b["decisions"]})
    v = subprocess.run(creditgov_argv("audit", "verify"), cwd=server.root, env=cli_env(), capture_output=True,
                       text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr


def test_sigterm_drains_in_flight_requests_and_loses_no_record(server, rows):
    frame, recs = rows
    before = _served_records(server.root)
    bodies = [{"rows": [recs[300 + i]]} for i in range(40)]

    async def go():
        task = asyncio.ensure_future(_load(server.url, bodies, 8))
        await asyncio.sleep(0.3)  # requests are in flight
        server.proc.send_signal(signal.SIGTERM)
        return await task

    codes = asyncio.run(go())
    out, _ = server.proc.communicate(timeout=60)
    assert server.proc.returncode == 0
    assert "stopped;" in out
    ok = codes.count(200)
    assert ok >= 1 and set(codes) <= {200, 0, 503}
    assert _served_records(server.root) - before == ok
    v = subprocess.run(creditgov_argv("audit", "verify"), cwd=server.root, env=cli_env(), capture_output=True,
                       text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr


def test_kill_9_under_load_loses_no_issued_decision(trained_application_fast, rows, tmp_path):
    """SIGKILL while requests are in flight (no drain), the server journaling with a merge delay longer than the
    test (nothing sealed before the kill): `audit verify` names the abandoned journal segment (exit 8, the file,
    the decisions, the fix); a torn final write (a kill during a write) is not sealed and does not stop the rest;
    after what the next start does before its port opens, verify passes and every decision answered 2xx (only
    after its rows were fdatasynced in the journal) is in the trail."""
    import pyarrow as pa

    from creditgov.governance import audit, journal
    from creditgov.jobs import serve

    frame, recs = rows
    root = copy_trained_project(trained_application_fast.root, tmp_path / "kill")
    with open(root / "server-kill.log", "w") as err:
        proc, url = _start(root, err, merge_delay=600)
        bodies = [{"rows": [recs[i]]} for i in range(200)] + [{"rows": recs[i:i + 3]} for i in range(200, 398, 3)]
        answered = []

        async def go():
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEYS[0]}, timeout=60,
                                         limits=httpx.Limits(max_connections=8)) as c:
                sem = asyncio.Semaphore(8)

                async def one(b):
                    async with sem:
                        try:
                            r = await c.post("/v1/decisions", json=b)
                            answered.append(r.status_code)
                            return r.status_code, [d["decision_id"] for d in r.json().get("decisions", [])]
                        except (httpx.TransportError, ValueError):
                            return 0, []

                task = asyncio.gather(*(one(b) for b in bodies))
                deadline = time.monotonic() + 120
                while len(answered) < 30 and not task.done() and time.monotonic() < deadline:
                    # some answered, the rest in flight or queued
                    await asyncio.sleep(0.005)
                proc.kill()
                return await task

        answers = asyncio.run(go())
        proc.wait(timeout=30)
    issued = [d for code, ids in answers if 200 <= code < 300 for d in ids]
    assert issued and any(code == 0 for code, _ in answers), [c for c, _ in answers]
    served = root / "decisions" / "served"
    segments = journal.segments(served)
    assert segments and not any(journal.is_live(p) for p in segments)  # its server is gone
    # a torn final write of decisions no request was answered with: half a frame at the end of the last segment
    last = journal.read_segment(segments[-1]).tables[-1]
    torn_ids = [f"{i:032x}" for i in range(1, last.num_rows + 1)]
    torn = last.set_column(last.schema.get_field_index("decision_id"), "decision_id", pa.array(torn_ids))
    blob = journal.frame_bytes(torn)
    with open(segments[-1], "ab") as f:
        f.write(blob[:len(blob) // 2])
    v = subprocess.run(creditgov_argv("audit", "verify"), cwd=root, env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert v.returncode == 8, v.stdout + v.stderr
    unsealed = 0
    for p in segments:  # each segment named with its decisions (none sealed yet), the fix said
        n = len(set(journal.read_segment(p).decision_ids))
        unsealed += n
        assert f"journal segment {p.resolve()}: {n} answered decisions are not sealed" in v.stderr, v.stderr
    assert "torn final write" in v.stderr and "start `creditgov serve` again" in v.stderr
    assert unsealed >= len(set(issued))
    with in_project(root):  # what the next start does before its port opens: complete and seal what is left
        serve.complete_interrupted(Path("decisions/served"))
    assert not journal.segments(served)
    v = subprocess.run(creditgov_argv("audit", "verify"), cwd=root, env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr
    with in_project(root):
        assert set(audit.recorded(issued)) == set(issued)
        assert not audit.recorded(torn_ids)  # the torn write's rows were never answered: not sealed


def test_start_up_refusals_are_one_line(tmp_path):
    env = cli_env()
    env.pop("CREDITGOV_API_KEYS", None)
    r = subprocess.run(creditgov_argv("serve", "--port", "0"), cwd=copy_project(tmp_path / "p"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CREDITGOV_API_KEYS" in r.stderr, r.stderr
    # an untrained project: no @champion to serve
    r = subprocess.run(creditgov_argv("serve", "--port", "0", "--insecure-dev"), cwd=tmp_path / "p", env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 7 and r.stderr.count("\n") == 1 and "train and promote" in r.stderr, r.stderr
