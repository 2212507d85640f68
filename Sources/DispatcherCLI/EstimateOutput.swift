import Dispatcher
import Foundation

/// An estimate as the console and `--json` show it (preview, send).
struct EstimateOutput {
    let estimate: CostEstimate

    /// Lines for the console: the total with the card's date, then per organization (when several),
    /// landlord and market, and what is not charged.
    func lines(header: String = "Estimated cost") -> [String] {
        let card = estimate.card
        let currency = card.currency
        var out = [
            "\(header): \(CostEstimate.format(estimate.total, currency: currency)) for \(estimate.messages) messages"
                + " (estimate, Meta's rate card effective \(card.effective); \(card.source))"
        ]
        let organizations = estimate.totals { $0.organization }
        if organizations.count > 1 {
            for (org, n, cost) in organizations {
                out.append("    organization \(org ?? "—"): \(CostEstimate.format(cost, currency: currency)) for \(n)")
            }
        }
        for (landlord, n, cost) in estimate.totals(by: { $0.landlord }).prefix(20) {
            out.append("    landlord \(landlord ?? "—"): \(CostEstimate.format(cost, currency: currency)) for \(n)")
        }
        for line in estimate.lines().reduce(
            into: [String: (Int, Int64, Int64, PricingCategory)](),
            { sums, l in
                let k = "\(l.key.market)|\(l.key.category.rawValue)"
                let old = sums[k] ?? (0, 0, l.rate, l.key.category)
                sums[k] = (old.0 + l.messages, old.1 + l.cost, l.rate, l.key.category)
            }
        ).sorted(by: { $0.value.1 > $1.value.1 }) {
            let market = line.key.split(separator: "|")[0]
            let (n, cost, rate, category) = line.value
            let tiered = card.tiers[String(market)]?[category] != nil
            out.append(
                "    market \(market), \(category.rawValue): \(n) × \(CostEstimate.format(rate, currency: currency))"
                    + " = \(CostEstimate.format(cost, currency: currency))"
                    + (tiered ? " (volume tiers from the month's first message)" : " (list rate)"))
        }
        if estimate.withoutRate > 0 {
            out.append("    NO RATE on this card for \(estimate.withoutRate) messages: counted at nothing (import a complete card)")
        }
        out.append(
            "    not charged: messages not delivered, and utility messages inside a customer-service window"
                + " (Meta's statuses say which, after the run)")
        return out
    }

    var json: EstimateJSON {
        EstimateJSON(
            currency: estimate.card.currency, total: CostEstimate.decimal(estimate.total), messages: estimate.messages,
            rate_card_effective: estimate.card.effective, rate_card_source: estimate.card.source, is_estimate: true,
            lines: estimate.lines().map {
                .init(
                    organization: $0.key.organization, landlord: $0.key.landlord, market: $0.key.market,
                    category: $0.key.category.rawValue, messages: $0.messages, rate: CostEstimate.decimal($0.rate),
                    cost: CostEstimate.decimal($0.cost))
            })
    }
}

struct EstimateJSON: Encodable {
    struct Line: Encodable {
        var organization, landlord: String?
        var market, category: String
        var messages: Int
        var rate, cost: String
    }
    var currency, total: String
    var messages: Int
    var rate_card_effective, rate_card_source: String
    var is_estimate: Bool
    var lines: [Line]
}
