// swift-tools-version:6.0
import PackageDescription

// Kiln: a security-hardened microVM sandbox.
//
// Layers, bottom up: C shims (what Swift cannot import), typed system
// wrappers, pure modules (JSON, policy language, config, guest memory,
// virtio, ACPI), the KVM machine, and thin executables on top.

/// `kiln` and `kiln-jailer` run in an empty jail: they are fully static, with
/// no Foundation and no NSS look-ups (platform notes, "Static linking").
let staticExecutable: [LinkerSetting] = [.unsafeFlags(["-static-executable"])]

/// `make fuzz` sets KILN_FUZZ=1, and the fuzz targets leave `main` to
/// libFuzzer. Every other build gives them a replay `main`, so that they link
/// in any configuration (platform notes, "libFuzzer").
let fuzzEntryPoint: [SwiftSetting] = Context.environment["KILN_FUZZ"] == nil ? [.define("KILN_FUZZ_REPLAY")] : []

let package = Package(
    name: "Kiln",
    products: [
        .executable(name: "kiln-policy", targets: ["kiln-policy"]),
    ],
    targets: [
        // MARK: C shims and system libraries
        .target(name: "CKiln"),
        .target(name: "CKilnStart"),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp",
                       providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap",
                       providers: [.apt(["libcap-dev"])]),

        // MARK: Foundations
        .target(name: "KilnSystem", dependencies: ["CKiln"]),
        .target(name: "KilnJSON"),

        // MARK: Seccomp: bundle format, BPF interpreter, loader (no libseccomp)
        .target(name: "KilnSeccomp", dependencies: ["KilnSystem", "CKiln"]),
        // MARK: Policy language, compiler (libseccomp) and audit
        .target(name: "KilnPolicy", dependencies: ["KilnSeccomp", "KilnSystem", "KilnJSON", "CSeccomp"]),

        // MARK: Executables
        .executableTarget(name: "kiln-policy", dependencies: ["KilnPolicy", "KilnSystem"]),
        // A static stand-in for the VMM's threads, run by the kernel tests
        // under the compiled filters.
        .executableTarget(name: "policy-rehearsal", dependencies: ["KilnSeccomp", "KilnSystem", "CKiln"],
                          linkerSettings: staticExecutable),
        .executableTarget(name: "fuzz-policy-parser", dependencies: ["KilnPolicy", "KilnSystem"],
                          swiftSettings: fuzzEntryPoint),

        // MARK: Tests
        .testTarget(name: "KilnJSONTests", dependencies: ["KilnJSON"]),
        .testTarget(name: "KilnSystemTests", dependencies: ["KilnSystem"]),
        .testTarget(name: "KilnSeccompTests", dependencies: ["KilnSeccomp"]),
        .target(name: "CPolicyConstantsCheck", path: "Tests/CPolicyConstantsCheck"),
        .testTarget(name: "KilnPolicyTests",
                    dependencies: ["KilnPolicy", "KilnSeccomp", "KilnSystem", "KilnJSON", "CKiln", "CSeccomp", "CPolicyConstantsCheck"]),
    ],
    swiftLanguageModes: [.v5]
)
