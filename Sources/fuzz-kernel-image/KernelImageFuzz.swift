import KilnFuzzSupport
import KilnMachine
import KilnMemory

/// libFuzzer entry for the kernel loaders (ELF with its PVH note, and the
/// bzImage setup header): a caller-supplied image is either refused with an
/// error or loaded inside guest RAM, never a trap. One 32 MiB guest is
/// reused across inputs; what a previous input wrote there does not matter.
private let memory = try! HeapGuestMemory(size: 32 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKernelImage(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let image = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? KernelLoader.load(image, into: memory, lowMemoryEnd: 32 << 20)
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum KernelImageReplay {
        static func main() throws { try FuzzReplay.run(fuzzKernelImage) }
    }
#endif
