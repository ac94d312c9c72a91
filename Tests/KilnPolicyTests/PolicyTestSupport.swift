import KilnSeccomp
import KilnSystem

@testable import KilnPolicy

#if canImport(Glibc)
    import Glibc
#endif

/// Helpers shared by the policy tests.
enum PolicyTestSupport {
    /// The repository's policies/ folder, found from this file's path.
    static let shippedPoliciesDirectory: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3) // Tests/KilnPolicyTests/PolicyTestSupport.swift
        return parts.joined(separator: "/") + "/policies"
    }()

    /// A fresh folder holding `files`, removed (with whatever the body
    /// left in it) afterwards.
    static func withPolicyFolder<R>(_ files: [String: String], _ body: (String) throws -> R) throws -> R {
        let directory = "/tmp/kiln-policy-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try check("mkdir", subject: directory) { mkdir(directory, 0o700) }
        defer {
            for name in (try? FileSystem.listDirectory(directory)) ?? [] { unlink(directory + "/" + name) }
            rmdir(directory)
        }
        for (name, text) in files { try FileSystem.writeAtomically(directory + "/" + name, Array(text.utf8)) }
        return try body(directory)
    }

    static func load(_ files: [String: String]) throws -> [Policy] {
        var loader = PolicyLoader { name in
            guard let text = files[name] else { throw PolicyError("no such file \(name)", at: nil) }
            return text
        }
        return try loader.load(files: Array(files.keys))
    }

    /// Parses one role file with no includes.
    static func role(_ text: String, name: String = "test.policy") throws -> Policy {
        try load([name: text])[0]
    }

    /// The error message a bad policy gets, or nil when it loads.
    static func error(_ files: [String: String]) -> String? {
        do {
            _ = try load(files)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// What the policy says should happen, evaluated from its rules alone:
    /// the reference the compiled BPF is checked against.
    static func expectedAction(_ policy: Policy, _ input: SeccompInput) -> SeccompAction {
        guard input.architecture == PolicyCompiler.architecture,
            input.syscallNumber & PolicyCompiler.x32SyscallBit == 0
        else { return .killProcess }
        // The tracer's evaluation of a policy (TraceRecorder.verdict) is the reference.
        return TraceRecorder.verdict(of: policy, number: input.syscallNumber, arguments: input.arguments).action
    }
}
