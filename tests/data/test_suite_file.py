"""The stored expectation suite is the catalogue's: reviewers diff the file, the pipeline trusts it."""
from __future__ import annotations

from creditgov.data import expectations as ex


def test_stored_suite_agrees_with_the_feature_catalogue(spec, stored_suite):
    assert ex.suite_differences(spec, stored_suite) == []


def test_stored_suite_has_exactly_the_catalogue_expectations(spec, stored_suite):
    want = ex.suite_from_catalogue(spec)
    assert len(stored_suite["expectations"]) == len(want["expectations"])
    assert stored_suite["name"] == want["name"] == "credit-application.input"


def test_stored_suite_ranges_are_the_catalogue_ranges(spec, stored_suite):
    ranges = {e["kwargs"]["column"]: (e["kwargs"]["min_value"], e["kwargs"]["max_value"])
              for e in stored_suite["expectations"] if e["type"] == "expect_column_values_to_be_between"}
    assert ranges == {f.name: tuple(f.range) for f in spec.input_features if f.type == "numeric"}
    assert ranges["Age"] == (18.0, 100.0) and ranges["Income"] == (0.0, 100000.0)
