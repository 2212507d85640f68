public import Dispatcher
import Foundation
public import Store

extension CostEstimate {
    /// The cost of a run's messages as the store counts them (`chargeCounts`): a status's
    /// `pricing.type` `regular` is charged, `free_*` (and `billable: false`) is not; a message whose
    /// statuses carried no pricing (a queued one, or a receiver that dropped it) is priced at
    /// `category`, its template's, and counted in `unpriced`.
    public init(card: RateCard, counts: [ChargeCount], organization: String?, category: PricingCategory, markets: MarketMap = .builtIn) {
        self.init(card: card, markets: markets)
        for c in counts {
            if let type = c.type, type != "regular" {
                notCharged[type, default: 0] += c.messages
                continue
            }
            let charged = c.category.flatMap(PricingCategory.init(meta:)) ?? category
            if c.type == nil { unpriced += c.messages }
            var key = key(organization: organization, landlord: c.landlord, phone: c.prefix, category: charged)
            key.invoiceCurrency = c.currency
            add(key, count: c.messages)
        }
    }
}

extension CostEstimate {
    /// What Meta charged for a run's delivered messages so far (one landlord's, or all), from the
    /// statuses' pricing, on the rate card in force on the run's day; nil without a card. The
    /// report, `landlords.csv` and the API all read it here.
    /// `counts`: the delivered and read messages' counts when already at hand (`ReportSummary.charges`).
    public static func charged(
        run: RunRecord, store: any DispatchStore, landlord: String? = nil, counts: [ChargeCount]? = nil
    ) async throws -> CostEstimate? {
        guard let card = try await RateCards.inForce(on: localDay(run.createdAt), store: store).0 else { return nil }
        var counts = counts
        if counts == nil { counts = try await store.chargeCounts(run: run.name, states: [.delivered, .read]) }
        let charged = (counts ?? []).filter { landlord == nil || $0.landlord == landlord }
        return CostEstimate(card: card, counts: charged, organization: nil, category: .utility)
    }
}

extension RateCards {
    /// The card in force on `day`, from the store's imported cards and the built-in ones; and the
    /// imported ones. An imported card that no longer reads is skipped, said through `warn`.
    public static func inForce(
        on day: String, store: (any DispatchStore)?, warn: (String) -> Void = { _ in }
    ) async throws -> (RateCard?, [RateCard]) {
        var imported: [RateCard] = []
        for stored in try await store?.rateCards() ?? [] {
            do {
                imported.append(try RateCard.parse(stored.text, source: stored.source, effective: stored.effective))
            } catch {
                warn("the rate card imported from \(stored.source) cannot be read: \(error)")
            }
        }
        return (inForce(on: day, imported: imported), imported)
    }
}

/// `2026-12-02` for a Unix time, in the machine's time zone.
public func localDay(_ seconds: Double) -> String {
    let c = Calendar.current.dateComponents([.year, .month, .day], from: Date(timeIntervalSince1970: seconds))
    return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
}
