// The Kiln test guest: a freestanding Embedded Swift program that kiln boots
// like a Linux kernel (ELF, 64-bit boot protocol). It proves the boot path
// end to end: it reads boot_params (command line, e820), prints them on the
// 8250 UART, takes timer interrupts through the in-kernel 8259 PIC and PIT,
// signals the boot timer, and resets through the i8042.
//
// Every line it prints starts with "guest: " so tests can find them.

@_extern(c, "guest_outb") func outb(_ port: UInt16, _ value: UInt8)
@_extern(c, "guest_inb") func inb(_ port: UInt16) -> UInt8
@_extern(c, "guest_install_interrupt_handlers") func installInterruptHandlers()
@_extern(c, "guest_wait_for_interrupt") func waitForInterrupt()
@_extern(c, "guest_halt_forever") func guestHaltForever()

func haltForever() -> Never {
    guestHaltForever()
    while true {}
}
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
    static let pic1Command: UInt16 = 0x20, pic1Data: UInt16 = 0x21
    static let pic2Command: UInt16 = 0xa0, pic2Data: UInt16 = 0xa1
    static let pitChannel0: UInt16 = 0x40, pitMode: UInt16 = 0x43
    static let i8042Command: UInt16 = 0x64
    static let sleepControl: UInt16 = 0x600
    static let cmosIndex: UInt16 = 0x70, cmosData: UInt16 = 0x71
}

func putByte(_ byte: UInt8) {
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

/// Remaps the 8259 pair to vectors 0x20/0x28 and unmasks only IRQ 0
/// (Intel 8259A datasheet, ICW1-ICW4).
func setUpInterruptControllers() {
    outb(Port.pic1Command, 0x11); outb(Port.pic2Command, 0x11) // ICW1: edge, cascade, ICW4
    outb(Port.pic1Data, 0x20); outb(Port.pic2Data, 0x28)       // ICW2: vector bases
    outb(Port.pic1Data, 0x04); outb(Port.pic2Data, 0x02)       // ICW3: slave on IRQ 2
    outb(Port.pic1Data, 0x01); outb(Port.pic2Data, 0x01)       // ICW4: 8086 mode
    outb(Port.pic1Data, 0xfe); outb(Port.pic2Data, 0xff)       // OCW1: unmask IRQ 0
    // PIT channel 0, mode 2 (rate generator), 1193182 Hz / 1193 = 1 kHz.
    outb(Port.pitMode, 0x34)
    outb(Port.pitChannel0, UInt8(1193 & 0xff))
    outb(Port.pitChannel0, UInt8(1193 >> 8))
}

@_cdecl("guest_main")
func guestMain(_ zeroPage: UInt) {
    let params = UnsafeRawPointer(bitPattern: zeroPage)!
    put("guest: hello from the kiln test guest\n")

    let lineAddress = UInt(params.loadUnaligned(fromByteOffset: BootParams.commandLinePointer, as: UInt32.self))
    let line = UnsafePointer<UInt8>(bitPattern: lineAddress)!
    put("guest: cmdline: ")
    var index = 0
    while line[index] != 0 && index < 2048 { putByte(line[index]); index += 1 }
    put("\n")

    let entries = Int(params.load(fromByteOffset: BootParams.e820Entries, as: UInt8.self))
    put("guest: e820 entries: "); putDecimal(UInt32(entries)); put("\n")
    for entry in 0..<entries {
        let offset = BootParams.e820Table + entry * 20
        put("guest: e820: ")
        putHex(params.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        put(" size ")
        putHex(params.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
        put(" type ")
        putDecimal(params.loadUnaligned(fromByteOffset: offset + 16, as: UInt32.self))
        put("\n")
    }

    let initrdSize = params.loadUnaligned(fromByteOffset: BootParams.ramdiskSize, as: UInt32.self)
    if initrdSize > 0 {
        let initrdAddress = UInt(params.loadUnaligned(fromByteOffset: BootParams.ramdiskImage, as: UInt32.self))
        let initrd = UnsafePointer<UInt8>(bitPattern: initrdAddress)!
        put("guest: initrd: "); putDecimal(initrdSize); put(" bytes: ")
        for index in 0..<Int(min(initrdSize, 16)) { putByte(initrd[index]) }
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

    installInterruptHandlers()
    setUpInterruptControllers()
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

    // The boot-timer device: one magic byte at the start of its MMIO page.
    UnsafeMutablePointer<UInt8>(bitPattern: UInt(0xd000_0000))!.pointee = 123
    put("guest: ready\n")

    if commandLine(line, contains: "noreset") { haltForever() }
    if commandLine(line, contains: "ctrlaltdel") {
        // Wait on IRQ 1 for the VMM's Ctrl+Alt+Del (set-2 make codes
        // 14 11 E0 71), then reboot as Linux's atkbd would.
        // With `ticks`, the timer stays on and a line goes out every 100
        // ticks (100 ms), so a test can see the guest stop while paused.
        let ticking = commandLine(line, contains: "ticks")
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
