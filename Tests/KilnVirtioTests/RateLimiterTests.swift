import KilnTestSupport
import Testing

@testable import KilnVirtio

private let millisecond: UInt64 = 1_000_000
private let second: UInt64 = 1_000 * millisecond
/// A start well away from 0, so no test passes by accident of a zero clock.
private let start: UInt64 = 5 * second

private func bucket(_ size: UInt64, burst: UInt64 = 0, refillMilliseconds: UInt64) -> IOTokenBucket.Settings {
    IOTokenBucket.Settings(size: size, oneTimeBurst: burst, refillTimeMilliseconds: refillMilliseconds)
}

/// 1000 bytes a second: one byte per millisecond.
private func bytesPerSecond(_ size: UInt64 = 1000, burst: UInt64 = 0) -> IORateLimiter {
    IORateLimiter(bandwidth: bucket(size, burst: burst, refillMilliseconds: 1000), now: start)
}

/// `#expect` cannot call a mutating method on a struct: a reference to one.
private final class Box {
    var limiter: IORateLimiter
    init(_ limiter: IORateLimiter) { self.limiter = limiter }
    var bandwidth: IOTokenBucket? { limiter.bandwidth }
    var ops: IOTokenBucket? { limiter.ops }
    var isUnlimited: Bool { limiter.isUnlimited }
    func consume(bytes: UInt64, now: UInt64) -> Bool { limiter.consume(bytes: bytes, now: now) }
    func waitNanoseconds(bytes: UInt64, now: UInt64) -> UInt64 { limiter.waitNanoseconds(bytes: bytes, now: now) }
    func apply(_ update: IORateLimiter.Update, now: UInt64) { limiter.apply(update, now: now) }
}

@Suite("IORateLimiter: token buckets")
struct IORateLimiterTests {
    @Test("a size or refill time of 0 means no bucket; no bucket grants everything")
    func unlimited() {
        #expect(IOTokenBucket(bucket(0, refillMilliseconds: 100), now: 0) == nil)
        #expect(IOTokenBucket(bucket(100, refillMilliseconds: 0), now: 0) == nil)
        let limiter = Box(
            IORateLimiter(
                bandwidth: bucket(0, burst: 5, refillMilliseconds: 10),
                ops: bucket(7, refillMilliseconds: 0), now: start))
        #expect(limiter.isUnlimited)
        for _ in 0..<1000 { #expect(limiter.consume(bytes: .max, now: start)) }
        #expect(limiter.waitNanoseconds(bytes: .max, now: start) == 0)
    }

    @Test("starts full, refuses when empty, and refills one token per size-th of the refill time")
    func refill() {
        let limiter = Box(bytesPerSecond())
        #expect(limiter.consume(bytes: 1000, now: start))
        #expect(!limiter.consume(bytes: 1, now: start))
        #expect(limiter.waitNanoseconds(bytes: 1, now: start) == millisecond)
        #expect(limiter.waitNanoseconds(bytes: 250, now: start) == 250 * millisecond)
        #expect(!limiter.consume(bytes: 1, now: start + millisecond - 1))
        #expect(limiter.consume(bytes: 1, now: start + millisecond))
        // Half a refill time gives half the bucket, not a token more.
        #expect(limiter.consume(bytes: 499, now: start + 500 * millisecond))
        #expect(!limiter.consume(bytes: 1, now: start + 500 * millisecond))
        #expect(limiter.bandwidth?.budget == 0)
    }

    @Test("a refused request leaves its bytes in the bucket")
    func refusedTakesNothing() {
        let limiter = Box(bytesPerSecond())
        #expect(limiter.consume(bytes: 600, now: start))
        #expect(!limiter.consume(bytes: 500, now: start))
        #expect(limiter.bandwidth?.budget == 400)
        #expect(limiter.consume(bytes: 400, now: start))
    }

    @Test("fractions of a token carry over: polling never loses or doubles one")
    func fractions() {
        // 3 tokens a millisecond: one every 333,333.3 ns.
        let limiter = Box(IORateLimiter(ops: bucket(3, refillMilliseconds: 1), now: start))
        var granted = 0
        for step in stride(from: UInt64(0), through: 10 * millisecond, by: 997)
        where limiter.consume(bytes: 0, now: start + step) {
            granted += 1
        }
        // 3 at the start, then exactly 3 per millisecond; the last poll is
        // just short of 10 ms, where the 30th token is not yet earned.
        #expect(granted == 3 + 29)
        #expect(limiter.consume(bytes: 0, now: start + 10 * millisecond))
        #expect(!limiter.consume(bytes: 0, now: start + 10 * millisecond))
    }

    @Test("an idle bucket holds at most its size (Firecracker's lazy refill gave up to twice)")
    func idleCap() {
        let limiter = Box(bytesPerSecond())
        #expect(limiter.consume(bytes: 1000, now: start + 10 * second))
        #expect(!limiter.consume(bytes: 1, now: start + 10 * second + 1))
    }

    @Test("ops and bytes are taken together or not at all")
    func bothBuckets() {
        let limiter = Box(
            IORateLimiter(
                bandwidth: bucket(1000, refillMilliseconds: 1000),
                ops: bucket(2, refillMilliseconds: 100), now: start))
        #expect(limiter.consume(bytes: 100, now: start))
        #expect(limiter.consume(bytes: 100, now: start))
        // Bytes remain, ops do not: nothing is taken.
        #expect(!limiter.consume(bytes: 100, now: start))
        #expect(limiter.bandwidth?.budget == 800)
        #expect(limiter.waitNanoseconds(bytes: 100, now: start) == 50 * millisecond)
        // Ops remain, bytes do not: the op is not taken either.
        #expect(!limiter.consume(bytes: 900, now: start + 50 * millisecond))
        #expect(limiter.ops?.budget == 1)
        // The wait is the longer of the two: 100 missing bytes at 1 per ms.
        #expect(limiter.waitNanoseconds(bytes: 900, now: start + 50 * millisecond) == 50 * millisecond)
        #expect(limiter.consume(bytes: 900, now: start + 100 * millisecond))
    }

    @Test("one_time_burst is spent first, then the budget, and never comes back")
    func burst() {
        let limiter = Box(bytesPerSecond(100, burst: 50))
        #expect(limiter.consume(bytes: 30, now: start))
        #expect(limiter.bandwidth?.burst == 20)
        #expect(limiter.bandwidth?.budget == 100)
        // 20 from the burst, 100 from the budget.
        #expect(limiter.consume(bytes: 120, now: start))
        #expect(limiter.bandwidth?.burst == 0)
        #expect(!limiter.consume(bytes: 1, now: start))
        // Refill restores the budget only.
        #expect(limiter.consume(bytes: 100, now: start + 60 * second))
        #expect(!limiter.consume(bytes: 1, now: start + 60 * second))
        #expect(limiter.bandwidth?.burst == 0)
    }

    @Test("a refused request does not spend the burst")
    func burstKeptOnRefusal() {
        let limiter = Box(
            IORateLimiter(
                bandwidth: bucket(100, burst: 50, refillMilliseconds: 1000),
                ops: bucket(1, refillMilliseconds: 1000), now: start))
        #expect(limiter.consume(bytes: 10, now: start))
        // The op is short, so the bytes, burst included, stay.
        #expect(!limiter.consume(bytes: 40, now: start))
        #expect(limiter.bandwidth?.burst == 40)
        #expect(limiter.bandwidth?.budget == 100)
    }

    @Test("a request larger than the bucket passes, as in Firecracker, and its excess is paid back by waiting")
    func oversized() {
        let limiter = Box(bytesPerSecond())
        #expect(limiter.consume(bytes: 600, now: start))
        // Even with 400 left it passes; 2600 are owed: 2.6 s of refill.
        #expect(limiter.consume(bytes: 3000, now: start))
        #expect(limiter.bandwidth?.inDebt(now: start) == true)
        #expect(!limiter.consume(bytes: 1, now: start))
        #expect(!limiter.consume(bytes: 3000, now: start))
        #expect(limiter.waitNanoseconds(bytes: 1, now: start) == 2600 * millisecond + millisecond)
        #expect(limiter.waitNanoseconds(bytes: 5000, now: start) == 2600 * millisecond)
        #expect(!limiter.consume(bytes: 1, now: start + 2600 * millisecond))
        #expect(limiter.consume(bytes: 1, now: start + 2601 * millisecond))
        // Requests of no bytes still pass: the ops bucket is the one to count them.
        #expect(limiter.consume(bytes: 0, now: start + 2601 * millisecond))
    }

    @Test("back-to-back oversized requests average the configured rate")
    func oversizedRate() {
        let limiter = Box(bytesPerSecond())
        var now = start
        var moved: UInt64 = 0
        for _ in 0..<10 {
            now += limiter.waitNanoseconds(bytes: 3000, now: now)
            #expect(limiter.consume(bytes: 3000, now: now))
            moved += 3000
        }
        // The tenth goes at 26 s and its debt ends at 29 s: 30,000 bytes =
        // the full bucket's 1000 plus 29 s at one per millisecond.
        #expect(now - start == 26 * second)
        #expect(limiter.waitNanoseconds(bytes: 1, now: now) == 3 * second + millisecond)
        #expect(moved == 30_000)
    }

    @Test("huge sizes, refill times and requests neither trap nor wrap")
    func huge() {
        let widest = Box(IORateLimiter(bandwidth: bucket(.max, burst: .max, refillMilliseconds: .max), now: start))
        #expect(widest.consume(bytes: .max, now: start))
        #expect(widest.consume(bytes: .max, now: start))
        #expect(!widest.consume(bytes: .max, now: start))
        #expect(widest.waitNanoseconds(bytes: .max, now: start) > 0)

        // One byte a millisecond, asked for 2^64 - 1: the debt outlives the clock.
        let narrow = Box(IORateLimiter(bandwidth: bucket(1, refillMilliseconds: 1), now: start))
        #expect(narrow.consume(bytes: .max, now: start))
        #expect(narrow.waitNanoseconds(bytes: 1, now: start) == .max - start)
        #expect(!narrow.consume(bytes: 1, now: .max - 1))

        // Near the end of the clock.
        let late = Box(IORateLimiter(ops: bucket(.max, refillMilliseconds: 1), now: .max - 10))
        #expect(late.consume(bytes: 0, now: .max - 10))
        #expect(late.consume(bytes: 0, now: .max))

        // A clock that steps back earns nothing and breaks nothing.
        let back = Box(bytesPerSecond())
        #expect(back.consume(bytes: 1000, now: start))
        #expect(!back.consume(bytes: 1, now: start - second))
        #expect(back.consume(bytes: 1, now: start + millisecond))
    }

    @Test("a refill time past 64 bits of nanoseconds saturates instead of disabling the bucket")
    func saturatedRefill() throws {
        let settings = bucket(10, refillMilliseconds: .max)
        let bucket = try #require(IOTokenBucket(settings, now: start))
        #expect(bucket.refillNanoseconds == .max)
        let limiter = Box(IORateLimiter(bandwidth: settings, now: start))
        #expect(limiter.consume(bytes: 10, now: start))
        #expect(!limiter.consume(bytes: 1, now: start + 1000 * second))
    }

    @Test("PATCH: a replaced bucket starts full, an unchanged one keeps its state, size 0 removes it")
    func update() {
        let limiter = Box(
            IORateLimiter(
                bandwidth: bucket(100, refillMilliseconds: 1000),
                ops: bucket(1, refillMilliseconds: 1000), now: start))
        #expect(limiter.consume(bytes: 100, now: start))
        limiter.apply(.init(bandwidth: .replace(bucket(500, refillMilliseconds: 1000))), now: start)
        #expect(limiter.bandwidth?.budget == 500)
        #expect(limiter.ops?.budget == 0)
        #expect(!limiter.consume(bytes: 1, now: start))
        limiter.apply(.init(ops: .replace(bucket(0, refillMilliseconds: 1000))), now: start)
        #expect(limiter.ops == nil)
        #expect(limiter.consume(bytes: 500, now: start))
        limiter.apply(.init(bandwidth: .replace(bucket(5, refillMilliseconds: 0))), now: start)
        #expect(limiter.isUnlimited)
    }

    @Test("seeded: 10,000 random requests; every wait named is exact, and grants stay within size + burst + refill")
    func seeded() {
        var random = SplitMix64(seed: 0x5EED_1A7E)
        for round in 0..<200 {
            let size = 1 + random.next() % (1 << 20)
            let refillMilliseconds = 1 + random.next() % 2000
            let burst = random.next() % 3 == 0 ? random.next() % (1 << 20) : 0
            let ops =
                random.next() % 2 == 0
                ? bucket(1 + random.next() % 100, refillMilliseconds: 1 + random.next() % 500) : nil
            var limiter = IORateLimiter(
                bandwidth: bucket(size, burst: burst, refillMilliseconds: refillMilliseconds),
                ops: ops, now: start)
            var now = start
            var granted: UInt64 = 0
            for _ in 0..<50 {
                now += random.next() % (refillMilliseconds * millisecond / 4 + 1)
                // Mostly within the bucket, sometimes well past it.
                let bytes = random.next() % 8 == 0 ? random.next() % (4 * size) : random.next() % (size / 2 + 1)
                if limiter.consume(bytes: bytes, now: now) {
                    granted += bytes
                } else {
                    let wait = limiter.waitNanoseconds(bytes: bytes, now: now)
                    var early = limiter, onTime = limiter
                    let tooEarly = wait > 0 && early.consume(bytes: bytes, now: now + wait - 1)
                    let served = onTime.consume(bytes: bytes, now: now + wait)
                    #expect(wait > 0 && !tooEarly && served, "round \(round): \(bytes) bytes, wait \(wait)")
                }
                guard let bandwidth = limiter.bandwidth, !bandwidth.inDebt(now: now) else { continue }
                let earned = (now - start) * size / (refillMilliseconds * millisecond)
                #expect(granted <= size + burst + earned, "round \(round): \(granted) granted by \(now - start) ns")
            }
        }
    }
}
