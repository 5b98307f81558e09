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

# `make install` layout (DESTDIR for staged installs, as packagers expect).
PREFIX ?= /usr/local
DESTDIR ?=
# Man pages and completions made by `rctr generate-docs` from the binary's own clap definitions.
GEN_DIR := $(TARGET_DIR)/gen

# End-to-end tests run in parallel within each test binary (each has its own $HOME and ports);
# two threads match the 2-core machines they are written for.
E2E_THREADS ?= 2

.PHONY: help deps build docs install install-suid demo test unit unit-tmpfs e2e zdtm bench bench-deps gpu-kit lint clean

help:
	@echo "make deps    install build/test dependencies and CRIU (Debian 12, as root)"
	@echo "make build   build $(RCTR_BIN)"
	@echo "make docs    build, then generate man pages and bash/zsh/fish completions in $(GEN_DIR)"
	@echo "make install docs, then install rctr, its man pages, completions and example ckpt-conf.yaml under PREFIX=$(PREFIX)"
	@echo "make demo    deps + build + the checkpoint/restart demo (e2e/demo.sh)"
	@echo "make test    deps + build + unit tests + end-to-end tests"
	@echo "make unit    unit tests of every crate except the end-to-end ones (twice: /tmp as is, /tmp on tmpfs)"
	@echo "make e2e     end-to-end tests against $(RCTR_BIN) (most need root; includes zdtm)"
	@echo "make zdtm    CRIU's zdtm static tests, raw CRIU vs in rctr; table in target/zdtm/results.md"
	@echo "make lint    cargo fmt --check and clippy -D warnings"
	@echo "make bench   benchmarks against the raw tools and Podman; writes docs/benchmarks.md (as root)"
	@echo "make bench-deps  Podman + runc from Debian and a 'criu' on PATH running rctr's CRIU (for make bench)"

deps:
	bash etc/setup/install-deps.sh

build:
	$(CARGO) build -p rctr --bin rctr
	@test -x "$(RCTR_BIN)" || { echo "make: built, but $(RCTR_BIN) is missing (RCTR_BIN/CARGO_TARGET_DIR mismatch?)" >&2; exit 1; }

docs: build
	rm -rf "$(GEN_DIR)"
	"$(RCTR_BIN)" -q generate-docs "$(GEN_DIR)"

# The example configuration goes with the docs, not to /etc/rctr: rctr's built-in copy is the
# default, and an installed /etc/rctr/ckpt-conf.yaml would silently take its place.
install: docs
	install -D -m 0755 "$(RCTR_BIN)" "$(DESTDIR)$(PREFIX)/bin/rctr"
	install -d "$(DESTDIR)$(PREFIX)/share/man/man1"
	install -m 0644 "$(GEN_DIR)"/man/*.1 "$(DESTDIR)$(PREFIX)/share/man/man1/"
	install -D -m 0644 "$(GEN_DIR)/completions/rctr.bash" "$(DESTDIR)$(PREFIX)/share/bash-completion/completions/rctr"
	install -D -m 0644 "$(GEN_DIR)/completions/_rctr" "$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_rctr"
	install -D -m 0644 "$(GEN_DIR)/completions/rctr.fish" "$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/rctr.fish"
	install -D -m 0644 etc/ckpt-conf.yaml "$(DESTDIR)$(PREFIX)/share/doc/rctr/examples/ckpt-conf.yaml"
	install -D -m 0644 etc/nvliblist.conf "$(DESTDIR)$(PREFIX)/share/doc/rctr/examples/nvliblist.conf"
	@echo "installed rctr under $(DESTDIR)$(PREFIX); to configure checkpoints system-wide:"
	@echo "  install -D -m 0644 $(PREFIX)/share/doc/rctr/examples/ckpt-conf.yaml /etc/rctr/ckpt-conf.yaml"

# The checkpoint helper for users who are not root (setuid root; docs/security.md).
install-suid:
	bash etc/setup/install-suid.sh "$(RCTR_BIN)"

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

# CRIU's own zdtm static tests (built from the installed CRIU's source), checkpointed and
# restored by raw CRIU and inside rctr instances; `make e2e` (so `make test`) runs them too.
zdtm: build
	$(CARGO) test --no-fail-fast -p rctr-e2e --test zdtm -- --nocapture

# The bench measures its own release build unless RCTR_BIN is set by the caller (the
# default above names the debug binary the tests use).
bench:
	$(if $(filter file,$(origin RCTR_BIN)),env -u RCTR_BIN) bash e2e/bench/run.sh

# The peer runtime make bench measures next to rctr (its case is skipped, with the reason in the
# report, without it). Not part of `make deps`: nothing else needs Podman.
bench-deps:
	bash etc/setup/install-bench-deps.sh

# What e2e/gpu/run.sh needs on a GPU machine with no network: the release binary and the
# CRIU engine bundle, in target/gpu-kit.
gpu-kit:
	$(CARGO) build --release -p rctr --bin rctr
	bash e2e/gpu/make-kit.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
