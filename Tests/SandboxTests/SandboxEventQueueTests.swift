import Foundation
import Testing

@testable import Sandbox

/// The sandbox's queue of scheduled webhooks: what a delivery takes is what is due, earliest
/// first, events due at the same time in the order they were scheduled, whatever the order they
/// were scheduled in.
struct SandboxEventQueueTests {
    func event(_ due: Double, _ id: String) -> SandboxState.Event {
        SandboxState.Event(due: due, value: .string(id), isStatus: true)
    }

    func ids(_ events: [SandboxState.Event]) -> [String] {
        events.map { if case .string(let id) = $0.value { id } else { "?" } }
    }

    @Test("takeDue: only what is due, earliest first, ties in scheduling order, at most the limit a take")
    func dueInOrder() async throws {
        let state = SandboxState()
        await state.schedule([event(5, "e"), event(1, "a1"), event(3, "c"), event(1, "a2"), event(2, "b"), event(1, "a3")])
        #expect(ids(await state.takeDue(now: 0.5, limit: 10)) == [])
        #expect(ids(await state.takeDue(now: 2, limit: 2)) == ["a1", "a2"])
        #expect(ids(await state.takeDue(now: 2, limit: 10)) == ["a3", "b"])
        // Put back after a failed delivery: due again later, behind what is due before it.
        await state.putBack([event(2, "b")], retryAt: 4)
        #expect(ids(await state.takeDue(now: 10, limit: 10)) == ["c", "b", "e"])
        #expect(await state.pendingEvents == 0)
    }

    @Test("a thousand events scheduled in random order come out sorted by due time")
    func manyRandom() async throws {
        let state = SandboxState()
        var random = SystemRandomNumberGenerator()
        let dues = (0..<1000).map { _ in Double(Int.random(in: 0..<100, using: &random)) }
        await state.schedule(dues.enumerated().map { event($0.element, "\($0.offset)") })
        var taken: [SandboxState.Event] = []
        while case let batch = await state.takeDue(now: 1000, limit: 37), !batch.isEmpty { taken += batch }
        #expect(taken.count == 1000)
        #expect(taken.map(\.due) == dues.sorted())
        // Ties keep the order they were scheduled in.
        for (a, b) in zip(taken, taken.dropFirst()) where a.due == b.due {
            #expect(Int(ids([a])[0])! < Int(ids([b])[0])!)
        }
    }

    @Test("the throughput window: the limit in any one second, room again as the oldest leave it")
    func throughputWindow() async throws {
        let state = SandboxState()
        for i in 0..<10 { #expect(await state.admitThroughput(phoneNumberID: "A", limit: 10, now: 100 + Double(i) * 0.01)) }
        #expect(await state.admitThroughput(phoneNumberID: "A", limit: 10, now: 100.5) == false)
        // Another number has its own second.
        #expect(await state.admitThroughput(phoneNumberID: "B", limit: 10, now: 100.5))
        // A second after the first: one has left the window.
        #expect(await state.admitThroughput(phoneNumberID: "A", limit: 10, now: 100.001 + 1))
        #expect(await state.admitThroughput(phoneNumberID: "A", limit: 10, now: 100.002 + 1) == false)
    }
}

/// A scenario file a person wrote wrong is refused with what to fix, not a decoder's dump.
struct ScenarioFileTests {
    func load(_ json: String) throws -> Scenario {
        let path = NSTemporaryDirectory() + "scenario-\(UUID().uuidString).json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try Scenario.load(path: path)
    }

    @Test("an unknown outcome names the place and lists the outcomes; broken JSON says where it stopped")
    func refusals() throws {
        do {
            _ = try load(#"{"rules": [{"match": "suffix:1", "outcome": "nonsense"}]}"#)
            Issue.record("accepted an unknown outcome")
        } catch let error as SandboxError {
            #expect("\(error)".contains("nonsense at rules.[0].outcome; the outcomes are delivered_read, delivered,"), "\(error)")
            #expect(!"\(error)".contains("DecodingError"), "\(error)")
        }
        do {
            _ = try load(#"{"rules": [{"match": "suffix:1", "outcome": }]}"#)
            Issue.record("accepted broken JSON")
        } catch let error as SandboxError {
            #expect("\(error)".contains("not valid JSON (Invalid value around character"), "\(error)")
        }
        #expect(try load(#"{"rules": [{"match": "suffix:1", "outcome": "undeliverable"}]}"#).outcome(for: "18095550101") == .undeliverable)
    }
}
