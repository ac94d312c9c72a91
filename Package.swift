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
        .executable(name: "kiln", targets: ["kiln"]),
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

        // MARK: VMM: guest memory, configuration, the KVM machine
        .target(name: "KilnMemory", dependencies: ["KilnSystem"]),
        .target(name: "KilnConfig", dependencies: ["KilnJSON"]),
        .target(name: "KilnMachine", dependencies: ["KilnMemory", "KilnConfig", "KilnSystem", "CKiln"]),

        // MARK: Executables
        .executableTarget(name: "kiln-policy", dependencies: ["KilnPolicy", "KilnSystem"]),
        .executableTarget(name: "kiln", dependencies: ["KilnMachine", "KilnConfig", "KilnSystem", "CKilnStart"],
                          linkerSettings: staticExecutable),

        // MARK: Tests
        .testTarget(name: "KilnJSONTests", dependencies: ["KilnJSON"]),
        .testTarget(name: "KilnSystemTests", dependencies: ["KilnSystem"]),
        .testTarget(name: "KilnSeccompTests", dependencies: ["KilnSeccomp"]),
        .testTarget(name: "KilnPolicyTests", dependencies: ["KilnPolicy", "KilnSeccomp"]),
        .testTarget(name: "KilnMemoryTests", dependencies: ["KilnMemory"]),
        .testTarget(name: "KilnConfigTests", dependencies: ["KilnConfig", "KilnJSON"]),
        .testTarget(name: "KilnMachineTests", dependencies: ["KilnMachine", "KilnMemory", "KilnConfig"]),
    ],
    swiftLanguageModes: [.v5]
)
