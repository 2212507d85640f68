import NIOCore
import Testing

@testable import Engine

@Suite("Send queue: the pair rule per tenant")
struct SendQueueTests {
    func item(_ id: String, _ phone: String) -> Outgoing { Outgoing(id: id, phone: phone, body: ByteBuffer(string: "{}")) }

    @Test("a tenant's second message waits out the pair interval, others go first; what is past is forgotten")
    func pairRule() {
        let t0 = ContinuousClock.now
        var queue = SendQueue(pairSpacing: .seconds(6), margin: .zero)
        queue.append([item("a1", "A"), item("a2", "A"), item("b1", "B")])
        #expect(queue.pop(now: t0)?.id == "a1")
        #expect(queue.pop(now: t0)?.id == "b1")
        #expect(queue.pop(now: t0) == nil)
        #expect(queue.nextWake() == t0 + .seconds(6))
        #expect(queue.pop(now: t0 + .seconds(5)) == nil)
        #expect(queue.remembered == 2)
        // Forgetting before the interval is over changes nothing.
        queue.forgetPast(t0 + .seconds(5))
        #expect(queue.remembered == 2)
        #expect(queue.pop(now: t0 + .seconds(6))?.id == "a2")
        // A million numbers would be a million entries: past their interval, none is kept.
        queue.forgetPast(t0 + .seconds(13))
        #expect(queue.remembered == 0)
        queue.append([item("a3", "A")])
        #expect(queue.pop(now: t0 + .seconds(13))?.id == "a3")
    }

    @Test("thousands held for one number: the others go at once and in order, that number's one per interval, none lost or repeated")
    func manyForOneNumber() {
        let t0 = ContinuousClock.now
        var queue = SendQueue(pairSpacing: .seconds(6), margin: .zero)
        var items: [Outgoing] = []
        for i in 0..<3_000 {
            items.append(item("a\(i)", "A"))
            items.append(item("t\(i)", "T\(i)"))
        }
        queue.append(items)
        var popped: [String] = []
        while let next = queue.pop(now: t0) { popped.append(next.id) }
        #expect(popped == ["a0"] + (0..<3_000).map { "t\($0)" })
        #expect(queue.count == 2_999)
        // Said once, so that the run can warn that this number keeps it going for hours.
        #expect(queue.takeCrowded().map(\.phone) == ["A"])
        #expect(queue.takeCrowded().isEmpty)
        #expect(queue.nextWake() == t0 + .seconds(6))
        for n in 1...3 {
            let now = t0 + .seconds(6 * n)
            #expect(queue.pop(now: now - .milliseconds(1)) == nil)
            #expect(queue.pop(now: now)?.id == "a\(n)")
            #expect(queue.pop(now: now) == nil)
            #expect(queue.nextWake() == now + .seconds(6))
        }
        #expect(queue.count == 2_996)
        // The interval counts from when a request actually left: later than the queue let it go.
        let now = t0 + .seconds(24)
        #expect(queue.pop(now: now, lastSent: { $0 == "A" ? now - .seconds(1) : nil }) == nil)
        #expect(queue.nextWake() == now + .seconds(5))
        #expect(queue.pop(now: now + .seconds(5))?.id == "a4")
    }

    @Test("a retry waits its back-off, in time order with the pair rule's; a number released lets its held messages go at once")
    func retriesAndRelease() {
        let t0 = ContinuousClock.now
        var queue = SendQueue(pairSpacing: .seconds(6), margin: .zero)
        queue.append([item("a1", "A"), item("a2", "A"), item("b1", "B")])
        #expect(queue.pop(now: t0)?.id == "a1")
        #expect(queue.pop(now: t0)?.id == "b1")
        #expect(queue.pop(now: t0) == nil)  // a2 held until t0 + 6 s
        // b1 comes back for a retry in 2 s: it still waits out B's interval.
        queue.hold(item("b1", "B"), for: .seconds(2), now: t0)
        #expect(queue.nextWake() == t0 + .seconds(6))
        #expect(queue.pop(now: t0 + .seconds(3)) == nil)
        // a1 was refused before reaching the tenant: A's interval no longer holds a2.
        queue.release("A", now: t0 + .seconds(3))
        #expect(queue.nextWake() == t0 + .seconds(3))
        #expect(queue.pop(now: t0 + .seconds(3))?.id == "a2")
        #expect(queue.pop(now: t0 + .seconds(3)) == nil)
        // B's retry goes once B's interval is over, and then the queue is empty.
        #expect(queue.pop(now: t0 + .seconds(6))?.id == "b1")
        #expect(queue.isEmpty)
        #expect(queue.nextWake() == nil)
    }
}
