# creditgov: every target bootstraps .venv on first use, so a fresh clone needs no other step.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SPEC ?= pipelines/application.yaml
APPROVER ?= $(shell whoami 2>/dev/null || echo unknown)

# telemetry off and no progress bars: these machines have no network, a blocked call must never stall a run
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := False
export TQDM_DISABLE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: help install train simulate validate promote decide report limit-auc replay monitor ui test test-fast bench bench-quick bench-resume bench-audit serve bench-serve clean

help: ## Show the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv and install creditgov (done by every target on first use)

train: $(STAMP) ## Validate, train, evaluate and register both PD models (application, behaviour); promote each if its gates pass
	$(BIN)/creditgov train --spec pipelines/application.yaml --search --promote --approver "$(APPROVER)"
	$(BIN)/creditgov train --spec pipelines/behaviour.yaml --promote --approver "$(APPROVER)"

simulate: $(STAMP) ## Simulate the default credit-line portfolio into data/simulated/default (SCENARIO=file)
	$(BIN)/creditgov simulate --scenario $(or $(SCENARIO),pipelines/scenarios/default.yaml)

validate: $(STAMP) ## Validate the spec's input data and write the quarantine file
	$(BIN)/creditgov validate --spec $(SPEC)

promote: $(STAMP) ## Promote the @challenger to @champion if its gates pass (APPROVER=name)
	$(BIN)/creditgov promote --spec $(SPEC) --approver "$(APPROVER)"

decide: $(STAMP) ## Decide and explain the spec's data with the @champion (AS_OF=YYYY-MM-DD, DATA=file)
	$(BIN)/creditgov decide --spec $(SPEC) $(if $(DATA),--data $(DATA)) $(if $(AS_OF),--as-of $(AS_OF))

SIM := data/simulated/default
report: $(STAMP) ## Decide and explain, then reports/<run>/index.html (application data, and a month of the simulated book; PDF=1: also each run's regulator pack)
	$(BIN)/creditgov decide --spec pipelines/application.yaml $(if $(AS_OF),--as-of $(AS_OF))
	$(BIN)/creditgov report --spec pipelines/application.yaml $(if $(PDF),--pdf)
	$(BIN)/creditgov decide --spec pipelines/behaviour.yaml --data $(SIM)/month=17/snapshot.parquet \
		--previous $(SIM)/month=16/snapshot.parquet --as-of 2025-05-01
	$(BIN)/creditgov report --spec pipelines/behaviour.yaml $(if $(PDF),--pdf)
	$(BIN)/creditgov risk-report --sim-dir $(SIM) --months 1-24
	@echo "open reports/index.html"

replay: $(STAMP) ## Replay a candidate on-book policy against the current one on simulated months (CANDIDATE=file, MONTHS=13-24)
	$(BIN)/creditgov replay --spec pipelines/behaviour.yaml --months $(or $(MONTHS),13-24) \
		--candidate $(or $(CANDIDATE),pipelines/candidates/behaviour-strict-suspension.yaml)

limit-auc: $(STAMP) ## Behaviour model test AUC without and with the policy-set credit limit as an input
	PYTHONPATH=src $(BIN)/python benchmarks/behaviour_limit_feature.py

monitor: $(STAMP) ## Monitor the behaviour model month by month on the simulated book (MONTHS=13-24; EVIDENTLY=1: also Evidently's pages)
	$(BIN)/creditgov monitor --spec pipelines/behaviour.yaml --months $(or $(MONTHS),13-24) --sim-dir $(SIM) $(if $(EVIDENTLY),--evidently)
	@echo "open reports/index.html"

ui: $(STAMP) ## Start the MLflow UI on http://127.0.0.1:5000 against the same backend
	$(BIN)/creditgov ui

PORT ?= 8000
WORKERS ?= 1
serve: $(STAMP) ## Serve decisions over HTTP on 127.0.0.1:$(PORT) with the @champion (CREDITGOV_API_KEYS=key, or INSECURE=1; WORKERS=N processes)
	$(BIN)/creditgov serve --spec $(SPEC) --port $(PORT) --workers $(WORKERS) $(if $(INSECURE),--insecure-dev)

bench-serve: $(STAMP) ## creditgov serve (BENCH_WORKERS=N workers, default 2) beside MLflow's scoring server on 127.0.0.1 (after make train; REQUESTS=N for the memory phase, default 100,000; ~15 min); benchmarks/results/serve.json
	$(BIN)/python benchmarks/bench_serve.py $(if $(REQUESTS),--requests $(REQUESTS)) $(if $(BENCH_WORKERS),--workers $(BENCH_WORKERS))


# one pytest worker per core (pytest-xdist), a whole test file per worker so module fixtures are made once
TEST_WORKERS ?= 2
test: $(STAMP) ## Run the whole test suite (code, data, model, end-to-end tiers; TEST_WORKERS=2)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP) ## Run the code and data tiers only
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests/code tests/data

bench: $(STAMP) ## Benchmark each step beside its peer on 1M rows (minutes); table + benchmarks/results/bench.json
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP) ## The same benchmarks on 100k rows; benchmarks/results/bench-quick.json
	$(BIN)/python benchmarks/run.py --quick

bench-resume: $(STAMP) ## Partitioned decide killed mid-way, then resumed, vs uninterrupted (after make train)
	$(BIN)/python benchmarks/bench_resume.py

bench-audit: $(STAMP) ## Audit trail: append / verify rates and bytes per decision beside the per-record chain (ROWS=1000000)
	$(BIN)/python benchmarks/bench_audit.py --rows $(or $(ROWS),1000000)

clean: ## Remove local MLflow store, quarantine files and reports (keeps .venv)
	rm -rf mlflow.db mlartifacts mlruns quarantine decisions data/simulated audit.db* reports/*/ reports/index.html
