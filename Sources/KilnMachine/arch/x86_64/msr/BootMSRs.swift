/// The MSR values a vCPU starts with (Intel SDM Vol. 4 for the numbers):
/// syscall and sysenter state cleared, the TSC at zero, fast strings on, and
/// MTRRs enabled with write-back as the default type so the guest does not
/// run uncached.
public enum BootMSRs {
    public static let sysenterCS: UInt32 = 0x174
    public static let sysenterESP: UInt32 = 0x175
    public static let sysenterEIP: UInt32 = 0x176
    public static let star: UInt32 = 0xc000_0081
    public static let lstar: UInt32 = 0xc000_0082
    public static let cstar: UInt32 = 0xc000_0083
    public static let syscallMask: UInt32 = 0xc000_0084
    public static let kernelGSBase: UInt32 = 0xc000_0102
    public static let tsc: UInt32 = 0x10
    public static let miscEnable: UInt32 = 0x1a0
    public static let mtrrDefaultType: UInt32 = 0x2ff

    static let miscEnableFastString: UInt64 = 1
    static let mtrrEnable: UInt64 = 1 << 11
    static let memoryTypeWriteBack: UInt64 = 6

    public static let values: [(index: UInt32, value: UInt64)] = [
        (sysenterCS, 0), (sysenterESP, 0), (sysenterEIP, 0),
        (star, 0), (cstar, 0), (kernelGSBase, 0), (syscallMask, 0), (lstar, 0),
        (tsc, 0),
        (miscEnable, miscEnableFastString),
        (mtrrDefaultType, mtrrEnable | memoryTypeWriteBack),
    ]
}
