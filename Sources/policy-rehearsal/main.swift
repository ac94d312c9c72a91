// policy-rehearsal BUNDLE SOCKET-PATH [--forbidden ROLE] [--unprepared] [--workout ROLE] [--signal-other PID] [--once-race]
//
// A static stand-in for the VMM's thread layout, run by the kernel tests
// under the jailer's pre-exec filter: it does what the VMM does between exec
// and its per-thread filters, starts an API thread and a vCPU thread that each
// install their role, installs the vmm role on the main thread, and has every
// thread do its typical work. Exit 0 means every call passed every filter.
// With --forbidden ROLE, that role's thread then tries socket(), which its
// filter must stop (the process dies of SIGSYS). Each thread first runs an
// allocation workout under its filter; --unprepared skips what kiln does to
// the C library before its first thread, --workout ROLE limits the workout to
// one role. With --signal-other PID, the event loop kicks a thread of its own
// with SIGUSR1, as kiln kicks a vCPU, then aims the same tgkill at PID, which
// the vmm role must stop (SIGSYS). With --once-race, the threads first touch
// one lazy global at once, so that swift_once's lock is contended under the
// roles (see OnceRace).
import Glibc

exit(Rehearsal.run(Array(CommandLine.arguments.dropFirst())))
