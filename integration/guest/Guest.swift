// The Kiln test guest: a freestanding Embedded Swift program that kiln boots
// like a Linux kernel (ELF: its PVH entry, or the 64-bit boot protocol), and
// QEMU's microvm boots too (PVH). It proves the boot path end to end: it
// reads the boot information (command line, e820), prints them on the 8250
// UART, takes timer interrupts through the 8259 PIC and PIT, signals the
// boot timer, drives the virtio-mmio devices named on its command line
// (Virtio.swift), and resets through the i8042.
//
// Every line it prints starts with "guest: " so tests can find them.

@_extern(c, "guest_outb") func outb(_ port: UInt16, _ value: UInt8)
@_extern(c, "guest_inb") func inb(_ port: UInt16) -> UInt8
/// Halts until an interrupt, or returns at once if one arrived since the
/// last wait returned: callers test their condition first, with interrupts
/// on, and loop.
@_extern(c, "guest_wait_for_interrupt") func waitForInterrupt()
@_extern(c, "guest_halt_forever") func guestHaltForever()

func haltForever() -> Never {
    guestHaltForever()
    while true {}
}
// Volatile MMIO: one plain mov each (entry.S).
@_extern(c, "guest_read32") func read32(_ address: UInt) -> UInt32
@_extern(c, "guest_write32") func write32(_ address: UInt, _ value: UInt32)
@_extern(c, "guest_read16") func read16(_ address: UInt) -> UInt16
@_extern(c, "guest_write16") func write16(_ address: UInt, _ value: UInt16)
@_extern(c, "guest_read8") func read8(_ address: UInt) -> UInt8
@_extern(c, "guest_timer_ticks") func timerTicks() -> UInt32
@_extern(c, "guest_serial_interrupts") func serialInterrupts() -> UInt32
@_extern(c, "guest_keyboard_byte_count") func keyboardByteCount() -> UInt32
@_extern(c, "guest_keyboard_byte") func keyboardByte(_ index: UInt32) -> UInt8

/// The zero page (Documentation/arch/x86/zero-page.rst).
enum BootParams {
    static let e820Entries = 0x1e8
    static let ramdiskImage = 0x218
    static let ramdiskSize = 0x21c
    static let commandLinePointer = 0x228
    static let e820Table = 0x2d0
}

enum Port {
    static let serial: UInt16 = 0x3f8
    static let serialInterruptEnable: UInt16 = 0x3f9
    static let serialLineStatus: UInt16 = 0x3fd
    static let pic1Data: UInt16 = 0x21, pic2Data: UInt16 = 0xa1
    static let pitChannel0: UInt16 = 0x40, pitMode: UInt16 = 0x43
    static let i8042Command: UInt16 = 0x64
    static let sleepControl: UInt16 = 0x600
    static let cmosIndex: UInt16 = 0x70, cmosData: UInt16 = 0x71
}

/// `quiet` on the command line: print nothing, as each byte costs the VMM two port exits.
var quiet = false

func putByte(_ byte: UInt8) {
    if quiet { return }
    // Wait for THR empty (LSR bit 5), as a driver must on real hardware.
    while inb(Port.serialLineStatus) & 0x20 == 0 {}
    outb(Port.serial, byte)
}

func put(_ text: StaticString) {
    let start = text.utf8Start
    for index in 0..<text.utf8CodeUnitCount { putByte(start[index]) }
}

func putHex(_ value: UInt64) {
    put("0x")
    var shift = 60
    var started = false
    while shift >= 0 {
        let digit = UInt8((value >> UInt64(shift)) & 0xf)
        if digit != 0 || started || shift == 0 {
            started = true
            putByte(digit < 10 ? 0x30 + digit : 0x57 + digit)
        }
        shift -= 4
    }
}

func putDecimal(_ value: UInt32) {
    if value >= 10 { putDecimal(value / 10) }
    putByte(0x30 + UInt8(value % 10))
}

/// Whether the NUL-terminated command line contains `word` as a whole word.
func commandLine(_ line: UnsafePointer<UInt8>, contains word: StaticString) -> Bool {
    let target = word.utf8Start
    let length = word.utf8CodeUnitCount
    var index = 0
    while line[index] != 0 {
        let atWordStart = index == 0 || line[index - 1] == 0x20
        if atWordStart {
            var matched = 0
            while matched < length && line[index + matched] == target[matched] { matched += 1 }
            let end = line[index + matched]
            if matched == length && (end == 0 || end == 0x20) { return true }
        }
        index += 1
    }
    return false
}

/// Lets the 8259 pair's interrupts reach the CPU; entry.S remapped them to
/// vectors 0x20/0x28, every line masked, and each wait below unmasks the
/// lines it needs.
func setUpInterruptControllers() {
    // Virtual-wire mode (MP spec 1.4 §3.6.2.2), as a PC BIOS leaves it: the
    // local APIC enabled, LINT0 ExtINT, so the 8259's INTR reaches the CPU.
    // kiln sets this before entry; QEMU's microvm firmware does not.
    let localAPIC: UInt = 0xfee0_0000
    write32(localAPIC + 0xf0, read32(localAPIC + 0xf0) | 0x100) // spurious-vector: APIC enable
    write32(localAPIC + 0x350, 0x700)                           // LVT LINT0: ExtINT, unmasked
    write32(localAPIC + 0x360, 0x400)                           // LVT LINT1: NMI
}

/// PIT channel 0, mode 2 (rate generator), 1193182 Hz / 1193 = 1 kHz.
func startTimer() {
    outb(Port.pitMode, 0x34)
    outb(Port.pitChannel0, UInt8(1193 & 0xff))
    outb(Port.pitChannel0, UInt8(1193 >> 8))
}

/// Stops the periodic tick: channel 0 in mode 0 (interrupt on terminal
/// count) counts down once and stays there (Intel 8254 datasheet, mode 0),
/// as Linux's PIT clockevent does on shutdown. A running PIT costs the host
/// a timer wake-up per tick even while IRQ 0 is masked at the 8259.
func stopTimer() {
    outb(Port.pitMode, 0x30)
    outb(Port.pitChannel0, 0)
    outb(Port.pitChannel0, 0)
}

/// hvm_start_info (Xen public arch-x86/hvm/start_info.h, version 1): what a
/// PVH entry gets in place of the zero page.
enum StartInfo {
    static let moduleCount = 12
    static let moduleList = 16
    static let commandLine = 24
    static let memoryMap = 40
    static let memoryMapEntries = 48
    static let memoryMapEntrySize = 24
}

/// The boot facts the guest prints, from either boot protocol.
struct BootFacts {
    var commandLine: UInt = 0
    var memoryMap: UInt = 0
    var memoryMapEntries = 0
    var memoryMapEntrySize = 20
    var initrdAddress: UInt = 0
    var initrdSize: UInt32 = 0

    init(_ address: UInt, pvh: Bool) {
        let info = UnsafeRawPointer(bitPattern: address)!
        if pvh {
            commandLine = UInt(info.loadUnaligned(fromByteOffset: StartInfo.commandLine, as: UInt64.self))
            memoryMap = UInt(info.loadUnaligned(fromByteOffset: StartInfo.memoryMap, as: UInt64.self))
            memoryMapEntries = Int(info.loadUnaligned(fromByteOffset: StartInfo.memoryMapEntries, as: UInt32.self))
            memoryMapEntrySize = StartInfo.memoryMapEntrySize
            if info.loadUnaligned(fromByteOffset: StartInfo.moduleCount, as: UInt32.self) > 0 {
                // The first module is the initrd: paddr, size (hvm_modlist_entry).
                let module = UInt(info.loadUnaligned(fromByteOffset: StartInfo.moduleList, as: UInt64.self))
                let entry = UnsafeRawPointer(bitPattern: module)!
                initrdAddress = UInt(entry.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
                initrdSize = UInt32(truncatingIfNeeded: entry.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
        } else {
            commandLine = UInt(info.loadUnaligned(fromByteOffset: BootParams.commandLinePointer, as: UInt32.self))
            memoryMap = address + UInt(BootParams.e820Table)
            memoryMapEntries = Int(info.load(fromByteOffset: BootParams.e820Entries, as: UInt8.self))
            initrdSize = info.loadUnaligned(fromByteOffset: BootParams.ramdiskSize, as: UInt32.self)
            initrdAddress = UInt(info.loadUnaligned(fromByteOffset: BootParams.ramdiskImage, as: UInt32.self))
        }
    }
}

/// Entered from entry.S with the zero page (64-bit boot protocol, pvh 0) or
/// hvm_start_info (PVH entry, pvh 1).
@_cdecl("guest_main")
func guestMain(_ bootInfo: UInt, _ pvh: UInt) {
    // Ring 3 with interrupts on (entry.S).
    setUpInterruptControllers()
    let boot = BootFacts(bootInfo, pvh: pvh != 0)
    let line = UnsafePointer<UInt8>(bitPattern: boot.commandLine)!
    quiet = commandLine(line, contains: "quiet")
    put("guest: hello from the kiln test guest\n")
    put(pvh != 0 ? "guest: boot protocol: pvh\n" : "guest: boot protocol: linux 64-bit\n")

    put("guest: cmdline: ")
    var index = 0
    while line[index] != 0 && index < 2048 { putByte(line[index]); index += 1 }
    put("\n")

    let entries = boot.memoryMapEntries
    let memoryMap = UnsafeRawPointer(bitPattern: boot.memoryMap)!
    var virtioAreaIsRAM = false
    put("guest: e820 entries: "); putDecimal(UInt32(entries)); put("\n")
    for entry in 0..<entries {
        let offset = entry * boot.memoryMapEntrySize
        let start = memoryMap.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        let size = memoryMap.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
        let type = memoryMap.loadUnaligned(fromByteOffset: offset + 16, as: UInt32.self)
        put("guest: e820: "); putHex(start); put(" size "); putHex(size); put(" type "); putDecimal(type); put("\n")
        if type == 1 && start <= VirtioArea.start && start + size >= VirtioArea.end { virtioAreaIsRAM = true }
    }

    if boot.initrdSize > 0 {
        let initrd = UnsafePointer<UInt8>(bitPattern: boot.initrdAddress)!
        put("guest: initrd: "); putDecimal(boot.initrdSize); put(" bytes: ")
        for index in 0..<Int(min(boot.initrdSize, 16)) { putByte(initrd[index]) }
        put("\n")
    }

    if commandLine(line, contains: "echo") {
        // Console input: kiln feeds its stdin to the UART's receiver.
        put("guest: echo: ")
        var received = 0
        while received < 256 {
            while inb(Port.serialLineStatus) & 0x01 == 0 {} // data ready
            let byte = inb(Port.serial)
            if byte == 0x0a { break }
            putByte(byte)
            received += 1
        }
        put("\n")
    }

    if commandLine(line, contains: "rtc") {
        // The CMOS clock's century register (BCD), read as Linux's rtc_cmos
        // reads it: the index at port 0x70, then the data at 0x71.
        outb(Port.cmosIndex, 0x32)
        put("guest: rtc: century "); putHex(UInt64(inb(Port.cmosData))); put("\n")
    }

    if commandLine(line, contains: "halt") {
        put("guest: halting with interrupts off\n")
        haltForever()
    }

    outb(Port.pic1Data, 0xfe) // IRQ 0 only
    startTimer()
    while timerTicks() < 3 { waitForInterrupt() }
    put("guest: timer interrupts: "); putDecimal(timerTicks()); put("\n")

    // The UART's THR-empty interrupt on IRQ 4, raised by kiln through the
    // in-kernel PIC: once when enabled with THR empty, once per byte sent.
    outb(Port.pic1Data, 0xef) // only IRQ 4 now
    outb(Port.serialInterruptEnable, 0x02)
    while serialInterrupts() < 1 { waitForInterrupt() }
    outb(Port.serial, 0x2e) // "."
    while serialInterrupts() < 2 { waitForInterrupt() }
    outb(Port.serialInterruptEnable, 0x00)
    put("\nguest: serial interrupts: "); putDecimal(serialInterrupts()); put("\n")
    stopTimer() // restarted below only by the waits that count ticks

    // The boot-timer device: one magic byte at the start of its MMIO page.
    UnsafeMutablePointer<UInt8>(bitPattern: UInt(0xd000_0000))!.pointee = 123
    put("guest: ready\n")

    if hasVirtioDevices(line) {
        if virtioAreaIsRAM {
            if let address = UDPEcho.address(line) {
                UDPEcho.serve(line, address: address, memory: UInt(VirtioArea.start))
            } else {
                outb(Port.pic1Data, 0xfe) // the PIT's 1 ms ticks bound every wait
                startTimer()
                probeVirtioDevices(line)
            }
        } else {
            put("guest: virtio: no RAM at 16-20 MiB for the queues\n")
        }
        put("guest: virtio done\n")
    }

    if commandLine(line, contains: "noreset") { haltForever() }
    if commandLine(line, contains: "idle") {
        // Waits for ever with interrupts on (IRQ 1 only, the keys ignored):
        // a guest that neither ends, halts for good nor spins, for fuzzing
        // the post-boot API (integration/api/schemathesis.sh).
        outb(Port.pic1Data, 0xfd)
        stopTimer()
        put("guest: idle\n")
        while true { waitForInterrupt() }
    }
    if commandLine(line, contains: "ctrlaltdel") || driveAsksToKeepRunning {
        // Wait on IRQ 1 for the VMM's Ctrl+Alt+Del (set-2 make codes
        // 14 11 E0 71), then reboot as Linux's atkbd would.
        // With `ticks`, the timer stays on and a line goes out every 100
        // ticks (100 ms), so a test can see the guest stop while paused.
        let ticking = commandLine(line, contains: "ticks") || driveAsksToKeepRunning
        if ticking { startTimer() } else { stopTimer() }
        outb(Port.pic1Data, ticking ? 0xfc : 0xfd) // IRQ 1, and IRQ 0 when ticking
        put("guest: waiting for ctrl-alt-del\n")
        var nextTick = timerTicks() + 100
        while keyboardByteCount() < 4 {
            waitForInterrupt()
            if ticking && timerTicks() >= nextTick {
                put("guest: tick\n")
                nextTick = timerTicks() + 100
            }
        }
        put("guest: keyboard:")
        for index in 0..<keyboardByteCount() { put(" "); putHex(UInt64(keyboardByte(index))) }
        put("\n")
        if keyboardByte(0) == 0x14 && keyboardByte(1) == 0x11 && keyboardByte(2) == 0xe0 && keyboardByte(3) == 0x71 {
            put("guest: ctrl-alt-del received\n")
        }
    }
    if commandLine(line, contains: "poweroff") {
        // ACPI S5 through the hardware-reduced sleep control register:
        // SLP_TYP 5 in bits 2-4 with SLP_EN (bit 5).
        outb(Port.sleepControl, (5 << 2) | 0x20)
        haltForever()
    }
    outb(Port.i8042Command, 0xfe) // pulse the reset line
    haltForever()
}
