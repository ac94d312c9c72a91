# Kiln: every entry point a user or CI needs. Each target does its own set-up.
#
#   make test           install what a fresh Debian 12 machine lacks, build, run every test
#                       (and the property-based API test, integration/api/schemathesis.sh,
#                       and the third-party Firecracker clients, integration/clients)
#   make demo           the main job: a jailed microVM boots and prints its console
#   make fuzz           run each libFuzzer target (Sources/fuzz-*) for FUZZ_SECONDS
#   make bench          print the benchmark figures (jailer and VMM start-up, the API, rate limiters)
#   make bench-density  N services side by side: kiln, runc, QEMU microvm, runsc (DENSITY_ARGS=--quick;
#                       DENSITY_ARGS="--guest linux" boots Debian's kernel with busybox httpd instead)
#   make bench-density-nested  the density benchmark's --guest linux in the nested lane (kiln; or beside QEMU)
#   make nested-assets  download and build the nested lane (integration/nested)
#   make nested-check   boot level 1 of the nested lane and check its /dev/kvm
#   make bench-nested-io  block and network throughput in the nested lane, kiln beside QEMU microvm
#   make bench-vsock    vsock throughput and connection rate, host <-> guest, in lane 1 and the nested lane
#   make nested-policy-trace  kiln-policy trace of the jailed kiln booting Debian with every device, in level 1
#   make policies       regenerate the seccomp bundle built into kiln and kiln-jailer from policies/
#   make format         format the Swift files that `make test` checks (swift format, .swift-format)
#   make security-table rewrite SECURITY.md's table of seccomp roles from `kiln-policy audit`

SHELL := /bin/bash
SWIFT ?= swift
# Debian packages the build, the tests and the demo need (python3: the API
# test's TCP shim and the benchmarks; iproute2: the TAPs of the tests and of
# the density benchmark's smoke test).
DEBIAN_PACKAGES := libseccomp-dev acpica-tools file python3 pkg-config iproute2
# What `make bench-density` adds: the systems it compares, the chart, the profilers.
DENSITY_PACKAGES := runc runsc busybox-static qemu-system-x86 python3-matplotlib valgrind strace
# Host packages of the nested lane (the kernels and busybox are only downloaded;
# gcc and libc6-dev build its static vsock peer, integration/nested/vsock-peer.c).
NESTED_PACKAGES := qemu-system-x86 cpio xz-utils lz4 e2fsprogs iproute2 curl gcc libc6-dev
FIRECRACKER_FILTER := policies/reference/firecracker-seccomp-x86_64.json
FUZZ_SECONDS ?= 60

# Release builds live in their own folder so that `swift build` and
# `swift test` (debug) never rebuild them.
RELEASE_SCRATCH := .build-release
RELEASE_BIN := $(RELEASE_SCRATCH)/release
POLICY_BUNDLE := $(RELEASE_BIN)/policies.kbundle

# The lane-1 test guest: Embedded Swift, built with swiftc because its target
# triple differs from the package's.
GUEST_DIR := integration/guest
GUEST_OUT := integration/out
GUEST_ELF := $(GUEST_OUT)/kiln-test-guest.elf
# The Swift toolchain's own clang and lld, so no other LLVM is needed.
TOOLCHAIN_BIN := $(dir $(realpath $(shell command -v swiftc)))
# No SSE: kvm-pvm's instruction emulator stops the guest with an internal
# error at the vector moves the optimizer makes of struct copies and zeroing.
GUEST_SWIFTC := $(TOOLCHAIN_BIN)swiftc -target x86_64-unknown-none-elf -enable-experimental-feature Embedded \
	-enable-experimental-feature Extern -wmo -Osize -parse-as-library -Xcc -mno-sse -Xcc -mno-sse2

.PHONY: all deps build test format format-check api-test-deps client-test-deps demo fuzz bench bench-jailer bench-vmm bench-api bench-ratelimit \
	bench-density bench-density-nested release guest policies security-table \
	nested-deps nested-assets nested-check bench-nested-io bench-vsock policy-trace nested-policy-trace clean

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

guest: $(GUEST_ELF)

$(GUEST_ELF): $(GUEST_DIR)/Guest.swift $(GUEST_DIR)/Virtio.swift $(GUEST_DIR)/Hostile.swift $(GUEST_DIR)/UDPEcho.swift \
		$(GUEST_DIR)/Vsock.swift $(GUEST_DIR)/entry.S $(GUEST_DIR)/device_interrupt.S $(GUEST_DIR)/guest.ld
	@mkdir -p $(GUEST_OUT)
	$(GUEST_SWIFTC) -c $(GUEST_DIR)/Guest.swift $(GUEST_DIR)/Virtio.swift $(GUEST_DIR)/Hostile.swift \
		$(GUEST_DIR)/UDPEcho.swift $(GUEST_DIR)/Vsock.swift -o $(GUEST_OUT)/guest.o
	$(TOOLCHAIN_BIN)clang -target x86_64-unknown-none-elf -c $(GUEST_DIR)/entry.S -o $(GUEST_OUT)/entry.o
	$(TOOLCHAIN_BIN)clang -target x86_64-unknown-none-elf -c $(GUEST_DIR)/device_interrupt.S -o $(GUEST_OUT)/device_interrupt.o
	$(TOOLCHAIN_BIN)ld.lld -T $(GUEST_DIR)/guest.ld -nostdlib -static $(GUEST_OUT)/entry.o $(GUEST_OUT)/device_interrupt.o \
		$(GUEST_OUT)/guest.o -o $@

# The nested lane (NestedLaneTests) needs QEMU and its assets: installed and
# downloaded once, cached in integration/out. If that fails (no network), the
# suite still runs and those tests say why they skip.
#
# KILN_STRICT=1 (set by .ci/run) turns every skip into a failure: missing
# nested assets, a skipped schemathesis run, and any test `swift test`
# reports skipped or cancelled. Without it the skips are listed at the end.
SWIFT_TEST_LOG := $(GUEST_OUT)/swift-test.log
test: build guest api-test-deps client-test-deps format-check
	@$(MAKE) --no-print-directory nested-assets || { \
	  if [ -n "$$KILN_STRICT" ]; then echo "make test: KILN_STRICT: the nested lane could not be set up" >&2; exit 1; fi; \
	  echo "make test: the nested lane could not be set up; NestedLaneTests will skip and say why" >&2; }
	integration/api/schemathesis.sh $$($(SWIFT) build --show-bin-path)/kiln $$($(SWIFT) build --show-bin-path)/kiln-policy $(GUEST_ELF)
	@python=$(API_TEST_VENV)/bin/python; [ -x $$python ] || python=python3; \
	if $$python -c "import yaml" 2>/dev/null; then \
	  $$python integration/api/compat_table.py --kiln $$($(SWIFT) build --show-bin-path)/kiln \
	    --jailer $$($(SWIFT) build --show-bin-path)/kiln-jailer --guest $(GUEST_ELF); \
	else echo "make test: no Python with PyYAML (api-test-deps failed); README's compatibility tables are not checked" >&2; \
	  [ -z "$$KILN_STRICT" ]; fi
	/usr/bin/python3 integration/bench/density/run.py --smoke --bin $$($(SWIFT) build --show-bin-path)
	PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m unittest discover -s integration/bench/density -p 'test_*.py'
	@mkdir -p $(GUEST_OUT)
	$(SWIFT) test 2>&1 | tee $(SWIFT_TEST_LOG); exit $${PIPESTATUS[0]}
	@integration/test-skips.sh $(SWIFT_TEST_LOG)

# swift format ships with the toolchain; .swift-format is the project's
# style. format-check lints the whole tree (the manifest, Sources, Tests).
FORMATTED_PATHS := Package.swift Sources Tests
format:
	$(SWIFT) format format --in-place --parallel --recursive $(FORMATTED_PATHS)

format-check:
	$(SWIFT) format lint --strict --parallel --recursive $(FORMATTED_PATHS)

# The property-based API test's tool (PyPI), in a virtual environment of its
# own: Debian 12's python3 refuses pip installs into the system (PEP 668,
# EXTERNALLY-MANAGED) and ships without pip. A failed install removes the
# half-made environment and is reported; the test then skips with that reason.
API_TEST_VENV := $(GUEST_OUT)/venv
api-test-deps:
	@command -v schemathesis >/dev/null || [ -x $(API_TEST_VENV)/bin/schemathesis ] || { \
	  $(MAKE) --no-print-directory deps DEBIAN_PACKAGES="python3 python3-venv" \
	  && python3 -m venv $(API_TEST_VENV) && $(API_TEST_VENV)/bin/pip install -q schemathesis; } \
	  || { rm -rf $(API_TEST_VENV); \
	       echo "api-test-deps: could not install schemathesis into $(API_TEST_VENV); the property-based API test will be skipped" >&2; \
	       [ -z "$$KILN_STRICT" ]; }

# The third-party Firecracker clients (integration/clients): each from PyPI,
# pinned, in a virtual environment of its own under integration/out. iptables
# and sudo are what the clients themselves call to make their TAPs and NAT
# rules (inside the suite's network namespace). A client that cannot be
# installed (no PyPI) leaves the reason in <venv>.failed; its test skips with it.
CLIENT_PACKAGES := python3 python3-venv iptables sudo util-linux iproute2
CLIENT_VENVS := $(GUEST_OUT)/client-venvs
CLIENTS := firecracker-python microheart bandsox
client-test-deps:
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(CLIENT_PACKAGES)"
	@mkdir -p $(CLIENT_VENVS); for client in $(CLIENTS); do \
	  venv=$(CLIENT_VENVS)/$$client; requirements=integration/clients/requirements/$$client.txt; \
	  if [ -x $$venv/bin/python ] && cmp -s $$requirements $$venv/requirements.txt; then continue; fi; \
	  rm -rf $$venv $$venv.failed; \
	  if python3 -m venv $$venv && $$venv/bin/pip install -q -r $$requirements > $$venv.log 2>&1; then \
	    cp $$requirements $$venv/requirements.txt; rm -f $$venv.log; \
	  else \
	    rm -rf $$venv; { echo "pip could not install $$requirements (PyPI unreachable?):"; tail -3 $$venv.log; } > $$venv.failed; \
	    echo "client-test-deps: $$client not installed; its test will be skipped (see $$venv.failed)" >&2; \
	  fi; \
	done

# Static release binaries (kiln, kiln-jailer, kiln-policy, the jail probe)
# and the compiled policy bundle beside the jailer, where it looks by default.
release: deps
	@set -o pipefail; for product in kiln kiln-jailer kiln-policy kiln-jail-probe; do \
	  $(SWIFT) build -c release --scratch-path $(RELEASE_SCRATCH) --product $$product | tail -1 || exit 1; \
	done
	@for binary in kiln kiln-jailer kiln-policy kiln-jail-probe; do \
	  file $(RELEASE_BIN)/$$binary | grep -q "static-pie linked" || { echo "$$binary is not static-pie" >&2; exit 1; }; \
	done
	$(RELEASE_BIN)/kiln-policy compile --policies policies --output $(POLICY_BUNDLE)

# The bundle built into kiln and kiln-jailer, regenerated from policies/
# (one command after any policy change or merge; a test fails while it is stale).
BUILTIN_POLICIES := Sources/CKilnBuiltinPolicies/builtin_policies.c
policies: deps
	$(SWIFT) build --product kiln-policy
	$$($(SWIFT) build --show-bin-path)/kiln-policy embed --policies policies --output $(BUILTIN_POLICIES)

# SECURITY.md's table of seccomp roles, rewritten from `kiln-policy audit`
# between its two marker lines (a test fails while it differs from the policies).
security-table: deps
	$(SWIFT) build --product kiln-policy
	$$($(SWIFT) build --show-bin-path)/kiln-policy audit --policies policies --compare $(FIRECRACKER_FILTER) \
	  --format markdown > SECURITY.md.table
	awk 'FNR == NR { table = table $$0 "\n"; next } \
	     /^<!-- kiln-policy audit table: end -->/ { printf "%s", table; skip = 0 } \
	     !skip { print } \
	     /^<!-- kiln-policy audit table: begin/ { skip = 1 }' SECURITY.md.table SECURITY.md > SECURITY.md.new
	rm SECURITY.md.table && mv SECURITY.md.new SECURITY.md

demo: release guest
	integration/demo.sh

fuzz: deps
	@for dir in Sources/fuzz-*; do integration/fuzz/run.sh $$(basename $$dir) $(FUZZ_SECONDS) || exit 1; done

bench: bench-jailer bench-vmm bench-api bench-ratelimit

bench-jailer: deps
	integration/bench/jailer-bench.sh

bench-vmm: release guest
	KILN=$(RELEASE_BIN)/kiln integration/bench/vmm-startup.sh

bench-api: release guest
	KILN=$(RELEASE_BIN)/kiln KILN_POLICY=$(RELEASE_BIN)/kiln-policy integration/bench/api-bench.sh

bench-ratelimit: deps
	integration/bench/ratelimit-bench.sh

# `kiln-policy trace` over every lane-1 workload (integration/policy-trace/run.sh):
# the report per role on stdout and in integration/out/policy-trace.json.
policy-trace: build guest
	integration/policy-trace/run.sh

# Not part of `bench`: minutes, and it starts hundreds of instances
# (integration/bench/density/README.md). DENSITY_ARGS: e.g. --quick, --json FILE.
bench-density: release guest
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(DENSITY_PACKAGES)"
	@case " $(DENSITY_ARGS) " in *" --guest linux "*|*" --guest=linux "*) \
	  $(MAKE) --no-print-directory nested-assets ;; esac
	/usr/bin/python3 integration/bench/density/run.py $(DENSITY_ARGS)

# The density benchmark's --guest linux where a KVM boots Debian's kernel: run.py
# itself in the nested lane's level 1 (DENSITY_NESTED_NS: the Ns;
# DENSITY_NESTED_SYSTEMS: kiln, or kiln,qemu-microvm side by side).
DENSITY_NESTED_NS ?= 1,2
DENSITY_NESTED_SYSTEMS ?= kiln
bench-density-nested: release nested-assets
	integration/nested/run.sh --density-linux $(DENSITY_NESTED_NS) --density-systems $(DENSITY_NESTED_SYSTEMS)

# The nested lane (integration/nested/README.md); `test` runs it with kiln.
nested-deps:
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(NESTED_PACKAGES)"

nested-assets: nested-deps
	integration/nested/assets.sh

nested-check: nested-assets
	integration/nested/run.sh --check

# Not part of `bench`: it takes minutes of TCG (BENCH_NESTED_ARGS: e.g. --reps 5).
bench-nested-io: release nested-assets
	integration/nested/run.sh --vmm $(RELEASE_BIN)/kiln --vmm /usr/bin/qemu-system-x86_64 --bench $(BENCH_NESTED_ARGS)

# `kiln-policy trace` over the nested lane's workload: the release kiln,
# jailed (cgroup v2 limits too) in level 1, booting Debian with block, net,
# rng and vsock (4 MiB each way: the calls are those of 64, in less time).
# Every kiln system call stops for the tracer, so this takes minutes of TCG
# and is not part of `test`. Per-role lines on stdout; the report in
# integration/out/nested/policy-trace.txt; fails when a role refuses a call.
nested-policy-trace: release nested-assets
	integration/nested/run.sh --vmm $(RELEASE_BIN)/kiln-jailer --devices --vsock --vsock-mib 4 --vcpus 2 --cgroup-v2 \
	  --trace --policies policies

# Not part of `bench` either: the nested half takes minutes of TCG
# (VSOCK_MIB, VSOCK_CONNS, VSOCK_NESTED_CONNS, VSOCK_NESTED=0: see the script).
bench-vsock: release guest nested-assets
	KILN=$(RELEASE_BIN)/kiln integration/bench/vsock-bench.sh

clean:
	rm -rf .build .build-* $(GUEST_OUT)
