import KilnJSON
import KilnSeccomp

/// The audit's result, printed as text for people or JSON for tools.
public struct AuditReport: Sendable {
    public var roles: [RoleAudit]

    /// Every finding at or above `severity`, with its role.
    public func findings(atLeast severity: Severity) -> [(role: String, finding: AuditFinding)] {
        roles.flatMap { role in role.findings.filter { $0.severity >= severity }.map { (role.role, $0) } }
    }

    // MARK: Text

    public func text() -> String {
        var out = ""
        for role in roles {
            let policy = role.policy
            out += "== role \(role.role): default \(policy.defaultAction.policyText), \(role.ruleCount) rules, "
            out += "\(role.allowedSyscalls.count) allowed system calls, \(role.program.count) BPF instructions\n"
            let width = policy.rules.map(\.syscall.count).max() ?? 0
            for rule in policy.rules.sorted(by: { $0.syscall < $1.syscall }) {
                let action = rule.action == .allow ? "" : " -> \(rule.action.policyText)"
                let condition = rule.conditionText.map { ": \($0)" } ?? ""
                let name = condition.isEmpty && action.isEmpty ? rule.syscall : rule.syscall.padding(to: width)
                out += "  \(name)\(condition)\(action)\n"
            }
            if role.findings.isEmpty {
                out += "  findings: none\n"
            } else {
                out += "  findings:\n"
                for finding in role.findings { out += "    \(finding)\n" }
            }
            if let comparison = role.comparison { out += comparisonText(comparison) }
            out += "\n"
        }
        let compared = roles.compactMap(\.comparison)
        if !compared.isEmpty {
            out += "== summary against Firecracker (unique system calls allowed)\n"
            out +=
                "  role    Kiln  Firecracker  shared  only Kiln  only Firecracker  conditioned only by Kiln  only by Firecracker\n"
            for c in compared {
                out +=
                    "  \(c.role.padding(to: 6))  \(String(c.ours.count).padding(to: 4))  \(String(c.theirs.count).padding(to: 11))  "
                out += "\(String(c.shared).padding(to: 6))  \(String(c.onlyOurs.count).padding(to: 9))  "
                out +=
                    "\(String(c.onlyTheirs.count).padding(to: 16))  \(String(c.conditionedOnlyByUs.count).padding(to: 24))  "
                out += "\(c.conditionedOnlyByThem.count)\n"
            }
            for role in roles where role.comparison == nil {
                out +=
                    "  \(role.role.padding(to: 6))  \(String(role.allowedSyscalls.count).padding(to: 4))  (no Firecracker filter for this role)\n"
            }
        }
        return out
    }

    // MARK: Markdown

    /// One row per role, as SECURITY.md shows it (`make security-table`
    /// writes it there; a test compares the two).
    public func markdownTable() -> String {
        var out =
            "| role | default | allowed system calls | rules with argument conditions | BPF instructions | Firecracker's | findings |\n"
        out += "|---|---|---|---|---|---|---|\n"
        for role in roles {
            let policy = role.policy
            let conditioned = policy.rules.filter { $0.action != policy.defaultAction && !$0.isUnconditional }.count
            let firecracker = role.comparison.map { String($0.theirs.count) } ?? "–"
            out +=
                "| `\(role.role)` | \(policy.defaultAction.policyText) | \(role.allowedSyscalls.count) | \(conditioned) | "
            out +=
                "\(role.program.count) | \(firecracker) | \(role.findings.isEmpty ? "none" : String(role.findings.count)) |\n"
        }
        return out
    }

    private func comparisonText(_ c: FirecrackerComparison) -> String {
        var out =
            "  against Firecracker's \(c.role) filter: Kiln \(c.ours.count), Firecracker \(c.theirs.count), shared \(c.shared)\n"
        let columns: [(String, [String])] = [
            ("only Kiln allows", c.onlyOurs), ("only Firecracker allows", c.onlyTheirs),
            ("Kiln tests arguments, Firecracker not", c.conditionedOnlyByUs),
            ("Firecracker tests arguments, Kiln not", c.conditionedOnlyByThem),
        ]
        for (title, names) in columns {
            out += "    \((title + ":").padding(to: 40)) \(names.isEmpty ? "-" : names.joined(separator: " "))\n"
        }
        out += "    \("system call".padding(to: 20)) \("Kiln".padding(to: 16)) Firecracker\n"
        for row in c.sideBySide {
            out +=
                "    \(row.syscall.padding(to: 20)) \(row.kiln.rawValue.padding(to: 16)) \(row.firecracker.rawValue)\n"
        }
        return out
    }

    // MARK: JSON

    public func json() -> String {
        var members: [(key: String, value: JSONValue)] = []
        for role in roles {
            var object: [(key: String, value: JSONValue)] = [
                ("default_action", .string(role.policy.defaultAction.policyText)),
                ("allowed_syscalls", .array(role.allowedSyscalls.map { .string($0) })),
                ("rule_count", .integer(role.ruleCount)),
                ("bpf_instructions", .integer(role.program.count)),
                ("rules", .array(role.policy.rules.map(ruleJSON))),
                ("findings", .array(role.findings.map(findingJSON))),
            ]
            if let c = role.comparison {
                object.append(
                    (
                        "firecracker",
                        .object([
                            ("kiln_count", .integer(c.ours.count)), ("firecracker_count", .integer(c.theirs.count)),
                            ("shared_count", .integer(c.shared)),
                            ("only_kiln", .array(c.onlyOurs.map { .string($0) })),
                            ("only_firecracker", .array(c.onlyTheirs.map { .string($0) })),
                            ("conditioned_only_by_kiln", .array(c.conditionedOnlyByUs.map { .string($0) })),
                            ("conditioned_only_by_firecracker", .array(c.conditionedOnlyByThem.map { .string($0) })),
                        ])
                    ))
            }
            members.append((role.role, .object(object)))
        }
        return JSONValue.object([("roles", .object(members))]).encoded(pretty: true) + "\n"
    }

    private func ruleJSON(_ rule: PolicyRule) -> JSONValue {
        .object([
            ("syscall", .string(rule.syscall)),
            ("action", .string(rule.action.policyText)),
            ("condition", rule.conditionText.map { .string($0) } ?? .null),
            ("alternatives", .integer(rule.alternatives.count)),
            ("justification", rule.justification.map { .string($0) } ?? .null),
            ("location", .string(rule.location.description)),
        ])
    }

    private func findingJSON(_ finding: AuditFinding) -> JSONValue {
        .object([
            ("severity", .string(finding.severity.rawValue)),
            ("syscall", finding.syscall.map { .string($0) } ?? .null),
            ("message", .string(finding.message)),
            ("location", finding.location.map { .string($0.description) } ?? .null),
        ])
    }
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
