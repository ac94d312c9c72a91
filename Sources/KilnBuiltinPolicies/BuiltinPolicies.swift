import CKilnBuiltinPolicies

/// The shipped policies, compiled at build time into kiln and kiln-jailer:
/// used when no bundle file is named, so that a plain start is filtered.
public enum BuiltinPolicies {
    /// Where `make policies` (`kiln-policy embed`) writes them, from the package root.
    public static let generatedSource = "Sources/CKilnBuiltinPolicies/builtin_policies.c"

    public static var bytes: [UInt8] {
        Array(UnsafeBufferPointer(start: kiln_builtin_policies(), count: Int(kiln_builtin_policies_size())))
    }
}
