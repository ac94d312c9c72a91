import CKiln
import KilnBuiltinPolicies
import KilnSeccomp
import KilnSystem
import KilnTelemetry

/// Each VMM thread's seccomp filter, from the bundle built into kiln (or the
/// one --seccomp-filter names), or none with --no-seccomp. Roles: `vmm` (the
/// event loop), `api`, `vcpu` (policies/README.md).
///
/// A thread enters its role first thing, before it touches untrusted input:
/// the API thread before it accepts a connection, a vCPU before its first
/// KVM_RUN. The event loop enters `vmm` last, once every other thread exists,
/// because a new thread inherits its creator's filters and `vmm` has no clone.
struct SeccompRoles {
    let bundle: SeccompBundle?

    static let threadRoles = ["vmm", "api", "vcpu"]

    /// Reads and checks the bundle: the file `path` (--seccomp-filter), else
    /// the policies built into kiln; none with --no-seccomp.
    /// Called before any thread exists, it also prepares the C library for
    /// the thread filters (with --no-seccomp too, so that both allocate alike).
    static func load(path: String?, noSeccomp: Bool) throws -> SeccompRoles {
        do {
            try SeccompFilter.prepareProcess()
        } catch {
            throw LaunchError.libraryPreparation(error)
        }
        if noSeccomp { return SeccompRoles(bundle: nil) }
        let source = path.map { "--seccomp-filter \($0)" } ?? "the built-in seccomp bundle"
        let bytes: [UInt8]
        let bundle: SeccompBundle
        do {
            bytes = try path.map { try FileSystem.readFile($0, limit: 4 << 20) } ?? BuiltinPolicies.bytes
        } catch {
            throw LaunchError.bundleUnreadable(source: source, error)
        }
        do {
            bundle = try SeccompBundle(decoding: bytes)
        } catch {
            throw LaunchError.bundleInvalid(
                source: source, error, firecrackerFormat: !bytes.starts(with: SeccompBundle.magic))
        }
        // A program for another architecture reads other system call
        // numbers: its architecture check would kill kiln at its first call.
        guard bundle.architecture == SeccompBundle.hostArchitecture else {
            throw LaunchError.bundleArchitecture(
                source: source, bundle: bundle.architecture, host: SeccompBundle.hostArchitecture)
        }
        for role in threadRoles where bundle.program(for: role) == nil {
            throw LaunchError.bundleRoleMissing(source: source, role: role)
        }
        return SeccompRoles(bundle: bundle)
    }

    /// Names the calling thread (logs, the SIGSYS report) and installs its
    /// role's filter. `label` tells threads of one role apart ("vcpu0").
    func enter(role: String, label: String) throws {
        if label != "vmm" { _ = ckiln_set_thread_name("kiln-" + label) }
        ThreadRole.set(label)
        ckiln_sigsys_set_thread_role(label)
        guard let bundle else { return }
        try SeccompFilter.install(role: role, from: bundle)
    }
}
