"""The Dask engine writes the same decision log as the single-process engine, byte for byte.

The session's quick application model (tests/e2e/conftest.py: 30 boosting rounds) in a temporary
project; one in-process LocalCluster with 2 workers for the module. Checked: a file split into
partitions, a CSV with a quarantined row, a directory of Parquet files, and PSI / CSI from
per-partition bin counts.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import in_project, quiet, serve_saved_models

pytestmark = pytest.mark.e2e

SPEC_PATH = "pipelines/application.yaml"
AS_OF = "2026-11-01"


@pytest.fixture(scope="module")
def project(tmp_path_factory, make_project, application_model_dir):
    """A temporary project whose 'registered' model is the session's quick fit (30 rounds), saved as JSON
    files: the registry itself is tested elsewhere; here both engines must load the same model."""
    from creditgov.data import inputs
    from creditgov.model.credit_model import CreditModel
    from creditgov.spec import load_spec

    root = make_project(tmp_path_factory.mktemp("dask_project"))
    with in_project(root, drop=("CREDITGOV_DECISION_LOG", "CREDITGOV_SPEC")) as mp:
        spec = load_spec(SPEC_PATH)
        serve_saved_models(mp, {spec.registry.model_name: application_model_dir}, "7", "run-7")
        yield SimpleNamespace(root=root, spec=spec, source=inputs.load(spec).frame,
                              model=CreditModel.load(application_model_dir))


@pytest.fixture(scope="module")
def client(project):
    from creditgov import cluster

    c = cluster.client_for(workers=2, processes=False)
    yield c
    local = c.cluster
    c.close()
    local.close()


def _both(project, client, data_path, partitions, tag):
    from creditgov.decision import decide
    from creditgov.decision import dask

    one = decide.decide(project.spec, data_path, as_of=AS_OF, out_dir=f"single-{tag}", log=quiet)
    many = dask.decide(project.spec, data_path, as_of=AS_OF, out_dir=f"dask-{tag}", log=quiet,
                         partitions=partitions, client=client)
    return one, many


def test_partitioned_file_gives_a_byte_identical_log(project, client):
    path = project.root / "batch.parquet"
    project.source.drop(columns=[project.spec.target.column]).to_parquet(path, index=False)
    one, many = _both(project, client, str(path), 3, "file")
    assert one.path.name == many.path.name
    assert one.path.read_bytes() == many.path.read_bytes()
    assert (one.rows_in, one.rows_decided, one.rows_quarantined) == (many.rows_in, many.rows_decided,
                                                                     many.rows_quarantined)
    log = many.log
    assert list(log["row_number"]) == list(range(1, len(project.source) + 1))
    assert log["decision_id"].is_unique
    assert log["counterfactual"].notna().sum() == (log["action"] == "decline").sum() > 0


def test_quarantined_rows_keep_their_place(project, client):
    batch = project.source.drop(columns=[project.spec.target.column]).copy()
    batch.loc[[5, 2000, 4000], "Age"] = -5  # one bad row in each of three partitions
    path = project.root / "bad.csv"
    batch.to_csv(path, index=False)
    one, many = _both(project, client, str(path), 3, "csv")
    assert one.rows_quarantined == many.rows_quarantined == 3
    assert one.path.read_bytes() == many.path.read_bytes()
    bad = many.log[many.log["status"] == "quarantined"]
    assert list(bad["row_number"]) == [6, 2001, 4001]


def test_directory_of_parquet_files(project, client):
    from creditgov.decision import decide
    from creditgov.decision import dask

    batch = project.source.drop(columns=[project.spec.target.column])
    folder = project.root / "parts"
    folder.mkdir()
    for k, (a, b) in enumerate([(0, 1500), (1500, 3000), (3000, len(batch))]):
        batch.iloc[a:b].to_parquet(folder / f"part-{k:03d}.parquet", index=False)
    whole = project.root / "whole.parquet"
    batch.to_parquet(whole, index=False)
    one = decide.decide(project.spec, str(whole), as_of=AS_OF, out_dir="single-dir", log=quiet)
    many = dask.decide(project.spec, str(folder), as_of=AS_OF, out_dir="dask-dir", log=quiet, client=client)
    assert one.input_hash == many.input_hash and one.path.name == many.path.name
    a, b = decide.read_log(one.path), decide.read_log(many.path)
    assert (b["input_source"] == str(folder)).all()
    pd.testing.assert_frame_equal(a.drop(columns="input_source"), b.drop(columns="input_source"))


def test_psi_csi_from_partition_counts(project, client):
    from creditgov.monitor import dask
    from creditgov.monitor import drift
    from creditgov.monitor.reference import build_profile

    spec = project.spec
    model = project.model
    frame = project.source
    ref, cur = frame.iloc[:2500].reset_index(drop=True), frame.iloc[2500:].reset_index(drop=True)
    profile = build_profile(ref, model.predict_pd(ref), spec, {}, spec.monitoring.segment_by)
    p = model.predict_pd(cur)
    single = drift.stability(cur, p, profile, spec)
    dist = dask.stability(client, cur, p, profile, spec, partitions=4)
    assert dist == single
    assert np.isfinite(dist.score_psi)


def test_explain_per_partition(project, client):
    from creditgov.decision import decide
    from creditgov.decision import dask

    frame = project.source.iloc[:900].reset_index(drop=True)
    dist = dask.explain(client, project.model, frame, project.spec, partitions=3)
    one = decide.explain_batch(project.model, frame, project.spec)
    assert dist.features == one.features
    np.testing.assert_array_equal(dist.pd, one.pd)
    np.testing.assert_array_equal(dist.phi, one.phi)
    np.testing.assert_array_equal(dist.base, one.base)
    np.testing.assert_array_equal(dist.log_odds, one.log_odds)
    np.testing.assert_array_equal(dist.additivity_error, one.additivity_error)
