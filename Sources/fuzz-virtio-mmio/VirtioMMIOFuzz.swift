import KilnFuzzSupport
import KilnVirtio

/// libFuzzer entry for the virtio-mmio transport in front of block, net and
/// rng: register sequences, notifications and guest memory writes (input
/// layout: `VirtioFuzzing.mmio`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioMMIO(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    VirtioFuzzing.mmio(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum VirtioMMIOReplay {
        static func main() throws { try FuzzReplay.run(fuzzVirtioMMIO) }
    }
#endif
