import KilnAPI
import KilnFuzzSupport

/// libFuzzer entry for the API's HTTP parser: the input is fed in two parts
/// split at its first byte's value, so split-dependent bugs are reachable.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let split = min(bytes.count, 1 + Int(first))
    var parser = HTTPRequestParser()
    // Drained as the API server does: when no request is whole, an owed
    // `100 Continue` is taken, and never twice for one request.
    var interims = 0
    func drain() throws {
        while try parser.nextRequest() != nil { interims = 0 }
        if parser.takeInterimContinue() { interims += 1 }
        precondition(interims <= 1, "a second 100 Continue for one request")
    }
    parser.append(bytes[1..<split])
    do {
        try drain()
        parser.append(bytes[split...])
        try drain()
    } catch {}
    let limits = parser.limits
    precondition(parser.bufferedByteCount <= limits.requestLine + limits.headerSection + limits.body + bytes.count)
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum HTTPRequestReplay {
        static func main() throws { try FuzzReplay.run(fuzzHTTPRequest) }
    }
#endif
