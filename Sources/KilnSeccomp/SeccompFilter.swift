import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Installs seccomp programs on the calling thread.
public enum SeccompFilter {
    /// PR_SET_NO_NEW_PRIVS, required before an unprivileged thread may
    /// install a filter; inherited across fork and exec.
    public static func setNoNewPrivileges() throws {
        try check("prctl(PR_SET_NO_NEW_PRIVS)") { ckiln_set_no_new_privs() }
    }

    /// Call once, before the process starts its first thread: glibc then
    /// allocates, trims and converts times on a filtered thread without the
    /// files and CPU counts it would otherwise look up there, which no
    /// thread role allows (CKiln's `ckiln_prepare_libc_for_thread_filters`).
    public static func prepareProcess() throws {
        try check("mallopt") { ckiln_prepare_libc_for_thread_filters() }
    }

    /// Installs `instructions` on the calling thread only, with `OWN_PID`
    /// resolved to this process's id. Filters stack: the kernel runs every
    /// installed filter and the most restrictive action wins.
    public static func install(_ instructions: [BPFInstruction], role: String) throws {
        guard !instructions.isEmpty, instructions.count <= BPF.maximumInstructions else {
            throw SeccompBundleError.programTooLong(role: role, instructions: instructions.count)
        }
        try setNoNewPrivileges()
        let resolved = OwnProcessID.resolve(instructions, pid: UInt32(getpid()))
        let filters = resolved.map { sock_filter(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k) }
        _ = try filters.withUnsafeBufferPointer { buffer in
            try check("seccomp(SECCOMP_SET_MODE_FILTER)", subject: "role \(role)") {
                ckiln_seccomp_load(buffer.baseAddress, UInt16(buffer.count), 0)
            }
        }
    }

    /// Installs the program the bundle holds for `role`.
    public static func install(role: String, from bundle: SeccompBundle) throws {
        guard let program = bundle.program(for: role) else { throw SeccompBundleError.missingRole(role) }
        try install(program, role: role)
    }
}

extension SeccompBundle {
    /// The AUDIT_ARCH_* value of the running host. A program compiled for
    /// another architecture reads other system call numbers: its
    /// architecture check would kill the process at its first call.
    public static var hostArchitecture: UInt32 {
        #if arch(arm64)
            return ckiln_audit_arch_aarch64()
        #else
            return ckiln_audit_arch_x86_64()
        #endif
    }
}
