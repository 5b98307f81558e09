# rctr: build, demo and test entry points. `make help` lists them.
#
# One binary is built and tested: the debug build, target/debug/rctr (or $CARGO_TARGET_DIR/debug/rctr).
# The end-to-end tests and the demo run the binary named by $RCTR_BIN, which defaults to it.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# Targets run in the order written (deps before build before tests), even under `make -j`.
.NOTPARALLEL:

CARGO ?= cargo
# rustup puts cargo in ~/.cargo/bin, which a fresh root shell may not have on PATH.
ifneq ($(wildcard $(HOME)/.cargo/bin/cargo),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif

TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(abspath $(CARGO_TARGET_DIR)),$(CURDIR)/target)
RCTR_BIN ?= $(TARGET_DIR)/debug/rctr
export RCTR_BIN

# End-to-end tests run in parallel within each test binary (each has its own $HOME and ports);
# two threads match the 2-core machines they are written for.
E2E_THREADS ?= 2

.PHONY: help deps build demo test unit unit-tmpfs e2e bench lint clean

help:
	@echo "make deps    install build/test dependencies and CRIU (Debian 12, as root)"
	@echo "make build   build $(RCTR_BIN)"
	@echo "make demo    deps + build + the checkpoint/restart demo (e2e/demo.sh)"
	@echo "make test    deps + build + unit tests + end-to-end tests"
	@echo "make unit    unit tests of every crate except the end-to-end ones (twice: /tmp as is, /tmp on tmpfs)"
	@echo "make e2e     end-to-end tests against $(RCTR_BIN) (most need root)"
	@echo "make lint    cargo fmt --check and clippy -D warnings"
	@echo "make bench   benchmarks against the raw tools; writes docs/benchmarks.md (as root)"

deps:
	bash etc/setup/install-deps.sh

build:
	$(CARGO) build -p rctr --bin rctr
	@test -x "$(RCTR_BIN)" || { echo "make: built, but $(RCTR_BIN) is missing (RCTR_BIN/CARGO_TARGET_DIR mismatch?)" >&2; exit 1; }

demo: deps build
	bash e2e/demo.sh

# Both suites run even if the first fails, so one run reports every failure.
test: deps build
	@status=0; \
	$(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory e2e || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (see the failing tests above)" >&2; fi; \
	exit $$status

# The unit tests run twice: on this host's /tmp, then with /tmp (and TMPDIR) on a private tmpfs,
# because tmpfs lists directory entries in another order than ext4 and many machines have it.
unit:
	@status=0; \
	$(CARGO) test --no-fail-fast --workspace --exclude rctr-e2e || status=1; \
	$(MAKE) --no-print-directory unit-tmpfs || status=1; \
	exit $$status

unit-tmpfs:
	bash etc/setup/on-private-tmpfs.sh $(CARGO) test --no-fail-fast --workspace --exclude rctr-e2e

e2e: build
	$(CARGO) test --no-fail-fast -p rctr-e2e -- --test-threads=$(E2E_THREADS)

bench:
	bash e2e/bench/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
