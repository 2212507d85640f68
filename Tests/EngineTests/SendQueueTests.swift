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
        #expect(queue.nextWake == t0 + .seconds(6))
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
}
