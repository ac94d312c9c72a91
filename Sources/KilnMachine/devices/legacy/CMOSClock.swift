import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Calendar time as the RTC reports it.
public struct RTCTime: Equatable, Sendable {
    public var year: Int, month: Int, day: Int, weekday: Int
    public var hour: Int, minute: Int, second: Int

    public init(year: Int, month: Int, day: Int, weekday: Int, hour: Int, minute: Int, second: Int) {
        self.year = year; self.month = month; self.day = day; self.weekday = weekday
        self.hour = hour; self.minute = minute; self.second = second
    }

    /// The host's current UTC time.
    public static func now() -> RTCTime {
        var seconds = time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return RTCTime(
            year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday),
            weekday: Int(parts.tm_wday) + 1, hour: Int(parts.tm_hour), minute: Int(parts.tm_min),
            second: Int(parts.tm_sec))
    }
}

/// A read-only MC146818 CMOS real-time clock at ports 0x70/0x71 (index,
/// data), answering the time in BCD, 24-hour mode, never mid-update.
/// Without any RTC a stock Linux spends seconds in cmos_init probing; with
/// this it reads the wall clock at once. Alarms and periodic interrupts are
/// not offered (status B has them disabled), and the other 114 bytes of CMOS
/// RAM are plain storage.
public final class CMOSClock: BusDevice, @unchecked Sendable { // `clock` reads the host's wall clock, from any thread
    enum Register {
        static let seconds: UInt8 = 0x00
        static let minutes: UInt8 = 0x02
        static let hours: UInt8 = 0x04
        static let weekday: UInt8 = 0x06
        static let day: UInt8 = 0x07
        static let month: UInt8 = 0x08
        static let year: UInt8 = 0x09
        static let statusA: UInt8 = 0x0a
        static let statusB: UInt8 = 0x0b
        static let statusC: UInt8 = 0x0c
        static let statusD: UInt8 = 0x0d
        static let century: UInt8 = 0x32
    }

    /// Status A: 32.768 kHz time base, 1.024 kHz rate, UIP clear.
    static let statusAValue: UInt8 = 0x26
    /// Status B: 24-hour mode, BCD, no interrupts.
    static let statusBValue: UInt8 = 0x02
    /// Status D: the battery is good (VRT).
    static let statusDValue: UInt8 = 0x80

    /// The selected register and the CMOS RAM.
    private struct State {
        var index: UInt8 = 0
        var storage = [UInt8](repeating: 0, count: 128)
    }
    private let state = Locked(State())
    private let clock: () -> RTCTime

    public init(clock: @escaping () -> RTCTime = RTCTime.now) { self.clock = clock }

    static func bcd(_ value: Int) -> UInt8 { UInt8(((value / 10) % 10) << 4 | (value % 10)) }

    /// The value of one register at time `time`.
    static func register(_ index: UInt8, at time: RTCTime, storage: [UInt8]) -> UInt8 {
        switch index {
        case Register.seconds: return bcd(time.second)
        case Register.minutes: return bcd(time.minute)
        case Register.hours: return bcd(time.hour)
        case Register.weekday: return bcd(time.weekday)
        case Register.day: return bcd(time.day)
        case Register.month: return bcd(time.month)
        case Register.year: return bcd(time.year % 100)
        case Register.century: return bcd(time.year / 100)
        case Register.statusA: return statusAValue
        case Register.statusB: return statusBValue
        case Register.statusC: return 0
        case Register.statusD: return statusDValue
        default: return storage[Int(index)]
        }
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard data.count == 1 else { return }
        let time = offset == 1 ? clock() : nil
        data[0] = state.withLock { state in
            time.map { CMOSClock.register(state.index, at: $0, storage: state.storage) } ?? state.index
        }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard data.count == 1 else { return }
        let value = data[0]
        state.withLock { state in
            if offset == 0 {
                state.index = value & 0x7f // bit 7 is the NMI mask, not part of the index
            } else if state.index > Register.statusD && state.index != Register.century {
                state.storage[Int(state.index)] = value
            }
        }
    }
}
