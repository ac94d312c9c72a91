import KilnFuzzSupport
import KilnVirtio

/// libFuzzer entry for virtio-vsock: transmit chains and receive buffers
/// from a hostile guest against the connection table, with a host side
/// that refuses, stalls and fails (input layout: `VirtioFuzzing.vsockDevice`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVsockDevice(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    VirtioFuzzing.vsockDevice(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum VsockDeviceReplay {
        static func main() throws { try FuzzReplay.run(fuzzVsockDevice) }
    }
#endif
