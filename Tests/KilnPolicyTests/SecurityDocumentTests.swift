import KilnSystem
import Testing

@testable import KilnPolicy

/// SECURITY.md's table of seccomp roles is `kiln-policy audit --format
/// markdown --compare` of the shipped policies, so the document cannot drift
/// from them: any change of a role's counts fails here until the table is
/// rewritten.
@Suite struct SecurityDocumentTests {
    static let repository = String(PolicyTestSupport.shippedPoliciesDirectory.dropLast("/policies".count))
    static let begin = "<!-- kiln-policy audit table: begin (make security-table) -->"
    static let end = "<!-- kiln-policy audit table: end -->"

    @Test func theAuditTableIsTheAuditsOutput() throws {
        let report = try PolicyAuditor.audit(
            policies: try PolicyLoader.load(directory: PolicyTestSupport.shippedPoliciesDirectory),
            firecracker: try FirecrackerFilter.load(
                Self.repository + "/policies/reference/firecracker-seccomp-x86_64.json"))
        let document = try FileSystem.readText(Self.repository + "/SECURITY.md")
        try #require(document.ranges(of: Self.begin).count == 1, "SECURITY.md needs exactly one line \(Self.begin)")
        let start = document.firstRange(of: Self.begin)!.upperBound
        let stop = try #require(
            document[start...].firstRange(of: Self.end), "SECURITY.md has no line \(Self.end) after the table")
        let table = document[start..<stop.lowerBound].split(separator: "\n").joined(separator: "\n")
        #expect(
            table == report.markdownTable().split(separator: "\n").joined(separator: "\n"),
            "SECURITY.md's seccomp table differs from the policies: run `make security-table` to rewrite it from `kiln-policy audit`, then check the prose around it"
        )
    }
}
