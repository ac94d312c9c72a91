# Kiln: every entry point a user or CI needs. Each target does its own set-up.
#
#   make test   install what a fresh Debian 12 machine lacks, build, run every test
#   make demo   the main job (see README.md)
#   make fuzz   run each libFuzzer target for a short while
#   make bench  print the benchmark figures

SHELL := /bin/bash
SWIFT ?= swift
# Debian packages the build, the tests and the demo need.
DEBIAN_PACKAGES := libseccomp-dev libcap-dev acpica-tools
POLICY_BUNDLE := .build/policies.kbundle
FIRECRACKER_FILTER := policies/reference/firecracker-seccomp-x86_64.json
# libFuzzer targets (Sources/fuzz-<name>), built apart from the normal build.
FUZZ_TARGETS := policy-parser
FUZZ_SCRATCH := .build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all deps build test demo fuzz bench clean

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
	.build/debug/kiln-policy compile --policies policies --output $(POLICY_BUNDLE)
	.build/debug/kiln-policy audit --policies policies --compare $(FIRECRACKER_FILTER)

# KILN_FUZZ=1 leaves `main` to libFuzzer (see Package.swift). SwiftPM's
# --sanitize fuzzer instruments only the executable's own module, so the
# coverage flags are passed to every module explicitly. New inputs go to
# $(FUZZ_SCRATCH)/corpus, the seeds in fuzz/corpus stay as committed.
FUZZ_COVERAGE := -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp
fuzz: deps
	@set -e; for target in $(FUZZ_TARGETS); do \
	  KILN_FUZZ=1 $(SWIFT) build -c release --sanitize fuzzer --sanitize address $(FUZZ_COVERAGE) \
	    --product fuzz-$$target --scratch-path $(FUZZ_SCRATCH); \
	  mkdir -p $(FUZZ_SCRATCH)/corpus/$$target; \
	  SWIFT_BACKTRACE=enable=no $(FUZZ_SCRATCH)/release/fuzz-$$target \
	    $(FUZZ_SCRATCH)/corpus/$$target fuzz/corpus/$$target \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_SCRATCH)/; \
	done

clean:
	rm -rf .build .build-*
