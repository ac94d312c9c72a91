import KilnTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// Where the lanes' inputs are: the package's scripts and built assets, and
/// the executables `swift build` put beside this test binary.
enum Lanes {
    static let packageRoot = ChildProcess.packageRoot()
    static let kiln = ChildProcess.buildFolder + "/kiln"
    static let jailer = ChildProcess.buildFolder + "/kiln-jailer"
    static let policyCompiler = PolicyBundle.compiler
    static let testGuest = packageRoot + "/integration/out/kiln-test-guest.elf"
    static let nestedRun = packageRoot + "/integration/nested/run.sh"
    static let nestedReady = packageRoot + "/integration/out/nested/.ready"

    static func executable(_ path: String) -> Bool { access(path, X_OK) == 0 }
    static func readable(_ path: String) -> Bool { access(path, R_OK) == 0 }
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// The names in a folder (empty if it cannot be read).
    static func list(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// A fresh folder under /tmp; the caller removes it with `removeTree`.
    static func scratchFolder(_ name: String) -> String {
        let path = "/tmp/kiln-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(path, 0o755)
        return path
    }

    static func removeTree(_ path: String) {
        _ = try? ChildProcess.run(["/bin/rm", "-rf", "--one-file-system", path], seconds: 30)
    }

    /// The shipped policies compiled into `folder/policies.kbundle`.
    static func compilePolicies(into folder: String) throws -> String {
        let bundle = folder + "/policies.kbundle"
        try PolicyBundle.compile(output: bundle)
        return bundle
    }
}

struct LaneFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
