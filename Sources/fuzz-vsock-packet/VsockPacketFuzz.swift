import KilnFuzzSupport
import KilnVirtio

/// libFuzzer entry for the virtio-vsock packet header parser and its checks
/// (input layout: `VirtioFuzzing.vsockPacket`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVsockPacket(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    VirtioFuzzing.vsockPacket(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum VsockPacketReplay {
        static func main() throws { try FuzzReplay.run(fuzzVsockPacket) }
    }
#endif
