# The two commands a user needs: `make serve` and `make test`. Both install what is missing first:
# `make serve` only what serving needs, `make test` the test extras and tools as well.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --quiet --disable-pip-version-check
# One stamp per install, named by pyproject.toml's checksum (a change installs again), so that
# `make serve` after `make test` installs nothing and `make test` after `make serve` only the extras.
DEPS_KEY    := $(shell cksum pyproject.toml | cut -d' ' -f1)
SERVE_STAMP := $(VENV)/.installed-serve-$(DEPS_KEY)
TEST_STAMP  := $(VENV)/.installed-test-$(DEPS_KEY)

# Debian packages the tests drive (chromium: the dashboard's and the browser-attack tests, run as
# root in CI; prometheus: promtool for the alert rules in deploy/prometheus; nginx: the balancer
# in front of gateway replicas; iproute2: network namespaces for the RPC test). Add the tools of new
# tests here: `make test` installs those missing with one apt-get.
TEST_APT_PACKAGES := chromium prometheus nginx iproute2

# llama-cpp-python for `make bench` is built like Hearth's llama-server, from the same pin and
# flags (hearth.engines.llama_cpp.flags).
LLAMA_FLAGS := $(BIN)/python -m hearth.engines.llama_cpp.flags

.PHONY: serve test setup test-setup test-apt-packages lint pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# What serving needs: Hearth and its dependencies, no extras.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	@# The distribution was called `hearth` before it became `hearth-gateway`: drop an old install.
	@$(PIP) uninstall --yes hearth >/dev/null 2>&1 || true
	$(PIP) install -e .
	@rm -f $(VENV)/.installed-* && touch $@

# What the tests and `make lint` need besides: the dev and transformers extras.
$(TEST_STAMP): $(SERVE_STAMP)
	$(PIP) install -e '.[dev,transformers]'
	@rm -f $(VENV)/.installed-test-* && touch $@

## setup: install Hearth in .venv, build llama-server (cached in ~/.cache/hearth), prepare the models
setup: $(SERVE_STAMP)
	$(BIN)/hearth setup

## serve: serve the bundled models at http://127.0.0.1:8080/v1 (pass flags with ARGS="--port 9000")
serve: setup
	$(BIN)/hearth serve $(ARGS)

## test: lint, type-check and run the whole test suite against the real engine
test: test-setup lint pytest

## test-setup: setup, plus the test extras and the Debian packages in TEST_APT_PACKAGES
test-setup: $(TEST_STAMP) test-apt-packages setup

test-apt-packages:
	@missing="$$(for package in $(TEST_APT_PACKAGES); do \
		command -v $$package >/dev/null || \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'ok installed' || \
		echo $$package; done)"; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pytest: test-setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
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

## bench-responses: what the Responses API translation adds over chat completions (static nginx upstream); writes docs/benchmarks.md
.PHONY: bench-responses
bench-responses: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y nginx)
	$(BIN)/python bench/responses_overhead.py $(ARGS)

## bench-embeddings: embeddings inputs/s at batch 1 and 32, Hearth vs in-process; writes docs/benchmarks.md
.PHONY: bench-embeddings
bench-embeddings: setup $(TEST_STAMP)
	$(BIN)/python bench/embeddings.py $(ARGS)

## bench-prompt-cache: next-turn first token after a model swap, slot restore on vs off; writes docs/benchmarks.md
.PHONY: bench-prompt-cache
bench-prompt-cache: setup
	$(BIN)/python bench/prompt_cache_restore.py $(ARGS)

## bench-affinity: multi-turn chat over 2 engine replicas, prefix affinity vs round robin; writes docs/benchmarks.md
.PHONY: bench-affinity
bench-affinity: setup
	$(BIN)/python bench/prefix_affinity.py $(ARGS)

## bench-hot-path: httpx vs aiohttp upstream client, asyncio+h11 vs uvloop+httptools server
.PHONY: bench-hot-path
bench-hot-path: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y nginx)
	$(BIN)/python bench/hot_path.py $(ARGS)

## bench-replicas: requests/s through nginx with 1, 2 and 3 replicas sharing PostgreSQL and Redis
.PHONY: bench-replicas
bench-replicas: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y nginx)
	$(BIN)/python bench/gateway_replicas.py $(ARGS)

## bench-rpc: tokens/s of the bundled model split over an RPC worker vs on one host; writes docs/benchmarks.md
.PHONY: bench-rpc
bench-rpc: setup
	$(BIN)/python bench/rpc_split.py $(ARGS)

## bench-quantization: file size, load time and tokens/s per quantization type (tiny test model, bundled model); writes docs/benchmarks.md
.PHONY: bench-quantization
bench-quantization: setup $(TEST_STAMP)
	$(BIN)/python bench/quantization.py $(ARGS)

## bench-vllm: tokens/s of vLLM through Hearth vs vLLM directly (needs an NVIDIA GPU and vLLM); writes docs/benchmarks.md
.PHONY: bench-vllm
bench-vllm: $(SERVE_STAMP)
	$(BIN)/python bench/vllm_through_hearth.py --write $(ARGS)

## bench-route-rules: what a route's rules and semantic classifier add per request (static nginx upstream); writes docs/benchmarks.md
.PHONY: bench-route-rules
bench-route-rules: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y nginx)
	$(BIN)/python bench/route_rules.py $(ARGS)

## bench-images: time to first token with one 512x512 image vs the text alone, Hearth vs llama-server (tiny vision model); writes docs/benchmarks.md
.PHONY: bench-images
bench-images: setup $(TEST_STAMP)
	$(BIN)/python bench/image_overhead.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# ---- Container image: Dockerfile, deploy/test_image.py; docs/deployment.md ("Container image").
# make image [VARIANT=cpu|cuda] [BASE_IMAGE=...] [IMAGE=...] [DOCKER_BUILD_FLAGS="--network host"]
DOCKER             ?= docker
VARIANT            ?= cpu
ifeq ($(VARIANT),cuda)
CUDA_TAG           ?= 12.8.1
BASE_IMAGE         ?= nvidia/cuda:$(CUDA_TAG)-runtime-ubuntu24.04
BUILDER_IMAGE      ?= nvidia/cuda:$(CUDA_TAG)-devel-ubuntu24.04
IMAGE              ?= hearth:local-cuda
else
BASE_IMAGE         ?= python:3.11-slim-bookworm
BUILDER_IMAGE      ?= $(BASE_IMAGE)
IMAGE              ?= hearth:local
endif
DOCKER_BUILD_FLAGS ?=
# PEM files the builder stage trusts, behind a TLS-intercepting proxy (e.g. /usr/local/share/ca-certificates/*.crt).
IMAGE_CA_CERTS     ?=

.PHONY: image test-image test-compose
## image: build the container image hearth:local (llama-server compiled in a builder stage; ~10 min)
image:
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg BUILDER_IMAGE=$(BUILDER_IMAGE) \
		--build-arg VARIANT=$(VARIANT) \
		$(if $(IMAGE_CA_CERTS),--build-arg EXTRA_CA_CERTS="$$(cat $(IMAGE_CA_CERTS))") \
		-t $(IMAGE) .

## test-image: build the image and test it in Docker: chat, keys on the volume, SIGTERM drain, non-root
## (here, without a registry: make test-image TEST_IMAGE_ARGS="--start-dockerd --debootstrap")
test-image:
	$(PYTHON) deploy/test_image.py --image $(IMAGE) --base-image $(BASE_IMAGE) \
		$(if $(IMAGE_CA_CERTS),--ca-certs $(IMAGE_CA_CERTS)) $(TEST_IMAGE_ARGS)

## test-compose: bring deploy/compose.yaml up in Docker: chat, keys in PostgreSQL, Redis, restart, Caddy, replicas
## (here, without a registry: TEST_COMPOSE_ARGS="--start-dockerd --debootstrap --admin-key-file")
test-compose:
	$(PYTHON) deploy/test_compose_stack.py --image $(IMAGE) --base-image $(BASE_IMAGE) \
		$(if $(IMAGE_CA_CERTS),--ca-certs $(IMAGE_CA_CERTS)) $(TEST_COMPOSE_ARGS)
