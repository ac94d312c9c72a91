import KilnTestSupport
import Testing

@testable import KilnAPI

@Suite struct HTTPRequestParserTests {
    private func parseAll(_ text: String, limits: HTTPRequestParser.Limits = .init()) throws -> [HTTPRequest] {
        var parser = HTTPRequestParser(limits: limits)
        parser.append(Array(text.utf8))
        var requests: [HTTPRequest] = []
        while let request = try parser.nextRequest() { requests.append(request) }
        return requests
    }

    private func expectError(
        _ text: String, _ expected: HTTPParseError,
        limits: HTTPRequestParser.Limits = .init(), sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(throws: expected, sourceLocation: sourceLocation) { _ = try parseAll(text, limits: limits) }
    }

    @Test func parsesRequestWithBody() throws {
        let requests = try parseAll(
            "PUT /boot-source HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                + "Content-Length: 12\r\n\r\n{\"a\": \"b\"}\r\n")
        #expect(requests.count == 1)
        let request = try #require(requests.first)
        #expect(request.method == "PUT")
        #expect(request.path == "/boot-source")
        #expect(request.header("content-type") == "application/json")
        #expect(request.body == Array("{\"a\": \"b\"}\r\n".utf8))
        #expect(request.keepsConnectionAlive)
    }

    @Test func servesPipelinedRequestsInOrderWhateverTheSplit() throws {
        let wire = Array(
            ("GET /machine-config HTTP/1.1\r\n\r\n"
                + "PATCH /vm HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"state\": \"Paused\"}\n"
                + "GET /version?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").utf8)
        for split in 0...wire.count {
            var parser = HTTPRequestParser()
            var requests: [HTTPRequest] = []
            parser.append(wire[0..<split])
            while let request = try parser.nextRequest() { requests.append(request) }
            parser.append(wire[split...])
            while let request = try parser.nextRequest() { requests.append(request) }
            #expect(requests.map(\.path) == ["/machine-config", "/vm", "/version"])
            #expect(requests.map(\.method) == ["GET", "PATCH", "GET"])
            #expect(requests[1].body.count == 20)
            #expect(requests[2].version == .http10 && requests[2].keepsConnectionAlive)
            #expect(parser.bufferedByteCount == 0)
        }
    }

    @Test func waitsForIncompleteInput() throws {
        #expect(try parseAll("GET / HTTP/1.1\r\nHost: x\r\n").isEmpty)
        #expect(try parseAll("PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc").isEmpty)
    }

    @Test func rejectsMalformedRequests() {
        expectError("GET / HTTP/1.1\nHost: x\r\n\r\n", .malformed("bare LF in request line"))
        expectError("GET  / HTTP/1.1\r\n\r\n", .malformed("request line must be 'METHOD TARGET VERSION'"))
        expectError("G(T / HTTP/1.1\r\n\r\n", .malformed("invalid method"))
        expectError("GET http://x/ HTTP/1.1\r\n\r\n", .malformed("invalid request target"))
        expectError("GET / HTTP/2.0\r\n\r\n", .unsupportedVersion)
        expectError("GET / HTTP/1.1\r\nHost : x\r\n\r\n", .malformed("invalid header name"))
        expectError("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", .malformed("obsolete line folding in header section"))
        expectError("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", .malformed("bare CR in header section"))
        expectError("GET / HTTP/1.1\r\nNoColon\r\n\r\n", .malformed("header field without ':'"))
        expectError("GET / HTTP/1.1\r\nX: a\u{7F}\r\n\r\n", .malformed("invalid character in header value"))
        expectError("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", .malformed("invalid Content-Length"))
        expectError(
            "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", .malformed("invalid Content-Length"))
        expectError("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", .unsupportedTransferEncoding)
    }

    @Test func enforcesEveryLimitBeforeBuffering() {
        var limits = HTTPRequestParser.Limits()
        limits.requestLine = 32
        limits.headerSection = 64
        limits.headerCount = 2
        limits.body = 8
        expectError("GET /" + String(repeating: "a", count: 40), .requestLineTooLong(limit: 32), limits: limits)
        expectError(
            "GET / HTTP/1.1\r\nX: " + String(repeating: "b", count: 80), .headerSectionTooLarge(limit: 64),
            limits: limits)
        expectError("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", .tooManyHeaders(limit: 2), limits: limits)
        expectError("PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\n", .payloadTooLarge(limit: 8), limits: limits)
        #expect(HTTPParseError.payloadTooLarge(limit: 8).status.code == 413)
    }

    @Test func errorIsStickyAndDropsTheBuffer() throws {
        var parser = HTTPRequestParser()
        parser.append(Array("BAD\r\n\r\nGET / HTTP/1.1\r\n\r\n".utf8))
        #expect(throws: HTTPParseError.self) { try parser.nextRequest() }
        #expect(parser.bufferedByteCount == 0)
        parser.append(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(throws: HTTPParseError.self) { try parser.nextRequest() }
    }

    @Test func owesOneInterimContinueWhileAnExpectedBodyIsAwaited() throws {
        var parser = HTTPRequestParser()
        /// Feeds `text`; returns the body of a request that completed, and
        /// whether an interim 100 Continue is owed now.
        func feed(_ text: String) throws -> (body: String?, owed: Bool) {
            parser.append(Array(text.utf8))
            let request = try parser.nextRequest()
            return (request.map { String(decoding: $0.body, as: UTF8.self) }, parser.takeInterimContinue())
        }
        let headers = try feed("PUT /a HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\nab")
        #expect(headers.body == nil && headers.owed)
        let more = try feed("c")
        #expect(more.body == nil && !more.owed, "one per request")
        let done = try feed("dPUT /b HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
        #expect(done.body == "abcd" && !done.owed)
        let next = try feed("")
        #expect(next.body == nil && next.owed, "the next request is owed its own")
        let cases = [
            ("PUT /b HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", false),
            ("PUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n", false),
            ("PUT /b HTTP/1.1\r\nExpect: 100-continue\r\n", false),
            ("PUT /b HTTP/1.1\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\n", false),
            ("PUT /b HTTP/1.1\r\nexpect: 100-CONTINUE\r\nContent-Length: 2\r\n\r\n", true),
            ("PUT /b HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nxy", false),
        ]
        for (text, owed) in cases {
            parser = HTTPRequestParser()
            let result = try feed(text)
            #expect(result.owed == owed, "\(text)")
        }
    }

    @Test func encodesResponses() {
        let ok = HTTPResponse.json(.ok, "{}").encoded()
        #expect(
            String(decoding: ok, as: UTF8.self)
                == "HTTP/1.1 200 OK\r\nServer: Kiln\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        let none = HTTPResponse(status: .noContent, body: [1, 2]).encoded()
        #expect(String(decoding: none, as: UTF8.self) == "HTTP/1.1 204 No Content\r\nServer: Kiln\r\n\r\n")
    }

    /// Seeded fuzz-style pass over random and mutated requests fed in random
    /// splits: the parser may refuse, never crash, and never buffer past its limits.
    /// Requests parsed and inputs refused are counted against a floor (seed
    /// 0x48545450: 1,761 requests, 9,302 inputs refused).
    @Test func survivesRandomAndMutatedInput() {
        var generator = SplitMix64(seed: 0x4854_5450)
        var requests = 0, refused = 0
        let seeds = [
            "PUT /drives/rootfs HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /version HTTP/1.0\r\n\r\n",
        ]
        let limits = HTTPRequestParser.Limits()
        let ceiling = limits.requestLine + limits.headerSection + limits.body + 64
        for round in 0..<10_000 {
            var bytes = Array(seeds[round % seeds.count].utf8)
            for _ in 0..<(1 + Int(generator.next() % 6)) {
                let position = Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 3 {
                case 0: bytes[position] = UInt8(truncatingIfNeeded: generator.next())
                case 1: bytes.insert(contentsOf: "\r\n: /".utf8.shuffled(using: &generator).prefix(2), at: position)
                default: bytes.remove(at: position)
                }
                if bytes.isEmpty { bytes = [0x47] }
            }
            var parser = HTTPRequestParser(limits: limits)
            var offset = 0
            while offset < bytes.count {
                let step = 1 + Int(generator.next() % 16)
                parser.append(bytes[offset..<min(bytes.count, offset + step)])
                offset += step
                do {
                    while try parser.nextRequest() != nil { requests += 1 }
                } catch {
                    refused += 1
                    break
                }
                #expect(parser.bufferedByteCount <= ceiling)
            }
        }
        #expect(requests >= 1000 && refused >= 8000, "requests \(requests), refused \(refused)")
    }
}
