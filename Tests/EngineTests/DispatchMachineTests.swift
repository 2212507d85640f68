import Store
import Testing
import WhatsApp

@testable import Engine

/// The send loop's rules in virtual time (`VirtualRun`): what is checked here is exact, and holds
/// however loaded the machine running the tests is.
@Suite("The send loop in virtual time")
struct DispatchMachineTests {
    @Test(
        "pacing: never more than the rate in any second, at least 98 % of it, even with slow commits",
        arguments: [(80.0, 10), (80.0, 60), (1000.0, 10), (1000.0, 60), (1000.0, 150)])
    func pacing(rate: Double, commitMilliseconds: Int) {
        let run = VirtualRun(tenants: Int(rate) * 10, rate: rate)
        run.writeLatency = .milliseconds(commitMilliseconds)
        #expect(run.run() == nil)
        #expect(run.requests.count == Int(rate) * 10)
        #expect(run.accepted.count == Int(rate) * 10)
        #expect(Set(run.requests.map(\.id)).count == run.requests.count, "a message sent twice")
        // The budget's cap: 1.5 % below the rate, or one message at low rates (985 at 1,000/s, 79 at 80/s).
        #expect(run.mostInOneSecond <= Int(rate) - max(1, Int((rate * 0.015).rounded())), "most in one second: \(run.mostInOneSecond)")
        // Where the sends ran dry, if they did: gaps of more than three intervals.
        let gaps = zip(run.requests, run.requests.dropFirst()).filter { $1.at - $0.at > .milliseconds(Int64(3000 / rate)) }
        #expect(
            run.achievedRate >= 0.98 * rate, "achieved \(run.achievedRate)/s; \(gaps.count) gaps, first at \(gaps.first?.0.at ?? .zero)")
        #expect(run.machine.mostInOneSecond == run.mostInOneSecond)
    }

    @Test("the first request goes alone; the rest wait until it is written out, not for its answer")
    func firstRequestAlone() {
        let run = VirtualRun(tenants: 20, rate: 1000)
        run.answerLatency = .milliseconds(500)
        run.run()
        let first = run.requests[0].at
        #expect(run.requests[1].at - first >= .milliseconds(1))
        #expect(run.requests[1].at - first < .milliseconds(50))
    }

    @Test("a tenant's invoices are 6 s apart (from when each request left); other tenants do not wait")
    func pairRule() {
        let tenant = "18095550101"
        let messages = [(tenant, "es"), (tenant, "es"), (tenant, "es")] + (0..<50).map { ("1809\(6_000_000 + $0)", "es") }
        let run = VirtualRun(messages, options: RunOptions(run: "pairs", manifest: "m.csv", rate: 80))
        #expect(run.run() == nil)
        let times = run.requests(to: tenant).map(\.at)
        #expect(times.count == 3)
        for (a, b) in zip(times, times.dropFirst()) {
            #expect(b - a >= .seconds(6), "gap \(b - a)")
            #expect(b - a <= .milliseconds(6_400), "gap \(b - a)")
        }
        let others = run.requests.filter { $0.phone != tenant }
        #expect(others.count == 50)
        #expect(others.last!.at <= .milliseconds(900), "the others finished at \(others.last!.at)")
    }

    @Test("throttling (130429) pauses every send for Meta's Retry-After and slows the run; nothing fails, nothing twice")
    func throttling() {
        let run = VirtualRun(tenants: 400, rate: 80)
        // Meta throttles what arrives in the run's second second, telling us to wait 2 s.
        var throttledAt: Duration? = nil
        run.meta = { request, _ in
            if request.at >= .seconds(1) && request.at < .milliseconds(1_100) {
                throttledAt = throttledAt ?? request.at
                return metaError(130429, retryAfter: 2)
            }
            return .accepted(wamid: "wamid.\(request.id)", waID: nil)
        }
        #expect(run.run() == nil)
        #expect(run.failedForGood.isEmpty)
        #expect(run.accepted.count == 400)
        let acceptedRequests = run.requests.filter { $0.at < .seconds(1) || $0.at >= .milliseconds(1_100) }
        #expect(Set(acceptedRequests.map(\.id)).count == acceptedRequests.count, "a message accepted twice")
        // Nothing leaves from the first throttled answer (80 ms after its request) for 2 s.
        let pauseStart = throttledAt! + run.answerLatency
        let inPause = run.requests.filter { $0.at >= pauseStart && $0.at < pauseStart + .seconds(2) }
        #expect(inPause.isEmpty, "\(inPause.count) requests during the pause")
        // The rest of the run goes 1.5 % slower: 78.8 × 0.985 / s.
        let after = run.requests.filter { $0.at >= pauseStart + .seconds(3) }
        let rate = Double(after.count - 1) / (after.last!.at - after.first!.at).seconds
        #expect(rate < 80 * 0.975 && rate > 80 * 0.96, "rate after the throttle \(rate)")
    }

    @Test("a transient error is retried after 1, 2, 4 s; after the last retry the message fails, the others go on")
    func backoff() {
        let run = VirtualRun(tenants: 30, rate: 80) { $0.breakerThreshold = 100 }
        run.meta = { request, _ in
            switch request.id {
            case "m1" where request.attempt <= 3: metaError(131000)
            case "m2": metaError(133004)
            default: .accepted(wamid: "wamid.\(request.id)", waID: nil)
            }
        }
        #expect(run.run() == nil)
        let first = run.requests(to: run.requests.first { $0.id == "m1" }!.phone).map(\.at)
        #expect(first.count == 4)
        // Each retry leaves its back-off after the answer (80 ms), plus the ledger write and a tick.
        for (i, delay) in [1, 2, 4].enumerated() {
            let waited = first[i + 1] - first[i] - run.answerLatency - .seconds(delay)
            #expect(waited >= .zero && waited <= .milliseconds(40), "retry \(i + 1) waited \(waited) more than \(delay) s")
        }
        #expect(run.accepted.contains("m1"))
        #expect(run.requests.filter { $0.id == "m2" }.count == 1 + run.options.maxTransientRetries)
        #expect(run.failedForGood == ["m2"])
        #expect(run.accepted.count == 29)
    }

    @Test("an outage opens the circuit breaker: one probe at a time, pauses of 2, 4, 8 s; no message fails")
    func outage() {
        let run = VirtualRun(tenants: 300, rate: 80)
        run.meta = { request, _ in
            request.at >= .milliseconds(500) && request.at < .seconds(12)
                ? metaError(131000) : .accepted(wamid: "wamid.\(request.id)", waID: nil)
        }
        #expect(run.run() == nil)
        #expect(run.failedForGood.isEmpty)
        #expect(run.accepted.count == 300)
        let during = run.requests.filter { $0.at >= .milliseconds(500) && $0.at < .seconds(12) }
        // The five failures that open the breaker, those already in flight, then single probes.
        #expect(during.count <= 20, "\(during.count) requests hit the outage (at 80/s it lasts 920 sends)")
        let probes = during.filter { $0.at >= .seconds(2) }.map(\.at)
        #expect(probes.count >= 2 && probes.count <= 3, "probes at \(probes)")
        for (a, b) in zip(probes, probes.dropFirst()) { #expect(b - a >= .seconds(4), "probes \(a) then \(b)") }
    }

    @Test("131057 (throughput upgrade) pauses the sender for a minute, then it probes and goes on")
    func throughputUpgrade() {
        let run = VirtualRun(tenants: 100, rate: 80)
        var answered = false
        run.meta = { request, _ in
            if request.at >= .milliseconds(300) && !answered {
                answered = true
                return metaError(131057)
            }
            return .accepted(wamid: "wamid.\(request.id)", waID: nil)
        }
        #expect(run.run() == nil)
        #expect(run.accepted.count == 100 && run.failedForGood.isEmpty)
        let gap = zip(run.requests, run.requests.dropFirst()).map { $1.at - $0.at }.max()!
        #expect(gap >= .seconds(59) && gap <= .seconds(61), "longest pause \(gap)")
    }

    @Test("the same request-shape error five times halts the run; the rest is never sent and stays queued")
    func halt() {
        let run = VirtualRun(tenants: 200, rate: 80)
        run.meta = { _, _ in metaError(132000) }
        guard case .halted(let error) = run.run() else {
            Issue.record("not halted")
            return
        }
        #expect(error.code == 132000)
        #expect(error.title.contains("5 requests in a row"))
        // Five and those in flight when the fifth answer came (80 ms of sends at 80/s), no more.
        #expect(run.requests.count <= 5 + 8, "\(run.requests.count) requests")
        #expect(run.accepted.isEmpty)
        // Committed but never sent: back in the queue (not failed).
        let notSent = run.finalOutcomes.values.filter { $0.rejection.map { !$0.final && $0.error.title.hasPrefix("not sent") } ?? false }
        #expect(!notSent.isEmpty)
        #expect(run.failedForGood.count == run.requests.count)
    }

    @Test("an account error (131042) halts at the first answer; nothing fails for it")
    func accountHalt() {
        let run = VirtualRun(tenants: 100, rate: 80)
        run.meta = { _, _ in metaError(131042) }
        guard case .halted(let error) = run.run() else {
            Issue.record("not halted")
            return
        }
        #expect(error.code == 131042)
        #expect(run.failedForGood.isEmpty)
        #expect(run.requests.count <= 8)
    }

    @Test("a template missing in one language (132001) stops that language only; the run ends halted naming it")
    func missingLanguage() {
        let messages = (0..<60).map { ("1809\(7_000_000 + $0)", $0 % 3 == 0 ? "fr" : "es") }
        let run = VirtualRun(messages, options: RunOptions(run: "langs", manifest: "m.csv", rate: 80))
        run.meta = { request, _ in
            request.language == "fr" ? metaError(132001) : .accepted(wamid: "wamid.\(request.id)", waID: nil)
        }
        guard case .halted(let error) = run.run() else {
            Issue.record("not halted")
            return
        }
        #expect(error.code == 132001 && error.title.contains("language fr"))
        #expect(run.accepted.count == 40)
        #expect(run.failedForGood.isEmpty)
        // Exactly: no French request leaves once the first refusal is read; those before it were in flight.
        let french = run.requests.filter { $0.language == "fr" }
        let refusalRead = french[0].at + run.answerLatency
        #expect(french.allSatisfy { $0.at < refusalRead }, "\(french.map(\.at)) after \(refusalRead)")
        #expect(french.count >= 2, "the requests in flight when the refusal came are the ones counted")
    }

    @Test("the loop holds a bounded part of the queue, whatever the run's size: it takes from the feed only as it sends")
    func boundedQueue() {
        let run = VirtualRun(tenants: 30_000, rate: 1000)
        run.feedPage = 2_500
        #expect(run.run() == nil)
        #expect(run.accepted.count == 30_000)
        // The queue's bound, a page over it, and the sends committed ahead (under a second's).
        #expect(run.mostHeld <= DispatchMachine.queueAhead + 2_500 + 1_000, "\(run.mostHeld) messages held by the loop")
        // Nor does it keep the ones it has sent (their request bodies): a million-message run kept them all.
        #expect(run.mostRetained <= DispatchMachine.queueAhead + 2_500 + 1_000, "\(run.mostRetained) messages kept by the loop")
    }

    @Test("a stop (SIGINT) sends nothing more; what was in flight is answered and recorded")
    func interrupted() {
        let run = VirtualRun(tenants: 1000, rate: 80)
        run.at(.seconds(2)) { $0.control.stop(.interrupted) }
        #expect(run.run() == .interrupted)
        #expect(run.requests.allSatisfy { $0.at <= .seconds(2) })
        #expect(run.requests.count >= 150 && run.requests.count <= 160)
        #expect(Set(run.accepted) == Set(run.requests.map(\.id)), "every request's answer is written")
    }

    @Test("a ledger write that fails halts the run: nothing is sent that could not be recorded")
    func ledgerFailure() {
        let run = VirtualRun(tenants: 500, rate: 80)
        run.failWrite = 10
        guard case .halted(let error) = run.run() else {
            Issue.record("not halted")
            return
        }
        #expect(error.title.contains("could not record a send"))
        let recorded = Set(run.attempts.keys)
        #expect(run.requests.allSatisfy { recorded.contains($0.id) }, "a request without its attempt in the ledger")
        #expect(run.requests.count < 100)
    }

    @Test("a ledger write cancelled with its task ends the run as interrupted, not as a database failure")
    func cancelledWrite() {
        let run = VirtualRun(tenants: 200, rate: 80)
        run.failWrite = 5
        run.writeError = CancellationError()
        #expect(run.run() == .interrupted)
    }

    @Test("a request that could not be sent or got no answer: retried, or unknown (never failed, never sent twice)")
    func unknownAnswers() {
        let run = VirtualRun(tenants: 10, rate: 80)
        run.meta = { request, _ in
            switch request.id {
            case "m1": .unknown("timed out after 30 s")
            case "m2" where request.attempt == 1: .notSent("connection refused")
            default: .accepted(wamid: "wamid.\(request.id)", waID: nil)
            }
        }
        #expect(run.run() == nil)
        #expect(run.requests.filter { $0.id == "m1" }.count == 1)
        #expect(run.requests.filter { $0.id == "m2" }.count == 2)
        #expect(run.finalOutcomes["m1"]?.isUnknown == true, "m1 is \(String(describing: run.finalOutcomes["m1"]))")
        #expect(run.accepted.count == 9 && run.failedForGood.isEmpty)
    }

    @Test("a message another process began after this run read it is not sent here; the rest go, the run ends normally")
    func takenElsewhere() {
        let run = VirtualRun(tenants: 50, rate: 80)
        run.takenElsewhere = ["m3", "m17", "m50"]
        #expect(run.run() == nil)
        #expect(run.requests.count == 47)
        #expect(run.requests.allSatisfy { !run.takenElsewhere.contains($0.id) })
        #expect(run.accepted.count == 47)
        #expect(run.machine.notQueued == 3)
    }

    @Test("a tenant's next invoice does not wait the pair interval for one that was not sent because it was no longer queued")
    func notQueuedKeepsNoPair() {
        let run = VirtualRun(
            [("18095550100", "es"), ("18095550100", "es"), ("18095550200", "es")],
            options: RunOptions(run: "v", manifest: "v.csv", rate: 80))
        run.takenElsewhere = ["m1"]
        #expect(run.run() == nil)
        #expect(run.requests.map(\.id).sorted() == ["m2", "m3"])
        let second = run.requests.first { $0.id == "m2" }
        #expect(second.map { $0.at < .seconds(1) } == true, "m2 left at \(String(describing: second?.at))")
    }
}
