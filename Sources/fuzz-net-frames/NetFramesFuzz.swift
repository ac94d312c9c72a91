import KilnFuzzSupport
import KilnVirtio

/// libFuzzer entry for virtio-net's transmit chains and receive delivery
/// from a hostile guest (input layout: `VirtioFuzzing.netFrames`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNetFrames(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    VirtioFuzzing.netFrames(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum NetFramesReplay {
        static func main() throws { try FuzzReplay.run(fuzzNetFrames) }
    }
#endif
