import KilnFuzzSupport
import KilnVirtio

/// libFuzzer entry for the virtio-blk request planner and device over a fuzzed queue
/// (input layout: `VirtioFuzzing.block`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioBlock(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    VirtioFuzzing.block(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum VirtioBlockReplay {
        static func main() throws { try FuzzReplay.run(fuzzVirtioBlock) }
    }
#endif
