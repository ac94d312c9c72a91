import KilnFuzzSupport
import KilnMachine

/// libFuzzer entry for the UART, i8042 and CMOS register machines (input
/// layout: `LegacyFuzzHarness.run`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLegacyDevices(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    LegacyFuzzHarness.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum LegacyDevicesReplay {
        static func main() throws { try FuzzReplay.run(fuzzLegacyDevices) }
    }
#endif
