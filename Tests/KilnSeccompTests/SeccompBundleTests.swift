import Testing

@testable import KilnSeccomp

@Suite struct SeccompBundleTests {
    static let allowAll = [BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.allow.rawValue)]
    static let trapAll = [BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.trap.rawValue)]

    @Test func encodingRoundTripsAndIsDeterministic() throws {
        let a = try SeccompBundle(architecture: 0xC000_003E, programs: ["vmm": Self.allowAll, "api": Self.trapAll])
        let b = try SeccompBundle(architecture: 0xC000_003E, programs: ["api": Self.trapAll, "vmm": Self.allowAll])
        #expect(a.encoded() == b.encoded())
        #expect(a.roles == ["api", "vmm"])
        let decoded = try SeccompBundle(decoding: a.encoded())
        #expect(decoded == a)
        #expect(decoded.program(for: "vmm") == Self.allowAll)
        #expect(decoded.program(for: "vcpu") == nil)
    }

    @Test func rejectsEveryTruncation() throws {
        let bytes = try SeccompBundle(architecture: 0xC000_003E, programs: ["vcpu": Self.allowAll]).encoded()
        for length in 0..<bytes.count {
            #expect(throws: SeccompBundleError.self) { try SeccompBundle(decoding: bytes[0..<length]) }
        }
        #expect(throws: SeccompBundleError.malformed("1 unexpected bytes after the last role")) {
            try SeccompBundle(decoding: bytes + [0])
        }
    }

    @Test func rejectsBadHeadersAndNames() throws {
        var bytes = try SeccompBundle(architecture: 1, programs: ["vmm": Self.allowAll]).encoded()
        bytes[8] = 2
        #expect(throws: SeccompBundleError.malformed("unsupported bundle version 2, expected 1")) {
            try SeccompBundle(decoding: bytes)
        }
        #expect(throws: SeccompBundleError.self) {
            try SeccompBundle(architecture: 1, programs: ["VMM": Self.allowAll])
        }
        #expect(throws: SeccompBundleError.self) { try SeccompBundle(architecture: 1, programs: [:]) }
        #expect(throws: SeccompBundleError.programTooLong(role: "vmm", instructions: 4097)) {
            try SeccompBundle(architecture: 1, programs: ["vmm": Array(repeating: Self.allowAll[0], count: 4097)])
        }
    }

    @Test func actionsRoundTrip() {
        let actions: [SeccompAction] = [.allow, .errno(1), .log, .trap, .trace(7), .killThread, .killProcess]
        for action in actions { #expect(SeccompAction(rawValue: action.rawValue) == action) }
        #expect(SeccompAction(rawValue: 0x0005_000D) == .errno(13))
    }
}
