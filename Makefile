# Pinhole: build, test, lint, demo.
#
#   make build    the pinhole binary (debug profile; PROFILE=release for an optimized one)
#   make test     unit and integration tests, then the end-to-end netns stories
#                 (the stories need root; without it they are skipped, visibly); the core
#                 stories run twice: on the userspace stack, then on the TUN stack (name[tun])
#   make lint     rustfmt and clippy, warnings are errors
#   make demo     a relay and a home peer on this machine, a real request through them
#   make netns    only the end-to-end stories (STORIES="home_restart relay_restart" for some;
#                 NETSTACK=tun or NETSTACK=userspace for one stack's pass only)
#   make clean    remove build output

CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)
PROFILE ?= debug
ifeq ($(PROFILE),release)
PROFILE_FLAG := --release
else
PROFILE_FLAG :=
endif
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
PINHOLE := $(abspath $(TARGET_DIR)/$(PROFILE)/pinhole)
STORIES ?=
NETSTACK ?=

.PHONY: all build test unit netns lint demo clean help

all: build

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

build:
	$(CARGO) build $(PROFILE_FLAG) -p pinhole

unit:
	$(CARGO) test --workspace $(PROFILE_FLAG)

netns: build
	PINHOLE=$(PINHOLE) NETSTACK=$(NETSTACK) bash netns-tests/run.sh $(STORIES)

test: unit netns

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(PROFILE_FLAG) -- -D warnings

demo: build
	PINHOLE=$(PINHOLE) bash scripts/demo.sh

clean:
	$(CARGO) clean

# Benchmarks (root: network namespaces; see docs/benchmarks.md):
#   make bench        Pinhole beside no tunnel, wireguard-go + socat and rathole: the table, the
#                     JSON in results/, the table in docs/benchmarks.md (release build, ~5 min)
#   make bench-smoke  every subject once with tiny durations: proves the harness, judges nothing
#                     (uses the PROFILE build, debug by default, so CI needs no release build)

.PHONY: bench bench-smoke

bench:
	$(CARGO) build --release -p pinhole
	PINHOLE=$(abspath $(TARGET_DIR)/release/pinhole) bash bench/run.sh

bench-smoke: build
	BENCH_SMOKE=1 PINHOLE=$(PINHOLE) bash bench/run.sh
