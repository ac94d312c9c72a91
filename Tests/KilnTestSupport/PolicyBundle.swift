/// The seccomp bundle the lanes run kiln under: `policies/` (or a test's
/// edited copy) compiled by the `kiln-policy` built beside the test binary.
public enum PolicyBundle {
    public static let compiler = ChildProcess.buildFolder + "/kiln-policy"
    public static let shippedPolicies = ChildProcess.packageRoot() + "/policies"

    public struct CompileFailure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Compiles `policies` into the bundle file `output`.
    public static func compile(policies: String = shippedPolicies, output: String) throws {
        let compiled = try ChildProcess.run(
            [compiler, "compile", "--policies", policies, "--output", output], seconds: 60)
        guard compiled.status == 0 else {
            throw CompileFailure(description: "kiln-policy compile --policies \(policies): \(compiled.stderr)")
        }
    }
}
