import KilnBuiltinPolicies
import KilnSeccomp
import KilnSystem
import Testing

@testable import KilnPolicy

/// The bundle built into kiln and kiln-jailer is policies/ as it stands:
/// after a policy change or a merge, `make policies` regenerates it.
struct BuiltinBundleTests {
    static let regenerate =
        "run `make policies` (kiln-policy embed --policies policies --output \(BuiltinPolicies.generatedSource)) and commit the result"

    @Test func theCommittedSourceIsTheShippedPoliciesCompiled() throws {
        let compiled = try PolicyBundleBuilder.bundle(
            for: try PolicyLoader.load(directory: PolicyTestSupport.shippedPoliciesDirectory)
        ).encoded()
        let root = String(PolicyTestSupport.shippedPoliciesDirectory.dropLast("/policies".count))
        let committed = try FileSystem.readFile(root + "/" + BuiltinPolicies.generatedSource, limit: 1 << 22)
        let fresh = committed == Array(BuiltinBundleSource.render(compiled).utf8)
        #expect(
            fresh,
            "\(BuiltinPolicies.generatedSource) is stale: policies/ changed since it was generated; \(Self.regenerate)")
        // What the binaries link is that file.
        let linked = BuiltinPolicies.bytes == compiled
        #expect(linked, "the linked built-in bundle differs from policies/; \(Self.regenerate)")
    }

    @Test func theBuiltinBundleHoldsEveryRoleForThisHost() throws {
        let bundle = try SeccompBundle(decoding: BuiltinPolicies.bytes)
        #expect(bundle.architecture == SeccompBundle.hostArchitecture)
        for role in PolicyBundleBuilder.requiredRoles {
            #expect(bundle.program(for: role) != nil, "no \(role) program")
        }
    }

    /// The rendering is exact bytes: any change shows as a different file.
    @Test func renderingSpellsEveryByte() {
        let source = BuiltinBundleSource.render([0x00, 0xff, 0x10] + Array(repeating: 0xab, count: 14))
        #expect(source.contains("static const unsigned char bundle[17] = {\n    0x00,0xff,0x10,0xab,"))
        #expect(source.contains("\n    0xab,\n};"))
        #expect(BuiltinBundleSource.render([1]) != BuiltinBundleSource.render([2]))
    }
}
