/// Linux ioctl request numbers, built the way <asm-generic/ioctl.h> builds
/// them: direction in bits 30-31, argument size in bits 16-29, the driver's
/// type byte in bits 8-15 and the command number in bits 0-7.
///
/// Swift cannot import the function-like `_IO*` macros, so the policy
/// constants are computed here from the struct sizes; a test compares every
/// one with the value the C compiler gets from <linux/kvm.h>.
enum IoctlNumber {
    private static let none: UInt32 = 0, write: UInt32 = 1, read: UInt32 = 2

    private static func make(_ direction: UInt32, _ type: UInt8, _ number: UInt8, _ size: UInt32) -> Int64 {
        precondition(size < 1 << 14, "ioctl argument size does not fit _IOC_SIZEBITS")
        return Int64(direction << 30 | size << 16 | UInt32(type) << 8 | UInt32(number))
    }

    /// `_IO(type, nr)`: no argument.
    static func io(_ type: UInt8, _ number: UInt8) -> Int64 { make(none, type, number, 0) }
    /// `_IOW(type, nr, T)`: userspace writes a T to the kernel.
    static func iow(_ type: UInt8, _ number: UInt8, size: UInt32) -> Int64 { make(write, type, number, size) }
    /// `_IOR(type, nr, T)`: the kernel fills a T.
    static func ior(_ type: UInt8, _ number: UInt8, size: UInt32) -> Int64 { make(read, type, number, size) }
    /// `_IOWR(type, nr, T)`: both.
    static func iowr(_ type: UInt8, _ number: UInt8, size: UInt32) -> Int64 { make(read | write, type, number, size) }
}
