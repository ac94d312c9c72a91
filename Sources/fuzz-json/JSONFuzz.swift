import KilnFuzzSupport
import KilnJSON

/// libFuzzer entry for the JSON parser that config files and API bodies reach.
/// Whatever parses must re-encode to an equal value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let value = try? JSONParser.parse(bytes) else { return 0 }
    guard let again = try? JSONParser.parse(value.encoded()), again == value else {
        fatalError("JSON re-encoding changed the value")
    }
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum JSONReplay {
        static func main() throws { try FuzzReplay.run(fuzzJSON) }
    }
#endif
