import KilnSystem

/// The `main` a fuzz target has outside `make fuzz`: it runs the libFuzzer
/// entry once on each file named on the command line, so a crash input
/// saved by libFuzzer can be replayed under a debugger or a plain build.
public enum FuzzReplay {
    public static func run(_ entry: (UnsafePointer<UInt8>?, Int) -> Int32) throws {
        for path in CommandLine.arguments.dropFirst() {
            let bytes = try FileSystem.readFile(path)
            _ = bytes.withUnsafeBufferPointer { entry($0.baseAddress, $0.count) }
            print("\(path): ok")
        }
    }
}
