/// The rate cards this build carries (docs/pricing.md), and the one in force on a day.
public enum RateCards {
    /// Parsed once; a test holds every built-in file parseable.
    public static let builtIn: [RateCard] = [
        ("meta-usd-2026-04-01.csv", PackageResources.meta_usd_2026_04_01_csv),
        ("meta-usd-2026-10-01.csv", PackageResources.meta_usd_2026_10_01_csv),
    ].compactMap { name, bytes in
        try? RateCard.parse(String(decoding: bytes, as: UTF8.self), source: "built in: \(name)")
    }

    /// The card in force on `day` (`YYYY-MM-DD`): the newest effective on or before it, the files
    /// of that date merged (Meta's list rates and volume tiers; an imported file's markets over the
    /// built-in card's).
    /// Before every card's date, the oldest.
    public static func inForce(on day: String, imported: [RateCard] = [], currency: String = "USD") -> RateCard? {
        let all = (imported + builtIn).filter { $0.currency == currency }
        let dates = Set(all.map(\.effective)).sorted()
        guard let date = dates.last(where: { $0 <= day }) ?? dates.first else { return nil }
        // Imported first: where they give a rate (or tiers) for a market, theirs counts. Markets
        // none of that date's files gives come from the cards before it, newest first.
        let chosen = all.filter { $0.effective == date }
        let older = all.filter { $0.effective < date }.sorted { $0.effective > $1.effective }
        let card = chosen.dropFirst().reduce(chosen[0]) { $0.merged(with: $1) }
        return older.reduce(card) { $0.filling(from: $1) }
    }
}

/// What a run will cost (or cost): messages by organization, landlord, market and category,
/// priced on one rate card. Volume tiers are applied per market and category over the run's own
/// messages, as if the month began with this run (earlier sends of the month would lower it:
/// the figure is an upper bound where tiers apply).
public struct CostEstimate: Sendable {
    public struct Key: Hashable, Sendable, Comparable {
        public var organization: String?
        public var landlord: String?
        public var market: String
        public var category: PricingCategory
        /// The invoices' currency, when lines are kept apart by it (landlords.csv); nil otherwise.
        public var invoiceCurrency: String?

        public init(organization: String?, landlord: String?, market: String, category: PricingCategory) {
            self.organization = organization
            self.landlord = landlord
            self.market = market
            self.category = category
        }

        public static func < (a: Key, b: Key) -> Bool {
            (a.organization ?? "", a.landlord ?? "", a.invoiceCurrency ?? "", a.market, a.category)
                < (b.organization ?? "", b.landlord ?? "", b.invoiceCurrency ?? "", b.market, b.category)
        }
    }

    public struct Line: Sendable, Equatable {
        public var key: Key
        public var messages: Int
        /// In millionths of the card's currency.
        public var cost: Int64
        /// The list rate used (before tiers), millionths.
        public var rate: Int64
    }

    public let card: RateCard
    public let markets: MarketMap
    public private(set) var counts: [Key: Int] = [:]
    /// Messages the estimate does not charge, by reason (`free_customer_service`, "no rate").
    public var notCharged: [String: Int] = [:]
    /// Messages priced without a `pricing` of their own (at their template's category).
    public var unpriced = 0

    public init(card: RateCard, markets: MarketMap = .builtIn) {
        self.card = card
        self.markets = markets
    }

    /// Markets found, by the start of the number (`MarketMap.start`): a month's numbers share a few
    /// dozen, and finding one takes several lookups of strings (3 % of a million-row preview).
    private var marketsByStart: [Int: String] = [:]

    public mutating func key(organization: String?, landlord: String?, phone: String, category: PricingCategory) -> Key {
        let start = markets.start(of: phone), market: String
        if let start, let known = marketsByStart[start] {
            market = known
        } else {
            market = markets.market(of: phone, on: card)
            if let start { marketsByStart[start] = market }
        }
        return Key(organization: organization, landlord: landlord, market: market, category: category)
    }

    public mutating func add(_ key: Key, count: Int = 1) {
        counts[key, default: 0] += count
    }

    public mutating func remove(_ key: Key, count: Int = 1) {
        guard let n = counts[key] else { return }
        counts[key] = n > count ? n - count : nil
    }

    public var messages: Int { counts.values.reduce(0, +) }

    /// Messages whose market has no rate for their category on this card: priced at nothing,
    /// and said (`--max-cost` refuses a run with any).
    public var withoutRate: Int {
        counts.filter { card.rate(market: $0.key.market, category: $0.key.category) == nil }.values.reduce(0, +)
    }

    /// Every line, priced: tiers over each market and category's total, shared out in proportion.
    public func lines() -> [Line] {
        var totals: [String: [PricingCategory: Int]] = [:]
        for (key, n) in counts { totals[key.market, default: [:]][key.category, default: 0] += n }
        var result: [Line] = []
        // Each market and category's cost handed out line by line, the rounding left to the last.
        var left: [String: [PricingCategory: (cost: Int64, messages: Int)]] = [:]
        for (market, byCategory) in totals {
            for (category, n) in byCategory {
                left[market, default: [:]][category] = (card.cost(market: market, category: category, count: n) ?? 0, n)
            }
        }
        for key in counts.keys.sorted() {
            let n = counts[key]!
            let pool = left[key.market]![key.category]!
            let share = pool.messages == n ? pool.cost : pool.cost * Int64(n) / Int64(pool.messages)
            left[key.market]![key.category] = (pool.cost - share, pool.messages - n)
            result.append(Line(key: key, messages: n, cost: share, rate: card.rate(market: key.market, category: key.category) ?? 0))
        }
        return result
    }

    public var total: Int64 { lines().reduce(0) { $0 + $1.cost } }

    /// Lines added up by one part of the key (`\.landlord`, `\.market`), largest cost first.
    public func totals<T: Hashable>(by part: (Key) -> T) -> [(T, messages: Int, cost: Int64)] {
        var sums: [T: (Int, Int64)] = [:]
        var order: [T] = []
        for line in lines() {
            let k = part(line.key)
            if sums[k] == nil { order.append(k) }
            sums[k, default: (0, 0)].0 += line.messages
            sums[k, default: (0, 0)].1 += line.cost
        }
        return order.map { ($0, messages: sums[$0]!.0, cost: sums[$0]!.1) }.sorted { $0.cost > $1.cost }
    }

    /// `US$0.2599`: four decimals, as Meta prints its rates.
    public static func format(_ micros: Int64, currency: String) -> String {
        let sign = micros < 0 ? "-" : ""
        let m = abs(micros)
        let tenThousandths = (m + 50) / 100
        let whole = tenThousandths / 10_000
        let fraction = String(tenThousandths % 10_000)
        let symbol = currency == "USD" ? "US$" : "\(currency) "
        return "\(sign)\(symbol)\(whole).\(String(repeating: "0", count: 4 - fraction.count))\(fraction)"
    }

    /// `0.2599`, for CSV and JSON.
    public static func decimal(_ micros: Int64) -> String {
        let whole = micros / 1_000_000
        let fraction = String(abs(micros) % 1_000_000)
        return "\(micros < 0 && whole == 0 ? "-" : "")\(whole).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }
}
