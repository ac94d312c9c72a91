import KilnFuzzSupport
import KilnPolicy
import KilnSystem

// libFuzzer target for the policy language: lexer, parser, the merging of
// tests into alternatives, and the loader's include handling. Any input must
// end in a policy or a PolicyError; a crash or a hang is a bug.
//
//   make fuzz FUZZ_SECONDS=60   (KILN_FUZZ=1, ASan, coverage for every module: see the Makefile)
//   .build-fuzz/release/fuzz-policy-parser .build-fuzz/corpus/policy-parser fuzz/corpus/policy-parser
//
// Without KILN_FUZZ the target gets a replay `main` instead, so that every
// other build links: `fuzz-policy-parser FILE...` runs the given inputs once.

@_cdecl("LLVMFuzzerTestOneInput")
public func policyParserFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? PolicyParser.parse(text, file: "fuzz.policy")
    // The same text as a role that a shared file includes back: cycles,
    // duplicate rules across files, @default in an included file.
    var loader = PolicyLoader { name in
        name == "fuzz.policy" ? text : "read # shared\n@include \"fuzz.policy\"\n"
    }
    _ = try? loader.load(files: ["fuzz.policy", "common.policy"])
    return 0
}

#if KILN_FUZZ_REPLAY
    @main
    enum PolicyParserReplay {
        static func main() throws { try FuzzReplay.run(policyParserFuzz) }
    }
#endif
