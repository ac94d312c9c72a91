import KilnSystem

/// `kiln-jailer --help`: every flag and every exit code.
public enum JailHelp {
    public static let version = KilnVersion.jailerText

    public static var text: String {
        var text = """
            kiln-jailer: isolates the Kiln VMM, then execs it as an unprivileged user.

            usage:
              kiln-jailer --id ID --exec-file PATH --uid N --gid N [options] [-- VMM arguments]
              kiln-jailer cleanup --id ID --exec-file PATH [--chroot-base-dir DIR] [--parent-cgroup NAME]
              kiln-jailer --help | --version

            Required (Firecracker's jailer flags):
              --id ID                 1-64 characters of [A-Za-z0-9-]; names the jail folder and cgroups.
                                      A cgroup of that id that already exists is refused. A jail folder
                                      that exists (an orchestrator's, with the kernel and drives linked in)
                                      is used when it, its root and their parents are root's and writable
                                      by root alone; no link in it is followed and none of its files is
                                      replaced or removed, also by a failed launch.
              --exec-file PATH        absolute path of the VMM: a static ELF executable (the jail holds no
                                      libraries). Hard-linked into the jail; copied (root's, 0755) across
                                      file systems, or when the VMM's user could write it or it is set-ID.
              --uid N, --gid N        decimal ids the VMM runs as. 0 (root, as Kata passes) is accepted:
                                      no capability is left in any set and securebits lock them out,
                                      but prefer one unprivileged uid per microVM (SECURITY.md).

            Optional (Firecracker's jailer flags):
              --chroot-base-dir DIR   default /srv/jailer. The jail is DIR/<exec-file name>/<id>/root.
                                      DIR and DIR/<exec-file name>, where they exist, must be root's and
                                      writable by root alone (else refused); missing ones are made 0755.
              --netns PATH            join this network namespace (e.g. /var/run/netns/NAME). Without it
                                      and without --new-net-ns the VMM stays in the caller's namespace,
                                      so that a TAP device made there can be opened.
              --daemonize             fork, start a new session, stdio to /dev/null; the parent exits 0.
              --new-pid-ns            the VMM is pid 1 of a new PID namespace; the parent exits 0.
              --cgroup FILE=VALUE     repeatable; FILE is controller.name (memory.limit_in_bytes,
                                      cpu.cfs_quota_us, pids.max on v1; memory.max, cpu.max, pids.max on
                                      v2). VALUE holds no '/' and no newline. Creates <parent>/<id> in each
                                      named controller's hierarchy, writes the values, moves the VMM in.
              --cgroup-version 1|2    default: 1 when the host mounts any v1 controller, 2 on a pure
                                      cgroup2 host (read from /proc/self/mountinfo); Firecracker's is always 1.
              --parent-cgroup NAME    relative cgroup path above <id>; default: the exec file's name. On
                                      v2 without --cgroup, as Firecracker's: no cgroup is made and the VMM
                                      joins NAME, which must delegate no controller (cgroup.subtree_control
                                      empty); a NAME that does not exist is ignored (a notice on stderr).
                                      On v2 the controllers named by --cgroup are enabled in the
                                      cgroup.subtree_control of every cgroup above <id> (the root's too),
                                      and stay enabled after cleanup: siblings may rely on them.
              --resource-limit R=N    repeatable; R is fsize or no-file (default no-file=2048). Soft and
                                      hard limits are both set to N.
              --version               print the Firecracker jailer version implemented, then kiln-jailer's.
              --node N                older jailers' flag: --cgroup cpuset.mems=N and cpuset.cpus=<node N's
                                      CPUs from /sys/devices/system/node/nodeN/cpulist>.
              --seccomp-level 1|2     older jailers' flag, accepted: Kiln's filters always check arguments
                                      (level 2). 0 (no filters) is refused.
            A value is the next argument (--id ID, never --id=ID), as in Firecracker's jailer.

            Kiln's own:
              --seccomp-bundle FILE   compiled policies (`kiln-policy compile`); its "jailer" program is
                                      installed before exec, and the whole bundle is copied read-only into
                                      the jail. Default: the policies built into kiln-jailer (the same
                                      bytes `kiln-policy compile --policies policies` writes).
              --new-net-ns            run the VMM in a new, empty network namespace.
              --jail-file HOST_PATH[:NAME]
                                      repeatable; puts the regular file HOST_PATH read-only at /NAME in the
                                      jail root (NAME: HOST_PATH's file name by default; one name of
                                      [A-Za-z0-9-_.], not dev, run, seccomp.kbundle or the exec file's name).
                                      Hard-linked when the VMM's uid/gid may read but not write it, else
                                      copied as root's, mode 0444 (0440 with the VMM's group when others
                                      may not read HOST_PATH). Every file is checked before anything
                                      is created; the files go with the jail folder (rollback, cleanup).
                                      For the kernel, initrd and config file the VMM reads.
              --help, -h              this text.

            The VMM is exec'd as:
              /<exec-file name> --id ID --seccomp-filter /seccomp.kbundle --start-time-us N
                  --start-time-cpu-us N [arguments after --]
            (--seccomp-filter left out when the arguments after -- hold --no-seccomp or --seccomp-filter)
            with an empty environment and only fds 0-2 open. The start times are the jailer's
            CLOCK_MONOTONIC and CPU time (microseconds) when it began. With --daemonize or
            --new-pid-ns the VMM's host pid is written to <base>/<exec-file name>/<id>/root/<exec-file
            name>.pid, as Firecracker's jailer does; otherwise the VMM is the jailer's own process.

            In the jail: mount, IPC, UTS (hostname = ID) and cgroup namespaces; / is the jail root
            (nosuid), holding the exec file, seccomp.kbundle and the --jail-file files, all root's, and
            /run, the uid/gid's (0700), where the VMM may create its API socket; /dev is a
            private tmpfs (nosuid, noexec) holding only kvm, net/tun and urandom, each owned by the
            uid/gid with mode 0600 (no userfaultfd: kiln has no snapshots). No capabilities in any set;
            no_new_privs; the "jailer" seccomp program. The parent cgroup is shared and kept; cleanup
            removes <id>.

            Exit codes (a launch that fails removes everything it created; after the privilege drop it
            no longer can, and the message names what is left for `kiln-jailer cleanup`):
              0   success (the VMM's own status once exec'd; the forking parent's 0)
              1   unexpected internal error

            """
        for step in JailStep.allCases {
            let code = String(step.exitCode)
            text += "  " + code + String(repeating: " ", count: 4 - code.count) + step.summary + "\n"
        }
        return text
    }
}
