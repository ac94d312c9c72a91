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
