# recsys-pipeline: `make demo` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Runs, materializations and check results are kept here (SQLite), so `dagster dev` shows them.
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help setup setup-dev demo test dev bench lint clean-lake
help:
	@echo "make demo   set up .venv and run the whole pipeline on the embedded ml-latest-small"
	@echo "make test   set up .venv with dev extras and run the test suite"
	@echo "make dev    open the Dagster UI (http://127.0.0.1:3000) on this project's runs"
	@echo "make bench  run the CPU benchmarks under bench/"

# A torch already importable by $(PYTHON) (e.g. a CUDA build on a GPU box) is kept by giving
# the venv the system site-packages; otherwise the CPU build torch==$(TORCH_VERSION) is
# installed first, so the project's torch range never pulls a multi-GB CUDA build.
$(VENV)/.created:
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "using the torch already installed for $(PYTHON)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c "import torch" >/dev/null 2>&1 || \
		$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	@touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# The instance config template is dagster.instance.yaml: a dagster.yaml in the folder where
# `dagster dev` starts would make it warn that it is not used. Copied again when it changes.
$(DAGSTER_HOME)/dagster.yaml: dagster.instance.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.instance.yaml $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
setup-dev: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(BIN)/dagster job execute -m recsys_pipeline.definitions -j full_pipeline_job
	@echo
	@echo "== a query over the lake: the 5 most-rated movies =="
	@$(BIN)/recsys-pipeline query --saved most_rated --param limit=5
	@echo
	@echo "== leaderboard (data_lake/reports/model_comparison.parquet, test split) =="
	@$(BIN)/recsys-pipeline query "SELECT rank, model, round(test_rmse, 4) AS rmse, \
		round(test_mae, 4) AS mae, round(test_ndcg_at_10, 4) AS ndcg_at_10, \
		round(test_hit_rate_at_10, 4) AS hr_at_10, round(test_coverage_at_10, 4) AS cov_at_10 \
		FROM reports_model_comparison ORDER BY rank"
	@echo
	@echo "== ranking leaderboard (data_lake/reports/ranking_comparison.parquet; compare within a protocol) =="
	@$(BIN)/recsys-pipeline query "SELECT protocol, rank, model, round(test_ndcg_at_10, 4) AS ndcg_at_10, \
		round(test_ndcg_at_100, 4) AS ndcg_at_100 FROM reports_ranking_comparison ORDER BY protocol, rank"
	@echo
	@echo "Done. Where to look:"
	@echo "  lake (Parquet):  $(CURDIR)/data_lake/  (clean/, prepared/, models/, reports/)"
	@echo "  MLflow UI:       $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/data_lake/mlflow/mlflow.db"
	@echo "  Dagster UI:      make dev   (or: DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev)"
	@echo "  SQL:             $(BIN)/recsys-pipeline query \"SELECT count(*) FROM clean_ratings\""
	@echo "  saved queries:   $(BIN)/recsys-pipeline query --list"
	@echo "  answers:         $(BIN)/recsys-pipeline recommend --user 1 -k 10   (check-user, similar, new-user)"
	@echo "  tune, project:   $(BIN)/recsys-pipeline tune --model mf --trials 10;  $(BIN)/recsys-pipeline project --model mf"

test: setup-dev
	$(BIN)/python -m pytest -n 2 -q

dev: setup
	$(BIN)/dagster dev

bench: setup-dev
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/prepare_bench.py

lint: setup-dev
	$(BIN)/ruff check recsys_pipeline recsys_pipeline_tests bench

# Remove generated lake layers (never the shipped data_lake/raw/ml-latest-small).
clean-lake:
	rm -rf data_lake/clean data_lake/prepared data_lake/models data_lake/mlflow \
		data_lake/reports data_lake/lake.duckdb \
		data_lake/raw/movielens_release.json
