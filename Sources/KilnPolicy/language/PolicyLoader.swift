import KilnSeccomp
import KilnSystem

/// Reads a folder of policy files and resolves them into roles.
///
/// A file with `@default` is a role, named after the file (`vcpu.policy` is
/// role "vcpu"). A file without one holds shared rules and is only
/// `@include`d. Each role has at most one rule per system call, wherever the
/// rules come from. A file included twice into one role (a diamond, say
/// two shared files that both include common.policy) contributes its rules
/// once; an include cycle is an error.
public struct PolicyLoader {
    /// Reads a policy file by name; a closure so that tests and the fuzzer
    /// can work from memory.
    public typealias Source = (String) throws -> String

    private let source: Source
    private var parsed: [String: PolicyFile] = [:]

    public init(source: @escaping Source) {
        self.source = source
    }

    /// Loads every `*.policy` file of `directory`.
    public static func load(directory: String) throws -> [Policy] {
        let names = try FileSystem.listDirectory(directory).filter { $0.hasSuffix(".policy") }
        guard !names.isEmpty else { throw PolicyError("no .policy files in \(directory)", at: nil) }
        var loader = PolicyLoader { name in
            String(
                decoding: try readRegularFile(directory + "/" + name, limit: PolicyLexer.maximumSize + 1), as: UTF8.self
            )
        }
        return try loader.load(files: names)
    }

    /// Reads a file the user named, refusing anything but a regular file by
    /// name first: a FIFO would block the open forever, a device never ends.
    static func readRegularFile(_ path: String, limit: Int) throws -> [UInt8] {
        guard FileSystem.isRegularFile(path) else {
            throw PolicyError(
                FileSystem.exists(path) ? "\(path) is not a regular file" : "\(path) does not exist", at: nil)
        }
        return try FileSystem.readFile(path, limit: limit)
    }

    /// Resolves the named files into roles, sorted by role name.
    public mutating func load(files names: [String]) throws -> [Policy] {
        var roles: [Policy] = []
        var included: Set<String> = []
        for name in names.sorted() {
            let file = try parse(name)
            guard let defaultAction = file.defaultAction else { continue }
            var role = RoleRules()
            try collect(name, chain: [], into: &role)
            included.formUnion(role.files)
            roles.append(
                Policy(role: String(name.dropLast(".policy".count)), defaultAction: defaultAction, rules: role.rules))
        }
        for name in names.sorted() where !included.contains(name) {
            let file = try parse(name)
            if file.defaultAction == nil {
                throw PolicyError(
                    "\(name) has no @default and no role includes it",
                    at: SourceLocation(file: name, line: 1, column: 1))
            }
        }
        guard !roles.isEmpty else { throw PolicyError("no role file (a .policy file with @default) found", at: nil) }
        return roles
    }

    private mutating func parse(_ name: String) throws -> PolicyFile {
        if let file = parsed[name] { return file }
        let file = try PolicyParser.parse(try source(name), file: name)
        parsed[name] = file
        return file
    }

    /// The rules gathered for one role so far.
    private struct RoleRules {
        var rules: [PolicyRule] = []
        var firstRule: [String: SourceLocation] = [:]
        var files: Set<String> = []
    }

    /// Adds `name`'s rules and, depth first, its includes'. `chain` is the
    /// include path from the role file, for cycle detection.
    private mutating func collect(_ name: String, chain: [String], into role: inout RoleRules) throws {
        let file = try parse(name)
        role.files.insert(name)
        for rule in file.rules {
            if let first = role.firstRule[rule.syscall] {
                throw PolicyError(
                    "duplicate rule for '\(rule.syscall)' (first at \(first)); a role has one rule per system call: join the conditions with ||",
                    at: rule.location)
            }
            role.firstRule[rule.syscall] = rule.location
            role.rules.append(rule)
        }
        for (target, location) in file.includes {
            if let start = chain.firstIndex(of: target) ?? (target == name ? chain.count : nil) {
                let cycle = (chain + [name])[start...] + [target]
                throw PolicyError("include cycle: \(cycle.joined(separator: " -> "))", at: location)
            }
            let included: PolicyFile
            do { included = try parse(target) } catch let error as PolicyError where error.location == nil {
                throw PolicyError("@include \"\(target)\": \(error.message)", at: location)
            } catch let error as SystemError {
                throw PolicyError("@include \"\(target)\": \(error)", at: location)
            }
            if let location = included.defaultLocation {
                throw PolicyError(
                    "\(target) sets @default, so it is a role of its own and cannot be included", at: location)
            }
            if role.files.contains(target) { continue } // already in this role
            try collect(target, chain: chain + [name], into: &role)
        }
    }
}
