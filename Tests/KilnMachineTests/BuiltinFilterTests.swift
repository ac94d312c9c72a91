#if canImport(Glibc)
import Glibc
#endif
import KilnSystem
import KilnTestSupport
import Testing

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
        let parent = try Lane1.spawn(["--api-sock", socketPath, "--console-output", console],
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
