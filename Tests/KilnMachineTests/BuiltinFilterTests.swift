import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// kiln started as Firecracker's clients start it, with no seccomp flag,
/// runs under the policies built into it.
@Suite(.enabled(if: Lane1.ready, Lane1.skipReason))
struct BuiltinFilterTests {
    /// After InstanceStart, every thread (the event loop, the API thread and
    /// both vCPUs) is in seccomp filter mode with two filters: kiln's launch
    /// filter, inherited from the main thread, and its own role's.
    @Test func aPlainStartFiltersEveryThreadWithTheBuiltinBundle() throws {
        let scratch = "/tmp/kiln-builtin-filter-\(getpid())"
        let socketPath = scratch + ".sock", console = scratch + ".console", errors = scratch + ".err"
        defer { for path in [socketPath, console, errors] { unlink(path) } }
        let parent = try Lane1.spawn(
            ["--api-sock", socketPath, "--console-output", console],
            stdout: "/dev/null", stderr: errors, seconds: 60)
        defer { kill(parent, SIGTERM); _ = Lane1.wait(parent) }
        let client = try UnixHTTPClient(path: socketPath)
        // "echo": the guest polls its UART for ever, so kiln runs until the test ends it.
        let boot = "{\"kernel_image_path\": \"\(Lane1.guest)\", \"boot_args\": \"console=ttyS0 echo\"}"
        #expect(try client.request("PUT", "/boot-source", boot).status == 204)
        #expect(try client.request("PUT", "/machine-config", "{\"vcpu_count\": 2, \"mem_size_mib\": 64}").status == 204)
        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}").status == 204)

        let children = Lane1.read("/proc/\(parent)/task/\(parent)/children").split(separator: " ")
        let kiln = try #require(children.first.flatMap { Int32($0.trimmingPrefix(" ")) }, "no kiln under timeout(1)")
        var seen: [String: String] = [:]
        let settled = APILane.eventually {
            seen = Self.threadFilters(kiln)
            return seen.count == 4 && seen.values.allSatisfy { $0 == "2/2" }
        }
        #expect(settled, "thread: Seccomp/Seccomp_filters = \(seen); stderr: \(Lane1.read(errors).suffix(2000))")
        #expect(Set(seen.keys) == ["kiln", "kiln-api", "kiln-vcpu0", "kiln-vcpu1"], "\(seen)")
        #expect(!Lane1.read(errors).contains("--no-seccomp"))

        // With the VM and its vCPUs made, kiln holds no /dev/kvm descriptor:
        // KVM_CREATE_VM has nothing to act on (and no thread role allows it).
        let links = Self.descriptorTargets(kiln)
        #expect(
            links.contains("anon_inode:kvm-vm") && links.contains { $0.hasPrefix("anon_inode:kvm-vcpu") }, "\(links)")
        #expect(!links.contains("/dev/kvm"), "kiln keeps /dev/kvm open after InstanceStart: \(links)")

        // The event loop still kicks its own vCPU threads (tgkill on kiln's
        // own pid, the vmm role's only target): a pause and a resume each
        // interrupt both vCPUs' KVM_RUN. Had the filter refused, kiln would
        // have died of the trap (exit 148).
        #expect(try client.request("PATCH", "/vm", "{\"state\": \"Paused\"}").status == 204)
        #expect(try client.request("PATCH", "/vm", "{\"state\": \"Resumed\"}").status == 204)
        #expect(kill(kiln, 0) == 0, "kiln ended: \(Lane1.read(errors).suffix(2000))")
    }

    /// What each of the process's descriptors refers to.
    static func descriptorTargets(_ pid: pid_t) -> Set<String> {
        var targets: Set<String> = []
        for fd in (try? FileSystem.listDirectory("/proc/\(pid)/fd")) ?? [] {
            var buffer = [CChar](repeating: 0, count: 256)
            let count = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
            if count > 0 {
                targets.insert(String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return targets
    }

    /// Each thread's name and "Seccomp/Seccomp_filters" from /proc; KVM's
    /// own worker (kvm-nx-lpage-recovery) is a task of the process too.
    static func threadFilters(_ pid: pid_t) -> [String: String] {
        var result: [String: String] = [:]
        for tid in (try? FileSystem.listDirectory("/proc/\(pid)/task")) ?? [] {
            let name = Lane1.read("/proc/\(pid)/task/\(tid)/comm").split(separator: "\n").first.map(String.init) ?? ""
            guard !name.hasPrefix("kvm-") else { continue }
            let status = Lane1.read("/proc/\(pid)/task/\(tid)/status").split(separator: "\n")
            func field(_ key: String) -> String {
                status.first { $0.hasPrefix(key + ":") }.map { String($0.split(separator: "\t").last ?? "") } ?? "?"
            }
            result[name] = field("Seccomp") + "/" + field("Seccomp_filters")
        }
        return result
    }
}
