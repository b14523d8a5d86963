# The two commands a user needs: `make serve` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# llama-cpp-python for `make bench` is built like Hearth's llama-server, from the same pin and
# flags (hearth.engines.llama_cpp.flags).
LLAMA_FLAGS := $(BIN)/python -m hearth.engines.llama_cpp.flags

.PHONY: serve test setup lint pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,transformers]'
	@rm -f $(VENV)/.installed-* && touch $@

## setup: install Hearth in .venv, build llama-server (cached in ~/.cache/hearth), prepare the model
setup: $(STAMP)
	$(BIN)/hearth setup
	@# The dashboard's browser tests drive Debian's chromium (run as root in CI).
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

## serve: serve the bundled model at http://127.0.0.1:8080/v1 (pass flags with ARGS="--port 9000")
serve: setup
	$(BIN)/hearth serve $(ARGS)

## test: lint, type-check and run the whole test suite against the real engine
test: setup lint pytest

pytest: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: Hearth vs llama-server vs llama-cpp-python's server; writes docs/benchmarks.md
bench: setup
	CMAKE_ARGS="$$($(LLAMA_FLAGS))" $(BIN)/python -m pip install --quiet \
		--disable-pip-version-check "$$($(LLAMA_FLAGS) --pin)"
	$(BIN)/python bench/throughput.py $(ARGS)

## bench-gateway: what Hearth and LiteLLM's proxy add in front of a static nginx; writes docs/benchmarks.md
.PHONY: bench-gateway
bench-gateway: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y nginx)
	$(BIN)/python bench/gateway_overhead.py $(ARGS)

## bench-embeddings: embeddings inputs/s at batch 1 and 32, Hearth vs in-process; writes docs/benchmarks.md
.PHONY: bench-embeddings
bench-embeddings: setup
	$(BIN)/python bench/embeddings.py $(ARGS)

## bench-hot-path: httpx vs aiohttp upstream client, asyncio+h11 vs uvloop+httptools server
.PHONY: bench-hot-path
bench-hot-path: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y nginx)
	$(BIN)/python bench/hot_path.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
