import Foundation
import StoreTesting
import Testing

@testable import Store

@Suite("Store: prices and email fallbacks (SQLite and PostgreSQL)")
struct PricesAndFallbacksTests {
    /// Three delivered messages with the pricing Meta gives (charged, free in a customer-service
    /// window, none at all), one only sent, one failed not on WhatsApp.
    func run(_ store: any DispatchStore) async throws -> [String] {
        let ids = try await seed(
            store, phones: ["18095550101", "18095550102", "34600111222", "18095550104", "18095550105"], landlord: "Caribe")
        for (i, id) in ids.enumerated() {
            try await store.recordAccepted(
                messageID: id, attempt: try await store.beginAttempt(messageID: id, at: 1), wamid: "wamid.\(i)", at: 2)
        }
        func priced(_ s: StatusUpdate, _ category: String?, _ type: String?) -> StatusUpdate {
            var s = s
            s.pricingCategory = category
            s.pricingType = type
            return s
        }
        _ = try await ingest(
            store,
            [
                priced(status("wamid.0", "sent", at: 10), "utility", "regular"),
                priced(status("wamid.0", "delivered", at: 11), "utility", "regular"),
                priced(status("wamid.1", "delivered", at: 11), "utility", "free_customer_service"),
                status("wamid.2", "read", at: 12),
                priced(status("wamid.3", "sent", at: 10), "utility", "regular"),
                status("wamid.4", "failed", at: 10, error: 131026),
            ])
        return ids
    }

    @Test("a run's delivered messages come back by landlord, number prefix and the pricing their statuses carried", arguments: engines)
    func charges(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        _ = try await run(store)
        let counts = try await store.chargeCounts(run: "march", states: [.delivered, .read])
        #expect(
            counts.sorted { ($0.prefix, $0.type ?? "") < ($1.prefix, $1.type ?? "") } == [
                ChargeCount(
                    landlord: "Caribe", currency: "DOP", prefix: "1809", category: "utility", type: "free_customer_service", messages: 1),
                ChargeCount(landlord: "Caribe", currency: "DOP", prefix: "1809", category: "utility", type: "regular", messages: 1),
                ChargeCount(landlord: "Caribe", currency: "DOP", prefix: "3460", category: nil, type: nil, messages: 1),
            ])
        // Only sent, not delivered: not charged. Queued ones, for an estimate: none left.
        #expect(try await store.chargeCounts(run: "march", states: [.queued]).isEmpty)
        #expect(try await store.chargeCounts(run: "march", states: [.sent]).map(\.messages) == [1])
        // The report page counts them with its other figures (SQLite in its own pass, PostgreSQL in a query beside the
        // others): the same figures, and one landlord's only when asked for one.
        let together = try await store.reportSummary(run: "march", landlord: nil, samples: 5).charges
        #expect(
            try #require(together).sorted { ($0.prefix, $0.type ?? "") < ($1.prefix, $1.type ?? "") }
                == counts.sorted { ($0.prefix, $0.type ?? "") < ($1.prefix, $1.type ?? "") })
        #expect(try await store.reportSummary(run: "march", landlord: "Nobody", samples: 5).charges == [])
    }

    @Test("a status that came before its message was known still says what the message cost", arguments: engines)
    func chargesOfEarlyStatuses(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        let id = try await seed(store, phones: ["18095550101"])[0]
        let attempt = try await store.beginAttempt(messageID: id, at: 1)
        // Meta's status overtakes the answer to the send: kept unmatched, applied when the wamid is known.
        var early = status("wamid.E", "delivered", at: 10)
        early.pricingCategory = "utility"
        early.pricingType = "regular"
        #expect(try await ingest(store, [early]).unmatched == 1)
        try await store.recordAccepted(messageID: id, attempt: attempt, wamid: "wamid.E", at: 2)
        #expect(try await store.message(id)?.state == .delivered)
        #expect(
            try await store.chargeCounts(run: "march", states: [.delivered]) == [
                ChargeCount(landlord: "Caribe", currency: "DOP", prefix: "1809", category: "utility", type: "regular", messages: 1)
            ])
    }

    @Test("rate cards are kept as imported, newest first", arguments: engines)
    func rateCards(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        for date in ["2026-04-01", "2027-01-01"] {
            try await store.saveRateCard(
                StoredRateCard(effective: date, currency: "USD", source: "\(date).csv", importedAt: 5, text: "Market,…"))
        }
        #expect(try await store.rateCards().map(\.effective) == ["2027-01-01", "2026-04-01"])
        #expect(try await store.rateCards().first?.text == "Market,…")
    }

    @Test(
        "fallback candidates: invoices WhatsApp could not carry; a claim is taken once, and again only after a failure", arguments: engines)
    func fallbacks(engine: StoreEngine) async throws {
        let store = try await makeStore(engine)
        _ = try await run(store)  // INV-1 has delivered messages: not a candidate
        let unreachable = try await seed(store, invoice: "INV-2", phones: ["18095550201"])[0]
        try await store.recordAccepted(
            messageID: unreachable, attempt: try await store.beginAttempt(messageID: unreachable, at: 1), wamid: "wamid.U", at: 2)
        _ = try await ingest(store, [status("wamid.U", "failed", at: 10, error: 131026)])
        let stillGoing = try await seed(store, invoice: "INV-3", phones: ["18095550301"])[0]  // queued: WhatsApp may still carry it
        _ = stillGoing
        let otherFailure = try await seed(store, invoice: "INV-4", phones: ["18095550401"])[0]
        try await store.recordRejected(
            messageID: otherFailure, attempt: try await store.beginAttempt(messageID: otherFailure, at: 1),
            error: SendError(code: 132000, title: "params"), final: true, at: 2)

        // One number not on WhatsApp, the other held back for 24 h (131049): a retry may still
        // carry it, so no email.
        let mixed = try await seed(store, invoice: "INV-5", phones: ["18095550501", "18095550502"])
        for (i, id) in mixed.enumerated() {
            try await store.recordAccepted(
                messageID: id, attempt: try await store.beginAttempt(messageID: id, at: 1), wamid: "wamid.M\(i)", at: 2)
        }
        _ = try await ingest(
            store, [status("wamid.M0", "failed", at: 10, error: 131026), status("wamid.M1", "failed", at: 10, error: 131049)])

        let candidates = try await store.fallbackCandidates(run: "march")
        #expect(candidates.map(\.invoice.invoiceID) == ["INV-2"])
        #expect(candidates.first?.errorCode == 131026)
        #expect(candidates.first?.fallback == nil)

        #expect(try await store.claimFallback(run: "march", invoiceID: "INV-2", via: "smtp", address: "a@example.com", at: 20))
        #expect(try await !store.claimFallback(run: "march", invoiceID: "INV-2", via: "smtp", address: "a@example.com", at: 21))
        // Only the claim's own maker finishes it.
        #expect(try await !store.finishFallback(run: "march", invoiceID: "INV-2", claimedAt: 21, state: .sent, detail: nil, at: 22))
        #expect(try await store.finishFallback(run: "march", invoiceID: "INV-2", claimedAt: 20, state: .failed, detail: "mta down", at: 22))
        #expect(try await store.fallbacks(run: "march")["INV-2"]?.state == .failed)
        #expect(try await store.claimFallback(run: "march", invoiceID: "INV-2", via: "smtp", address: "a@example.com", at: 23))
        #expect(try await store.finishFallback(run: "march", invoiceID: "INV-2", claimedAt: 23, state: .sent, detail: nil, at: 24))
        #expect(try await !store.claimFallback(run: "march", invoiceID: "INV-2", via: "smtp", address: "a@example.com", at: 25))
        // No address is written only where nothing was sent; `--again` only over what was read.
        #expect(
            try await !store.markFallback(
                run: "march", invoiceID: "INV-2", via: "smtp", state: .noAddress, detail: nil, expecting: nil, at: 26))
        let stale = FallbackRecord(
            run: "march", invoiceID: "INV-2", via: "smtp", address: nil, state: .sending, detail: nil, startedAt: 23, finishedAt: nil)
        #expect(
            try await !store.markFallback(
                run: "march", invoiceID: "INV-2", via: "smtp", state: .failed, detail: nil, expecting: stale, at: 26))
        let record = try #require(try await store.fallbackCandidates(run: "march").first?.fallback)
        #expect(record.state == .sent)
        #expect(record.startedAt == 23)
        #expect(record.finishedAt == 24)
        #expect(record.address == "a@example.com")
    }
}
