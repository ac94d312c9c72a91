import CKilnStart
import KilnConfig
import KilnMachine
import KilnSystem

// kiln: the VMM. Thin: parse flags, build the machine, run it, exit with
// the guest's outcome. Everything else lives in the modules.
#if canImport(Glibc)
    import Glibc
#endif

ckiln_start_anchor()
let start = MonotonicClock.nanoseconds()
LaunchFilter.install(arguments: Array(CommandLine.arguments.dropFirst()))
exit(Launcher.main(arguments: Array(CommandLine.arguments.dropFirst()), start: start))
