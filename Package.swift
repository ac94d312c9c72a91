// swift-tools-version:6.0
import PackageDescription

// Kiln: a security-hardened microVM sandbox.
//
// Layers, bottom up: C shims (what Swift cannot import), typed system
// wrappers, pure modules (JSON, policy language, config, guest memory,
// virtio, ACPI), the KVM machine, and thin executables on top.

/// `kiln` and `kiln-jailer` run in an empty jail: they are fully static, with
/// no Foundation and no NSS look-ups (docs/platform.md, "Static linking").
/// They are static-pie, so the kernel
/// loads them at a random address like any PIE (ASLR). They link with
/// linker/static-pie-ld: the toolchain's lld (the system's gold does not know
/// `--no-dynamic-linker`, which `-static-pie` passes) without the `$ORIGIN`
/// rpath SwiftPM adds, which glibc's static-pie start-up refuses.
/// Everything constant after start-up is read-only then: `linker/relro.ld`
/// moves the constants lld would leave writable into PT_GNU_RELRO, and
/// `-z now` adds the ifunc slots of `.got.plt` (docs/platform.md,
/// "Read-only constants"). SwiftPM does not track the script as an input of
/// the link: remove the binaries after changing it.
/// Relative relocations are packed as RELR (`-z pack-relative-relocs`, which
/// glibc 2.36's static-pie start-up applies), so that each start of kiln or
/// the jailer reads a table of 3–4 KiB instead of 400–470 KiB of `.rela.dyn`
/// (integration/bench/density/README.md, "Where the cost goes").
let staticExecutable: [LinkerSetting] = [
    .unsafeFlags([
        "-static-executable", "-ld-path=\(Context.packageDirectory)/linker/static-pie-ld", "-Xclang-linker",
        "-static-pie", "-Xlinker", "-T", "-Xlinker", "\(Context.packageDirectory)/linker/relro.ld",
        "-Xlinker", "-z", "-Xlinker", "now", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
    ])
]

/// `kiln` adds to that, for the memory and start-up of each instance
/// (integration/bench/density/README.md, "Where the cost goes"): the
/// functions a launch runs placed together first (`linker/kiln.order`,
/// written by `linker/kiln_order.py`), so that the kernel's fault-around maps
/// those pages and not the whole text. Names the link no longer has are
/// skipped quietly.
let vmmExecutable: [LinkerSetting] =
    staticExecutable + [
        .unsafeFlags([
            "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/linker/kiln.order",
            "-Xlinker", "--no-warn-symbol-ordering",
        ])
    ]

/// The Swift modules linked into `kiln` and `kiln-jailer`. Metadata of
/// concrete generic types comes from direct accessor calls rather than
/// mangled names the runtime demangles and checks, conformance by
/// conformance, against every record in the binary (a fifth of a launch's
/// instructions, and of the jailer's); each function sits in its
/// own section, so the linker drops unused ones and `linker/kiln.order` can
/// place the start-up path together.
let vmmSwiftSettings: [SwiftSetting] = [
    .unsafeFlags([
        "-Xfrontend", "-disable-concrete-type-metadata-mangled-name-accessors", "-Xfrontend", "-function-sections",
    ])
]

/// `make fuzz` sets KILN_FUZZ=1, and the fuzz targets leave `main` to
/// libFuzzer. Every other build gives them a replay `main`, so that they link
/// in any configuration (docs/platform.md, "libFuzzer").
let fuzzEntryPoint: [SwiftSetting] = Context.environment["KILN_FUZZ"] == nil ? [.define("KILN_FUZZ_REPLAY")] : []

let package = Package(
    name: "Kiln",
    products: [
        .executable(name: "kiln-policy", targets: ["kiln-policy"]),
        .executable(name: "kiln-jailer", targets: ["kiln-jailer"]),

        .executable(name: "kiln", targets: ["kiln"]),
    ],
    targets: [
        // MARK: C shims and system libraries
        .target(name: "CKiln"),
        .target(name: "CKilnStart"),
        // The compiled policies as C bytes (generated: `make policies`)
        .target(name: "CKilnBuiltinPolicies"),
        .systemLibrary(
            name: "CSeccomp", pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]),

        // MARK: Foundations
        .target(name: "KilnSystem", dependencies: ["CKiln"], swiftSettings: vmmSwiftSettings),
        .target(name: "KilnJSON", swiftSettings: vmmSwiftSettings),
        // Little-endian integers in byte arrays, for every binary format (pure)
        .target(name: "KilnBytes", swiftSettings: vmmSwiftSettings),
        .target(name: "KilnTelemetry", dependencies: ["KilnSystem", "KilnJSON"], swiftSettings: vmmSwiftSettings),

        // MARK: Seccomp: bundle format, BPF interpreter, loader (no libseccomp)
        .target(
            name: "KilnSeccomp", dependencies: ["KilnBytes", "KilnSystem", "CKiln"], swiftSettings: vmmSwiftSettings),
        // MARK: Policy language, compiler (libseccomp) and audit
        .target(name: "KilnPolicy", dependencies: ["KilnSeccomp", "KilnSystem", "KilnJSON", "CSeccomp", "CKiln"]),
        // The bundle kiln and kiln-jailer use when none is named; kiln-policy
        // must not need it, so that it can regenerate a stale or broken copy.
        .target(name: "KilnBuiltinPolicies", dependencies: ["CKilnBuiltinPolicies"], swiftSettings: vmmSwiftSettings),

        // MARK: VMM: guest memory, configuration, the KVM machine
        .target(name: "KilnMemory", dependencies: ["KilnSystem"], swiftSettings: vmmSwiftSettings),
        .target(name: "KilnConfig", dependencies: ["KilnJSON"], swiftSettings: vmmSwiftSettings),
        .target(
            name: "KilnMachine",
            dependencies: [
                "KilnMemory", "KilnConfig", "KilnSystem", "KilnTelemetry", "KilnACPI", "KilnBytes", "KilnVirtio",
                "CKiln",
            ], swiftSettings: vmmSwiftSettings),

        // MARK: virtio-mmio transport, split queues and devices (pure: no KVM, no threads)
        .target(
            name: "KilnVirtio", dependencies: ["KilnBytes", "KilnMemory", "KilnSystem"], swiftSettings: vmmSwiftSettings
        ),

        // MARK: The Firecracker-compatible API: HTTP/1.1 parser, routes, models
        .target(
            name: "KilnAPI", dependencies: ["KilnJSON", "KilnSystem", "KilnConfig"], swiftSettings: vmmSwiftSettings),

        // MARK: ACPI tables and AML for the guest (pure)
        .target(name: "KilnACPI", dependencies: ["KilnBytes"], swiftSettings: vmmSwiftSettings),

        // MARK: Jail: the jailer's steps, one file per concern
        .target(
            name: "KilnJail", dependencies: ["KilnBytes", "KilnSeccomp", "KilnSystem", "CKiln"],
            swiftSettings: vmmSwiftSettings),

        // MARK: Executables
        // Static too, so that `kiln-policy trace` runs where kiln does (the
        // nested lane's level 1 has no Swift runtime); libseccomp links statically.
        .executableTarget(
            name: "kiln-policy", dependencies: ["KilnPolicy", "KilnSystem"],
            linkerSettings: staticExecutable),
        .executableTarget(
            name: "kiln-jailer", dependencies: ["KilnJail", "KilnSystem", "KilnBuiltinPolicies", "CKilnStart"],
            swiftSettings: vmmSwiftSettings, linkerSettings: staticExecutable),
        .executableTarget(
            name: "kiln-jail-probe", dependencies: ["KilnSystem", "KilnJSON", "KilnSeccomp", "CKiln", "CKilnStart"],
            linkerSettings: staticExecutable),
        .executableTarget(name: "kiln-jailer-bench", dependencies: ["KilnJail", "KilnSystem", "KilnSeccomp", "CKiln"]),
        // A rate-limited virtio-blk device's throughput against its configured rate (`make bench-ratelimit`)
        .executableTarget(
            name: "kiln-ratelimit-bench", dependencies: ["KilnVirtio", "KilnMachine", "KilnMemory", "KilnSystem"]),

        // MARK: libFuzzer targets, one per parser (`make fuzz`)
        .target(name: "KilnFuzzSupport", dependencies: ["KilnSystem"]),
        .executableTarget(
            name: "fuzz-json", dependencies: ["KilnJSON", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-http-request", dependencies: ["KilnAPI", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),

        .executableTarget(
            name: "kiln",
            dependencies: [
                "KilnMachine", "KilnConfig", "KilnSystem", "KilnAPI", "KilnTelemetry", "KilnSeccomp",
                "KilnBuiltinPolicies", "CKiln", "CKilnStart",
            ],
            swiftSettings: vmmSwiftSettings, linkerSettings: vmmExecutable),

        // A static stand-in for the VMM's threads, run by the kernel tests
        // under the compiled filters.
        .executableTarget(
            name: "policy-rehearsal", dependencies: ["KilnSeccomp", "KilnSystem", "CKiln"],
            linkerSettings: staticExecutable),
        .executableTarget(
            name: "fuzz-policy-parser", dependencies: ["KilnPolicy", "KilnSystem", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),

        .executableTarget(
            name: "fuzz-vm-config", dependencies: ["KilnConfig", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-kernel-image", dependencies: ["KilnMachine", "KilnMemory", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-virtqueue", dependencies: ["KilnVirtio", "KilnMemory", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-virtio-block", dependencies: ["KilnVirtio", "KilnMemory", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-vsock-packet", dependencies: ["KilnVirtio", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-virtio-mmio", dependencies: ["KilnVirtio", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-net-frames", dependencies: ["KilnVirtio", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-vsock-device", dependencies: ["KilnVirtio", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),
        .executableTarget(
            name: "fuzz-legacy-devices", dependencies: ["KilnMachine", "KilnFuzzSupport"],
            swiftSettings: fuzzEntryPoint),

        // MARK: Tests
        .target(name: "KilnTestSupport", dependencies: ["KilnSystem"], path: "Tests/KilnTestSupport"),
        .testTarget(name: "KilnBytesTests", dependencies: ["KilnBytes"]),
        .testTarget(name: "KilnJSONTests", dependencies: ["KilnJSON", "KilnTestSupport"]),
        .testTarget(name: "KilnSystemTests", dependencies: ["KilnSystem"]),
        .testTarget(name: "KilnSeccompTests", dependencies: ["KilnSeccomp", "CKiln"]),
        .testTarget(name: "KilnTelemetryTests", dependencies: ["KilnTelemetry", "KilnJSON"]),
        .testTarget(name: "KilnAPITests", dependencies: ["KilnAPI", "KilnTestSupport"]),
        .testTarget(name: "KilnMemoryTests", dependencies: ["KilnMemory"]),
        .testTarget(name: "KilnConfigTests", dependencies: ["KilnConfig", "KilnJSON", "KilnTestSupport"]),
        .testTarget(name: "KilnACPITests", dependencies: ["KilnACPI", "KilnTestSupport"]),
        .testTarget(
            name: "KilnVirtioTests",
            dependencies: [
                "KilnVirtio", "KilnBytes", "KilnMemory", "KilnSystem", "KilnTestSupport",
                // vsock's device test drives the real Unix-socket backend
                "KilnMachine",
            ]),

        .testTarget(
            name: "KilnJailTests", dependencies: ["KilnJail", "KilnSeccomp", "KilnSystem", "KilnJSON", "CKiln"]),

        .testTarget(
            name: "KilnMachineTests",
            dependencies: [
                "KilnMachine", "KilnMemory", "KilnConfig", "KilnSystem", "KilnSeccomp", "KilnVirtio", "KilnJSON",
                "CKiln", "KilnTestSupport",
                "KilnTelemetry",
            ]),
        // The two boot lanes through the real binaries: kiln jailed on this
        // machine's KVM, and stock Linux on the nested KVM (integration/nested).
        .testTarget(name: "KilnLaneTests", dependencies: ["KilnTestSupport", "KilnJail", "CKiln", "KilnJSON"]),
        // The source tree itself: no type name declared in two modules.
        .testTarget(name: "KilnSourceTreeTests", dependencies: ["KilnTestSupport"]),

        .target(name: "CPolicyConstantsCheck", path: "Tests/CPolicyConstantsCheck"),
        .testTarget(
            name: "KilnPolicyTests",
            dependencies: [
                "KilnPolicy", "KilnSeccomp", "KilnSystem", "KilnJSON", "CKiln", "CSeccomp", "CPolicyConstantsCheck",
                "KilnTestSupport",
                "KilnBuiltinPolicies",
            ]),
    ],
    swiftLanguageModes: [.v6]
)
