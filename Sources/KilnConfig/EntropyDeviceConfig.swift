import KilnJSON

/// `entropy` (API: PUT /entropy): the virtio-rng device, optionally rate limited.
public struct EntropyDeviceConfig: Equatable, Sendable {
    public var rateLimiter: RateLimiterConfig?

    public init(rateLimiter: RateLimiterConfig? = nil) { self.rateLimiter = rateLimiter }

    public init(json reader: inout JSONObjectReader) throws {
        self.init(rateLimiter: try reader.rateLimiter("rate_limiter"))
        try reader.finish()
    }
}
