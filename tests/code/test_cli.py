"""`creditgov` main(): every failure is one stderr line and a documented exit code (in-process)."""
from __future__ import annotations

import json
import sys

import pytest

from creditgov import cli
from creditgov.errors import (CreditGovError, DataError, PromotionRefused, QuarantineError, SpecError,
                              TrackingError)


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["creditgov", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("error, code", [
    (CreditGovError, 1), (SpecError, 3), (DataError, 4), (QuarantineError, 5),
    (PromotionRefused, 6), (TrackingError, 7),
])
def test_credit_gov_error_becomes_one_stderr_line_and_its_exit_code(monkeypatch, capsys, error, code):
    def boom(path):
        raise error(f"{path}: first line\n   second   line")

    monkeypatch.setattr(cli, "_spec", boom)
    got, out, err = run_main(monkeypatch, capsys, "expectations", "--spec", "my.yaml")
    assert got == code
    assert err == "creditgov: error: my.yaml: first line second line\n"
    assert out == ""


def test_unexpected_exception_is_one_line_internal_error_without_traceback(monkeypatch, capsys):
    monkeypatch.delenv("CREDITGOV_DEBUG", raising=False)

    def boom(path):
        raise RuntimeError("disk on fire\nstack details")

    monkeypatch.setattr(cli, "_spec", boom)
    code, out, err = run_main(monkeypatch, capsys, "validate")
    assert code == 1
    assert err.splitlines() == ["creditgov: internal error: RuntimeError: disk on fire "
                                "(set CREDITGOV_DEBUG=1 for details)"]
    assert "Traceback" not in out + err


def test_missing_spec_file_exits_3(monkeypatch, capsys, tmp_path):
    missing = tmp_path / "absent.yaml"
    code, out, err = run_main(monkeypatch, capsys, "validate", "--spec", str(missing))
    assert code == 3
    assert err == f"creditgov: error: {missing}: spec file not found\n"


def test_unknown_spec_key_exits_3_naming_the_key(monkeypatch, capsys, tmp_path, repo_root):
    text = (repo_root / "pipelines/application.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  - name: Seniority\n", "  - name: Seniority\n    colour: red\n", 1),
                   encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, "train", "--spec", str(bad))
    assert code == 3
    assert err == f"creditgov: error: {bad}: features.0.colour: unknown key\n"


USAGE_BUG = ("BUG: cli.py main() catches click.ClickException / click.exceptions.Exit / Abort from the "
             "`click` package, but typer 0.29 raises its vendored typer._click exceptions, so a usage error "
             "falls through to 'creditgov: internal error: UsageError ...' with exit 1 instead of exit 2")


@pytest.mark.parametrize("args, says", [
    (["no-such-command"], "No such command"),
    (["promote"], "approver"),          # required option missing
    (["validate", "--rounds", "3"], "No such option"),
    (["train", "--candidate", "optuna-2"], "use it with --search"),  # before any work
])
def test_usage_error_exits_2_without_internal_error(monkeypatch, capsys, args, says):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert "internal error" not in err
    assert says in err
    assert code == 2


def test_usage_error_fails_without_traceback(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "no-such-command")
    assert code != 0
    assert "No such command 'no-such-command'" in err
    assert "Traceback" not in out + err


def test_expectations_command_checks_the_stored_suite(project, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "expectations")
    assert (code, err) == (0, "")
    assert "expectations/credit_data.json agrees with the catalogue of pipelines/application.yaml" in out

    suite_path = project / "expectations/credit_data.json"
    suite = json.loads(suite_path.read_text(encoding="utf-8"))
    suite["expectations"] = suite["expectations"][:-1]
    suite_path.write_text(json.dumps(suite), encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, "expectations")
    assert code == 3
    assert err.count("\n") == 1
    assert err.startswith("creditgov: error: expectations/credit_data.json: 1 differences from the catalogue")
    assert "Price" in err

    code, out, err = run_main(monkeypatch, capsys, "expectations", "--write")
    assert (code, err) == (0, "")
    code, out, err = run_main(monkeypatch, capsys, "expectations")
    assert code == 0 and "agrees" in out
