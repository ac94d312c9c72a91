import Glibc
import KilnSystem
import KilnTestSupport
import Testing

@testable import KilnAPI

/// Runs a real server on a temporary Unix socket, on its own thread.
private final class ServerFixture {
    final class Echo: APIRequestHandler {
        func handle(_ request: HTTPRequest) -> HTTPResponse {
            .json(.ok, "\"\(request.method) \(request.path) \(request.body.count)\"")
        }
    }

    let directory: String
    let path: String
    let server: APIServer.StopHandle
    let thread: SystemThread

    init(configure: (inout APIServer.Configuration) -> Void = { _ in }) throws {
        // A client writing to a connection the server refused must get EPIPE,
        // not kill the test process (the VMM ignores SIGPIPE the same way).
        signal(SIGPIPE, SIG_IGN)
        directory = String(cString: mkdtemp(strdup("/tmp/kiln-api-XXXXXX")))
        path = directory + "/api.sock"
        var configuration = APIServer.Configuration()
        configure(&configuration)
        let server = try APIServer(
            listener: try UnixSocket.listen(path: path), configuration: configuration,
            handler: Echo())
        self.server = server.stopHandle
        thread = try SystemThread.spawn(name: "api-test") { try? server.run() }
    }

    func stop() {
        server.stop()
        thread.join()
        unlink(path)
        rmdir(directory)
    }

    func connect() throws -> FileDescriptor { try UnixSocket.connect(path: path) }
}

private func send(_ fd: FileDescriptor, _ text: String) throws { try fd.writeAll(Array(text.utf8)) }

struct ResponseDeadlineExceeded: Error, CustomStringConvertible {
    let description: String
}

/// Reads until `count` responses are complete or the peer closes. A server
/// that does neither within `seconds` fails the test rather than hanging it.
private func readResponses(_ fd: FileDescriptor, count: Int, seconds: Int32 = 10) throws -> [String] {
    var received: [UInt8] = []
    var responses: [String] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = MonotonicClock.nanoseconds() + UInt64(seconds) * 1_000_000_000
    while responses.count < count {
        let now = MonotonicClock.nanoseconds()
        let left = deadline > now ? Int32((deadline - now) / 1_000_000) : 0
        guard becomesReadable(fd, within: left) else {
            throw ResponseDeadlineExceeded(
                description: "\(responses.count) of \(count) responses and no end of file within \(seconds) s")
        }
        let n = try buffer.withUnsafeMutableBytes { try fd.read(into: $0) }
        if n == 0 { break }
        received += buffer[0..<n]
        while let headerEnd = received.indices.first(where: { received[$0...].starts(with: Array("\r\n\r\n".utf8)) }) {
            let head = String(decoding: received[0..<headerEnd], as: UTF8.self)
            let length =
                head.split(separator: "\r\n").first { $0.hasPrefix("Content-Length: ") }
                .map { Int($0.dropFirst(16))! } ?? 0
            guard received.count >= headerEnd + 4 + length else { break }
            responses.append(String(decoding: received[0..<headerEnd + 4 + length], as: UTF8.self))
            received.removeFirst(headerEnd + 4 + length)
        }
    }
    return responses
}

/// Whether `fd` has something to read (data or end of file) within `milliseconds`.
func becomesReadable(_ fd: FileDescriptor, within milliseconds: Int32) -> Bool {
    var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
    return poll(&entry, 1, milliseconds) == 1
}

@Suite(.serialized) struct APIServerTests {
    @Test func answersPipelinedRequestsInOrder() throws {
        let fixture = try ServerFixture()
        defer { fixture.stop() }
        let client = try fixture.connect()
        defer { client.close() }
        try send(
            client, "GET /a HTTP/1.1\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\n\r\n")
        let responses = try readResponses(client, count: 3)
        #expect(responses.count == 3)
        #expect(responses.map { $0.hasPrefix("HTTP/1.1 200 OK\r\n") } == [true, true, true])
        #expect(responses[0].hasSuffix("\"GET /a 0\""))
        #expect(responses[1].hasSuffix("\"PUT /b 3\""))
        #expect(responses[2].hasSuffix("\"GET /c 0\""))
    }

    /// As Firecracker's micro_http: `Expect: 100-continue` is answered at
    /// once, so a client that waits for it (curl: a second) need not.
    @Test func answersExpect100ContinueBeforeTheBody() throws {
        let fixture = try ServerFixture()
        defer { fixture.stop() }
        let client = try fixture.connect()
        defer { client.close() }
        try send(client, "PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        let interim = try readResponses(client, count: 1, seconds: 5)
        #expect(interim == ["HTTP/1.1 100 Continue\r\n\r\n"])
        try send(client, "{}")
        let final = try readResponses(client, count: 1)
        #expect(final.count == 1 && final[0].hasPrefix("HTTP/1.1 200 OK\r\n") && final[0].hasSuffix("\"PUT /x 2\""))
    }

    @Test func refusesOversizedBodyAndCloses() throws {
        let fixture = try ServerFixture { $0.limits.body = 10 }
        defer { fixture.stop() }
        let client = try fixture.connect()
        defer { client.close() }
        try send(client, "PUT /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        let responses = try readResponses(client, count: 2)
        #expect(responses.count == 1)
        #expect(responses.first?.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n") == true)
        #expect(responses.first?.contains("Connection: close\r\n") == true)
        #expect(responses.first?.hasSuffix(#"{"fault_message":"request body larger than 10 bytes"}"#) == true)
    }

    /// The idle timeout (2 s) is long enough that the fast client is always
    /// answered first on a loaded machine; the slow one's end of file is
    /// then waited for, with a deadline.
    @Test func slowClientDoesNotBlockOthersAndIsDropped() throws {
        let fixture = try ServerFixture { $0.idleTimeoutMilliseconds = 2000 }
        defer { fixture.stop() }
        let slow = try fixture.connect()
        defer { slow.close() }
        try send(slow, "GET /slow HTTP/1.1\r\nHost:")
        let fast = try fixture.connect()
        defer { fast.close() }
        try send(fast, "GET /fast HTTP/1.1\r\nConnection: close\r\n\r\n")
        let fastResponses = try readResponses(fast, count: 2)
        #expect(fastResponses.count == 1)
        #expect(fastResponses.first?.hasSuffix("\"GET /fast 0\"") == true)
        // The dribbling client is cut off: its read sees end of file.
        #expect(try readResponses(slow, count: 1).isEmpty)
    }

    /// A client holding its connection open between requests does not wake
    /// the server: its thread sleeps until the idle timeout is due (it used
    /// to wake every second to sweep).
    @Test func anOpenIdleConnectionLetsTheServerSleep() throws {
        let fixture = try ServerFixture { $0.idleTimeoutMilliseconds = 60_000 }
        defer { fixture.stop() }
        let client = try fixture.connect()
        defer { client.close() }
        try send(client, "GET /kept HTTP/1.1\r\n\r\n")
        #expect(try readResponses(client, count: 1).count == 1)
        let me = getpid()
        let server = try #require(ProcThreads.thread(named: "api-test", in: me), "the server's thread")
        let before = try #require(ProcThreads.voluntarySwitches(me, server))
        // Four seconds: a once-a-second sweep would wake it 3 to 5 times.
        sleep(4)
        let wakes = try #require(ProcThreads.voluntarySwitches(me, server)) - before
        #expect(wakes <= 1, "the server's thread slept \(wakes) times in 4 s with one idle client")
    }

    /// Sixteen keep-alive clients between requests used to hold every slot
    /// until their idle timeout, and a seventeenth was closed unanswered.
    @Test func idleKeepAliveClientsDoNotLockOutANewOne() throws {
        let fixture = try ServerFixture()
        defer { fixture.stop() }
        #expect(APIServer.Configuration().maximumConnections == 16)
        var idle: [FileDescriptor] = []
        defer { for connection in idle { connection.close() } }
        for index in 0..<16 {
            let client = try fixture.connect()
            idle.append(client)
            try send(client, "GET /idle\(index) HTTP/1.1\r\n\r\n")
            #expect(try readResponses(client, count: 1).first?.hasSuffix("\"GET /idle\(index) 0\"") == true)
        }
        let newcomer = try fixture.connect()
        defer { newcomer.close() }
        try send(newcomer, "GET /new HTTP/1.1\r\n\r\n")
        #expect(becomesReadable(newcomer, within: 2000))
        let answer = try readResponses(newcomer, count: 1)
        #expect(answer.first?.hasPrefix("HTTP/1.1 200 OK\r\n") == true, "\(answer)")
        #expect(answer.first?.hasSuffix("\"GET /new 0\"") == true)
        // The room came from the connection idle the longest: the first.
        #expect(try readResponses(idle[0], count: 1).isEmpty)
        // The others are still open and served.
        try send(idle[15], "GET /again HTTP/1.1\r\n\r\n")
        #expect(try readResponses(idle[15], count: 1).first?.hasSuffix("\"GET /again 0\"") == true)
    }

    /// With every slot in the middle of a request there is no idle one to
    /// evict: the newcomer is told so (503, Connection: close), not cut off
    /// silently, and the requests in progress are not disturbed.
    @Test func busyServerAnswers503() throws {
        let fixture = try ServerFixture { $0.maximumConnections = 2 }
        defer { fixture.stop() }
        let busy = try (0..<2).map { _ in try fixture.connect() }
        defer { for connection in busy { connection.close() } }
        // No pause: the server may accept all three at once, before reading
        // the partial requests; it must still not take those two for idle.
        for client in busy { try send(client, "GET /busy HTTP/1.1\r\nHost:") }
        let newcomer = try fixture.connect()
        defer { newcomer.close() }
        try? send(newcomer, "GET /new HTTP/1.1\r\n\r\n")
        // One answer; what follows may be a reset, as the request was unread.
        let refused = (try? readResponses(newcomer, count: 1)) ?? []
        #expect(refused.count == 1)
        #expect(refused.first?.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n") == true, "\(refused)")
        #expect(refused.first?.contains("Connection: close\r\n") == true)
        #expect(refused.first?.contains("all 2 API connections are busy") == true)
        try send(busy[0], " x\r\n\r\n")
        #expect(try readResponses(busy[0], count: 1).first?.hasSuffix("\"GET /busy 0\"") == true)
    }
}
