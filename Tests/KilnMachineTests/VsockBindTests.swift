import KilnMachine
import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// vsock's `uds_path` exists from the moment `PUT /vsock` is answered, as
/// Firecracker's `VsockBuilder::insert` makes it (clients such as bandsox wait
/// for the file before InstanceStart), and goes when kiln ends, whatever ends
/// it. kiln runs under its built-in filters: the bind runs on the event loop
/// under the launch role, and the API thread's role has no bind.
@Suite(.enabled(if: Lane1.kilnBuilt, "kiln is not built (swift build)"))
struct VsockBindTests {
    static func isSocket(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFSOCK
    }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    static func scratch(_ name: String) -> String {
        "/tmp/kiln-vsock-bind-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// The socket itself: bound and listening when made, removed once; a
    /// taken path is refused with its reason and the file kept.
    @Test func aHostSocketIsBoundAtOnceRemovedOnceAndNeverTakesAFile() throws {
        let path = Self.scratch("unit") + ".v"
        defer { unlink(path) }
        let socket = try VsockHostSocket(path: path)
        #expect(Self.isSocket(path))
        #expect(throws: BootInputError.vsockPathTaken(path: path)) { try VsockHostSocket(path: path) }
        #expect(Self.isSocket(path), "a refused bind must leave the existing socket alone")
        socket.remove()
        #expect(!Self.exists(path))
        ChildProcess.write("not a socket", to: path)
        socket.remove()
        #expect(Lane1.read(path) == "not a socket", "a second remove must not unlink what is there now")
    }

    /// A second bind of the same path (`PUT /vsock` again) keeps the socket
    /// while its file is still there, binds a new one once the file was
    /// deleted (peers could no longer reach the old listener), and refuses
    /// a file someone else put there. A replaced socket unlinks only the
    /// file it bound.
    @Test func theSamePathKeepsItsSocketUntilTheFileIsGoneThenBindsAgain() throws {
        let path = Self.scratch("rebind") + ".v"
        defer { unlink(path) }
        let first = try VsockHostSocket(path: path)
        #expect(try VsockHostSocket.replacing(first, path: path) === first, "its own file still there: kept")
        #expect(first.holdsPath)

        unlink(path)
        #expect(!first.holdsPath)
        let second = try VsockHostSocket.replacing(first, path: path)
        #expect(second !== first)
        #expect(Self.isSocket(path) && second.holdsPath, "the first socket's end must leave the new file")
        let peer = try? UnixSocket.connect(path: path)
        #expect(peer != nil, "the new file reaches a listening socket")
        peer?.close()

        unlink(path)
        ChildProcess.write("not a socket", to: path)
        #expect(throws: BootInputError.vsockPathTaken(path: path)) { try VsockHostSocket.replacing(second, path: path) }
        #expect(Lane1.read(path) == "not a socket")
        let elsewhere = path + "2"
        defer { unlink(elsewhere) }
        let third = try VsockHostSocket.replacing(second, path: elsewhere)
        #expect(Self.isSocket(elsewhere) && third.holdsPath)
        #expect(Lane1.read(path) == "not a socket", "the replaced socket's path holds another file now: kept")
        third.remove()
        #expect(!Self.exists(elsewhere))
    }

    @Test func putVsockBindsAtOnceAndASecondPutReplacesIt() throws {
        let base = Self.scratch("put")
        let socketPath = base + ".sock", errors = base + ".err"
        let first = base + ".v1", second = base + ".v2", occupied = base + ".file"
        ChildProcess.write("not a socket", to: occupied)
        defer { for path in [socketPath, errors, first, second, occupied] { unlink(path) } }
        let pid = try Lane1.spawn(["--api-sock", socketPath], stdout: "/dev/null", stderr: errors)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        let client = try UnixHTTPClient(path: socketPath)

        #expect(try client.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "\#(first)"}"#).status == 204)
        #expect(Self.isSocket(first), "uds_path must exist when the 204 arrives; stderr: \(Lane1.read(errors))")
        // Listening already: a peer's connect is taken into the backlog.
        let peer = try? UnixSocket.connect(path: first)
        #expect(peer != nil)
        peer?.close()

        // A second PUT for another path: the old file goes, the new one is there.
        #expect(try client.request("PUT", "/vsock", #"{"guest_cid": 4, "uds_path": "\#(second)"}"#).status == 204)
        #expect(!Self.exists(first) && Self.isSocket(second))
        // The same path again (a new CID): kept, not refused as taken.
        #expect(try client.request("PUT", "/vsock", #"{"guest_cid": 5, "uds_path": "\#(second)"}"#).status == 204)
        #expect(Self.isSocket(second))

        // A path someone else's file holds is refused by name and left alone;
        // a path that cannot be bound leaves nothing. Either way the device
        // configured before stays, socket and all.
        let taken = try client.request("PUT", "/vsock", #"{"guest_cid": 6, "uds_path": "\#(occupied)"}"#)
        #expect(
            taken.status == 400 && taken.body.contains(occupied) && taken.body.contains("already exists"), "\(taken)")
        #expect(Lane1.read(occupied) == "not a socket")
        let missingFolder = base + ".nofolder/v.sock"
        let unbindable = try client.request("PUT", "/vsock", #"{"guest_cid": 6, "uds_path": "\#(missingFolder)"}"#)
        #expect(unbindable.status == 400 && unbindable.body.contains(missingFolder), "\(unbindable)")
        #expect(!Self.exists(missingFolder))
        #expect(Self.isSocket(second))
        let configuration = try client.request("GET", "/vm/config").body
        #expect(configuration.contains(#""guest_cid":5"#) && configuration.contains(second), "\(configuration)")

        kill(pid, SIGTERM)
        status = Lane1.wait(pid)
        #expect(status == 128 + SIGTERM, "stderr: \(Lane1.read(errors))")
        #expect(!Self.exists(second), "uds_path must be removed when kiln ends")
        #expect(!Self.exists(socketPath))
    }

    /// kiln serving its API on a scratch socket while `body` runs, then
    /// SIGTERM: kiln ends by it and takes `uds` (the vsock path for `body`)
    /// with it.
    static func withAPI(
        _ name: String, _ body: (UnixHTTPClient, _ uds: String, _ errors: String) throws -> Void
    ) throws {
        let base = scratch(name)
        let socketPath = base + ".sock", errors = base + ".err", uds = base + ".v"
        defer { for path in [socketPath, errors, uds] { unlink(path) } }
        let pid = try Lane1.spawn(["--api-sock", socketPath], stdout: "/dev/null", stderr: errors)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        try body(try UnixHTTPClient(path: socketPath), uds, errors)
        kill(pid, SIGTERM)
        status = Lane1.wait(pid)
        #expect(status == 128 + SIGTERM, "stderr: \(Lane1.read(errors))")
        #expect(!exists(uds), "uds_path must be removed when kiln ends")
    }

    /// Through the API: `uds_path` deleted after a `PUT /vsock`, the same
    /// path put again is bound again (before, kiln kept the listener no peer
    /// could reach).
    @Test func aPutOfTheSamePathAfterItsFileWasDeletedBindsItAgain() throws {
        try Self.withAPI("deleted") { client, uds, errors in
            #expect(try client.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "\#(uds)"}"#).status == 204)
            #expect(Self.isSocket(uds))
            unlink(uds)
            #expect(try client.request("PUT", "/vsock", #"{"guest_cid": 4, "uds_path": "\#(uds)"}"#).status == 204)
            #expect(Self.isSocket(uds), "uds_path must be bound again; stderr: \(Lane1.read(errors))")
            let peer = try? UnixSocket.connect(path: uds)
            #expect(peer != nil)
            peer?.close()
            let configuration = try client.request("GET", "/vm/config").body
            #expect(configuration.contains(#""guest_cid":4"#), "\(configuration)")
        }
    }

    /// A refused InstanceStart (no kernel there) keeps uds_path for the retry;
    /// the exit removes it.
    @Test func aRefusedInstanceStartKeepsTheSocketAndTheExitRemovesIt() throws {
        try Self.withAPI("refused") { client, uds, _ in
            #expect(
                try client.request("PUT", "/boot-source", #"{"kernel_image_path": "/etc/hostname"}"#).status == 204)
            #expect(try client.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "\#(uds)"}"#).status == 204)
            let refused = try client.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
            #expect(refused.status == 400, "\(refused)")
            #expect(Self.isSocket(uds))
        }
    }

    /// `--config-file`: uds_path is bound as the file is applied; a start
    /// that fails ends kiln and takes the socket with it (a path someone
    /// else's file holds: `TestGuestTests.aVsockPathAlreadyTakenIsRefusedAndKept`).
    @Test func aConfigFileStartThatFailsRemovesTheSocket() throws {
        let uds = Self.scratch("config") + ".v"
        let config = Lane1.scratchFile(
            "vsock-bind",
            #"{"boot-source": {"kernel_image_path": "/etc/hostname"},"#
                + #" "vsock": {"guest_cid": 3, "uds_path": "\#(uds)"}}"#)
        defer { unlink(config); unlink(uds) }
        let failed = try Lane1.run(["--no-api", "--config-file", config])
        #expect(failed.status != 0 && failed.stderr.contains("/etc/hostname"), "stderr: \(failed.stderr)")
        #expect(!Self.exists(uds), "a failed start must not leave uds_path behind")
    }
}
