import KilnConfig
import KilnFuzzSupport

/// libFuzzer entry for Firecracker's config-file format, whose section
/// decoders also read the API's request bodies: any input is a configuration
/// that validates, or an error naming a field; and a configuration shown
/// back (GET /vm/config) must decode to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVMConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let configuration = try? VMConfig(configFile: bytes) else { return 0 }
    guard let again = try? VMConfig(configFile: Array(configuration.json.encoded().utf8)),
        again == configuration
    else {
        fatalError("a configuration did not survive GET /vm/config and back")
    }
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum VMConfigReplay {
        static func main() throws { try FuzzReplay.run(fuzzVMConfig) }
    }
#endif
