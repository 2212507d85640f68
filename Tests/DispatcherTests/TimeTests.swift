import Foundation
import Testing

@testable import Dispatcher

@Suite("Time as the project writes it")
struct TimeTests {
    @Test("ISO 8601 in UTC, as Foundation writes it, for every time a page or the API shows")
    func iso() {
        #expect(iso8601(nil) == nil)
        #expect(iso8601(0) == "1970-01-01T00:00:00Z")
        #expect(iso8601(1_772_323_200.9) == "2026-03-01T00:00:00Z")
        #expect(iso8601(-1) == "1969-12-31T23:59:59Z")
        #expect(iso8601(951_782_400) == "2000-02-29T00:00:00Z")
        for seconds in [0.0, 86_399, 1_709_164_800, 1_772_323_199, 4_102_444_800, 1_234_567_890.5] {
            #expect(iso8601(seconds) == Date(timeIntervalSince1970: seconds.rounded(.down)).formatted(.iso8601), "\(seconds)")
        }
        // A time no clock gives (a hostile webhook, a corrupt row) reads as the epoch, never a crash.
        #expect(iso8601(.nan) == "1970-01-01T00:00:00Z")
        #expect(iso8601(.infinity) == "1970-01-01T00:00:00Z")
        #expect(iso8601(1e300) == "1970-01-01T00:00:00Z")
    }
}
