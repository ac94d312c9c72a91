import CKiln
import KilnSeccomp
import KilnSystem
import KilnTelemetry

/// Each VMM thread's seccomp filter, from the bundle `kiln-policy compile`
/// writes (--seccomp-filter), or none with --no-seccomp. Roles: `vmm` (the
/// event loop), `api`, `vcpu` (policies/README.md).
///
/// A thread enters its role first thing, before it touches untrusted input:
/// the API thread before it accepts a connection, a vCPU before its first
/// KVM_RUN. The event loop enters `vmm` last, once every other thread exists,
/// because a new thread inherits its creator's filters and `vmm` has no clone.
struct SeccompRoles {
    let bundle: SeccompBundle?

    static let threadRoles = ["vmm", "api", "vcpu"]

    /// Reads and checks the bundle; nil `path` means --no-seccomp.
    /// Called before any thread exists, it also prepares the C library for
    /// the thread filters (with --no-seccomp too, so that both allocate alike).
    static func load(path: String?) throws -> SeccompRoles {
        do {
            try SeccompFilter.prepareProcess()
        } catch {
            throw LaunchError("preparing the C library for the thread filters: \(error)")
        }
        guard let path else { return SeccompRoles(bundle: nil) }
        let bundle: SeccompBundle
        do {
            bundle = try SeccompBundle(decoding: try FileSystem.readFile(path, limit: 4 << 20))
        } catch {
            throw LaunchError("--seccomp-filter \(path): \(error)")
        }
        // A program for another architecture reads other system call
        // numbers: its architecture check would kill kiln at its first call.
        guard bundle.architecture == SeccompBundle.hostArchitecture else {
            throw LaunchError("--seccomp-filter \(path): compiled for architecture 0x\(String(bundle.architecture, radix: 16)), "
                              + "this host is 0x\(String(SeccompBundle.hostArchitecture, radix: 16))")
        }
        for role in threadRoles where bundle.program(for: role) == nil {
            throw LaunchError("--seccomp-filter \(path): the bundle has no program for the \(role) role")
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
