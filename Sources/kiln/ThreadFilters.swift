import KilnMachine
import KilnSeccomp
import KilnSystem

/// `--seccomp-filter`: the compiled bundle (kiln-policy compile), read and
/// checked whole before any thread exists, then one program per thread,
/// which each thread installs on itself (seccomp filters are per thread and
/// stack on the jailer's pre-exec filter; policies/README.md).
struct ThreadFilters {
    static let vcpuRole = "vcpu"
    static let eventLoopRole = "vmm"
    /// 16 roles of 4096 instructions fit with room to spare.
    static let maximumBundleBytes = 1 << 20

    let bundle: SeccompBundle

    init(path: String) throws {
        do {
            bundle = try SeccompBundle(decoding: try FileSystem.readFile(path, limit: Self.maximumBundleBytes))
            // A program for another architecture would kill kiln at its first call.
            guard bundle.architecture == SeccompBundle.hostArchitecture else {
                throw SeccompBundleError.malformed("compiled for architecture 0x\(String(bundle.architecture, radix: 16)), "
                                                   + "this host is 0x\(String(SeccompBundle.hostArchitecture, radix: 16))")
            }
            for role in [Self.vcpuRole, Self.eventLoopRole] where bundle.program(for: role) == nil {
                throw SeccompBundleError.missingRole(role)
            }
        } catch {
            throw BundleError(description: "--seccomp-filter \(path): \(error)")
        }
    }

    struct BundleError: Error, CustomStringConvertible {
        let description: String
    }

    /// Installs the calling thread's program: `MachineHost.confineThread`.
    func confine(_ thread: MachineThreadRole) throws {
        switch thread {
        case .vcpu: try SeccompFilter.install(role: Self.vcpuRole, from: bundle)
        case .eventLoop: try SeccompFilter.install(role: Self.eventLoopRole, from: bundle)
        }
    }
}
