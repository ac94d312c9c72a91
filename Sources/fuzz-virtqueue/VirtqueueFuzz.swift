import KilnFuzzSupport
import KilnVirtio

/// libFuzzer entry for the split-queue walker, chain I/O and used-ring writes
/// (input layout: `VirtioFuzzing.virtqueue`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    VirtioFuzzing.virtqueue(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum VirtqueueReplay {
        static func main() throws { try FuzzReplay.run(fuzzVirtqueue) }
    }
#endif
