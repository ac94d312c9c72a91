# Kiln: every entry point a user or CI needs. Each target does its own set-up.
#
#   make test   install what a fresh Debian 12 machine lacks, build, run every test
#   make demo   the main job (see README.md)
#   make fuzz   run each libFuzzer target for a short while
#   make bench  print the benchmark figures
#   make nested-assets  download and build the nested lane's guests (integration/nested)
#   make nested-check   boot level 1 of the nested lane and check its /dev/kvm

SHELL := /bin/bash
SWIFT ?= swift
# Debian packages the build, the tests and the demo need.
DEBIAN_PACKAGES := libseccomp-dev libcap-dev acpica-tools
POLICY_BUNDLE := .build/policies.kbundle
# Host packages of the nested lane (the kernels and busybox are only downloaded).
NESTED_PACKAGES := qemu-system-x86 cpio xz-utils lz4

.PHONY: all deps build test demo fuzz bench clean nested-deps nested-assets nested-check

all: build

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build

test: build
	$(SWIFT) test

demo: build
	$(SWIFT) run kiln-policy audit --policies policies

# Every Sources/fuzz-* target, FUZZ_SECONDS each, on its seed corpus.
FUZZ_SECONDS ?= 60
fuzz: deps
	@for dir in Sources/fuzz-*; do integration/fuzz/run.sh $$(basename $$dir) $(FUZZ_SECONDS) || exit 1; done

clean:
	rm -rf .build .build-*

# MARK: nested lane (integration/nested/README.md); slow, so not part of `test`
nested-deps:
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(NESTED_PACKAGES)"

nested-assets: nested-deps
	integration/nested/assets.sh

nested-check: nested-assets
	integration/nested/run.sh --check

# kiln-jailer: static release builds of the jailer and its test probe; the
# compiled policy bundle, when built, goes beside the jailer (its default).
.PHONY: jailer bench-jailer
jailer: deps
	$(SWIFT) build -c release --product kiln-jailer
	$(SWIFT) build -c release --product kiln-jail-probe
	@bin=$$($(SWIFT) build -c release --show-bin-path); \
	  if [ -f $(POLICY_BUNDLE) ]; then cp $(POLICY_BUNDLE) $$bin/policies.kbundle; fi; \
	  file $$bin/kiln-jailer $$bin/kiln-jail-probe | grep -q "dynamically linked" && { echo "not static"; exit 1; } || true

bench-jailer: deps
	integration/bench/jailer-bench.sh

bench: bench-jailer

# --- VMM: the lane-1 test guest (Embedded Swift, built with swiftc: its
# target triple differs from the package's) and the static kiln binary.
GUEST_DIR := integration/guest
GUEST_OUT := integration/out
GUEST_ELF := $(GUEST_OUT)/kiln-test-guest.elf
GUEST_SWIFTC := swiftc -target x86_64-unknown-none-elf -enable-experimental-feature Embedded \
	-enable-experimental-feature Extern -wmo -Osize -parse-as-library

.PHONY: guest build-static bench-vmm

guest: $(GUEST_ELF)

$(GUEST_ELF): $(GUEST_DIR)/Guest.swift $(GUEST_DIR)/entry.S $(GUEST_DIR)/guest.ld
	@mkdir -p $(GUEST_OUT)
	$(GUEST_SWIFTC) -c $(GUEST_DIR)/Guest.swift -o $(GUEST_OUT)/guest.o
	clang -target x86_64-unknown-none-elf -c $(GUEST_DIR)/entry.S -o $(GUEST_OUT)/entry.o
	ld.lld -T $(GUEST_DIR)/guest.ld -nostdlib -static $(GUEST_OUT)/entry.o $(GUEST_OUT)/guest.o -o $@

test: guest

# A static, release `kiln` at .build/release/kiln.
build-static: deps
	$(SWIFT) build -c release --product kiln

bench-vmm: guest build-static
	integration/bench/vmm-startup.sh
bench: bench-vmm
