import Foundation

/// Meta's price per delivered template message, by market and category, in one currency: the
/// rate card Meta publishes as CSV (docs/pricing.md). Rates are kept in millionths of the
/// currency's unit (Meta prints four decimals), so sums are exact.
public struct RateCard: Sendable, Equatable {
    /// The first day the card applies, `YYYY-MM-DD`.
    public var effective: String
    public var currency: String
    /// Where the card came from: a file name or Meta's page.
    public var source: String
    /// Market (as Meta names it: `Mexico`, `Rest of Latin America`) → category → rate.
    public var rates: [String: [PricingCategory: Int64]]
    /// Volume tiers per market and category (utility and authentication), lowest first; empty
    /// when the card gives none, and then every message is priced at the list rate.
    public var tiers: [String: [PricingCategory: [Tier]]]

    /// From the `from`-th message of the month (counted per market and category), `rate`.
    public struct Tier: Sendable, Equatable {
        public var from: Int
        public var rate: Int64

        public init(from: Int, rate: Int64) {
            self.from = from
            self.rate = rate
        }
    }

    public init(
        effective: String, currency: String, source: String, rates: [String: [PricingCategory: Int64]],
        tiers: [String: [PricingCategory: [Tier]]] = [:]
    ) {
        self.effective = effective
        self.currency = currency
        self.source = source
        self.rates = rates
        self.tiers = tiers
    }

    public var markets: [String] { rates.keys.sorted() }

    /// The list rate (the first tier's), or nil when the card has none for that category.
    public func rate(market: String, category: PricingCategory) -> Int64? {
        rates[market]?[category] ?? rates[Market.other]?[category]
    }

    /// What `count` messages cost when `before` were delivered earlier in the month in the same
    /// market and category: the list rate, or Meta's tiers where the card has them.
    public func cost(market: String, category: PricingCategory, count: Int, before: Int = 0) -> Int64? {
        let market = rates[market] == nil ? Market.other : market
        guard let list = rate(market: market, category: category) else { return nil }
        guard let tiers = tiers[market]?[category], !tiers.isEmpty else { return list * Int64(count) }
        var total: Int64 = 0
        var n = before + 1
        let last = before + count
        while n <= last {
            let index = tiers.lastIndex { $0.from <= n } ?? 0
            let end = index + 1 < tiers.count ? min(last, tiers[index + 1].from - 1) : last
            total += tiers[index].rate * Int64(end - n + 1)
            n = end + 1
        }
        return total
    }
}

/// Meta's template categories, as its rate card's columns and `pricing.category` name them.
public enum PricingCategory: String, Sendable, CaseIterable, Codable, Comparable {
    case marketing, utility, authentication
    case authenticationInternational = "authentication_international"
    case service

    /// From a template's category (`UTILITY`) or a status's `pricing.category`
    /// (`marketing_lite` is marketing; `referral_conversion` and the like are not charged).
    /// Letters only are compared: `authentication-international` (webhooks),
    /// `AUTHENTICATION_INTERNATIONAL` (analytics) and a card's "Authentication-\nInternational" alike.
    public init?(meta: String) {
        switch meta.lowercased().filter(\.isLetter) {
        case "marketing", "marketinglite": self = .marketing
        case "utility": self = .utility
        case "authentication": self = .authentication
        case "authenticationinternational": self = .authenticationInternational
        case "service": self = .service
        default: return nil
        }
    }

    public static func < (a: Self, b: Self) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What is wrong with a rate card file, with the line.
public struct RateCardError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

extension RateCard {
    /// Reads Meta's rate card CSV as published: notes above the table (the first naming the
    /// currency and the date it is effective from: "Cost per message in USD …, effective April 1,
    /// 2026"), a header row starting `Market` with a column per category, rates as decimals
    /// (`0.0250`, `$0.0250`), `n/a` where a market has none. A volume-tier table may follow (its
    /// header `Market`, `Category`, `From`, `Rate`; see docs/pricing.md).
    /// `effective` overrides the date found in the notes (and is needed when there is none).
    public static func parse(_ text: String, source: String, effective: String? = nil) throws -> RateCard {
        var noteDate: String? = nil
        var noteCurrency: String? = nil
        var rates: [String: [PricingCategory: Int64]] = [:]
        var tiers: [String: [PricingCategory: [Tier]]] = [:]
        var listColumns: [Int: PricingCategory]? = nil
        var currencyColumn: Int? = nil
        var currencies = Set<String>()
        // A tier table: per category, the column of its "From" and of its "Rate".
        var tierColumns: [(category: PricingCategory, from: Int, rate: Int)]? = nil
        var tierMarket: String? = nil
        // The last row naming categories over columns (the tier table's top header).
        var labels: [(column: Int, category: PricingCategory)] = []
        for (line, cells) in try CSVRecords.split(text) {
            let trimmed = cells.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            let names = trimmed.map { $0.lowercased().filter { $0.isLetter } }
            let first = trimmed.first ?? ""
            // "Market", or the tier table's "Market (per rate card)"; not a note starting "Marketing rates…".
            if names.first == "market" || names.first?.hasPrefix("marketper") == true {
                if names.contains("from") {
                    var columns: [(PricingCategory, Int, Int)] = []
                    for (j, name) in names.enumerated() where name == "from" {
                        guard let label = labels.last(where: { $0.column <= j }),
                            let rate = names.indices.first(where: { $0 > j && names[$0] == "rate" })
                        else {
                            throw RateCardError(description: "line \(line): a tier column 'From' without its category above or its 'Rate'")
                        }
                        columns.append((label.category, j, rate))
                    }
                    tierColumns = columns.map { (category: $0.0, from: $0.1, rate: $0.2) }
                    currencyColumn = names.firstIndex(of: "currency")
                    listColumns = nil
                    tierMarket = nil
                    continue
                }
                let found = Dictionary(uniqueKeysWithValues: categoryColumns(names).map { ($0.column, $0.category) })
                guard found.values.contains(.utility) else {
                    throw RateCardError(description: "line \(line): a 'Market' header without a Utility column")
                }
                listColumns = found
                currencyColumn = names.firstIndex(of: "currency")
                tierColumns = nil
                continue
            }
            if let columns = tierColumns {
                if !first.isEmpty { tierMarket = first }
                guard let market = tierMarket else { continue }
                for c in columns where max(c.from, c.rate) < trimmed.count {
                    guard let rate = try micros(trimmed[c.rate], line: line) else { continue }
                    guard let from = Int(trimmed[c.from].filter(\.isNumber)) else {
                        throw RateCardError(description: "line \(line): tier start '\(trimmed[c.from])' is not a message count")
                    }
                    tiers[market, default: [:]][c.category, default: []].append(Tier(from: max(from, 1), rate: rate))
                }
                if let c = currencyColumn, c < trimmed.count, !trimmed[c].isEmpty { currencies.insert(trimmed[c]) }
                continue
            }
            guard let columns = listColumns else {
                // Notes above a table: the currency and the date may be in them; or the row naming
                // the categories of a tier table.
                let found = categoryColumns(names)
                if !found.isEmpty { labels = found }
                let note = trimmed.joined(separator: " ")
                if noteDate == nil, let date = effectiveDate(in: note) { noteDate = date }
                if noteCurrency == nil, let range = note.range(of: #"\bin ([A-Z]{3})\b"#, options: .regularExpression) {
                    noteCurrency = String(note[range].suffix(3))
                }
                continue
            }
            // A row naming categories over columns: a tier table follows.
            let labelled = categoryColumns(names)
            if first.isEmpty && !labelled.isEmpty {
                labels = labelled
                listColumns = nil
                continue
            }
            // A note below the table (no rate in any category column) is not a market.
            guard !first.isEmpty, columns.keys.contains(where: { $0 < trimmed.count && !trimmed[$0].isEmpty }) else { continue }
            var row: [PricingCategory: Int64] = [:]
            for (i, category) in columns where i < trimmed.count {
                if let value = try micros(trimmed[i], line: line) { row[category] = value }
            }
            guard row[.utility] != nil || row[.marketing] != nil else {
                throw RateCardError(description: "line \(line): market '\(first)' has no marketing or utility rate")
            }
            if let c = currencyColumn, c < trimmed.count, !trimmed[c].isEmpty { currencies.insert(trimmed[c]) }
            rates[first] = row
        }
        guard !rates.isEmpty || !tiers.isEmpty else {
            throw RateCardError(description: "no rate table: expected a header row starting with 'Market' and rows below it")
        }
        currencies = Set(currencies.map { $0 == "$US" ? "USD" : $0 })
        guard currencies.count <= 1 else {
            throw RateCardError(description: "several currencies in one card: \(currencies.sorted().joined(separator: ", "))")
        }
        guard let date = effective ?? noteDate else {
            throw RateCardError(description: "no effective date in the file's notes: give it with --effective YYYY-MM-DD")
        }
        guard isDay(date) else { throw RateCardError(description: "effective date '\(date)' is not YYYY-MM-DD") }
        for (market, byCategory) in tiers {
            for (category, list) in byCategory {
                tiers[market]![category] = list.sorted { $0.from < $1.from }
            }
        }
        return RateCard(
            effective: date, currency: currencies.first ?? noteCurrency ?? "USD", source: source, rates: rates, tiers: tiers)
    }

    /// Markets this card lacks, from an older card (with their tiers from it): a partial import
    /// never prices a message at nothing.
    public func filling(from older: RateCard) -> RateCard {
        var card = self
        for (market, rates) in older.rates where card.rates[market] == nil {
            card.rates[market] = rates
            card.tiers[market] = older.tiers[market]
        }
        return card
    }

    /// The columns of a row that name a category ("Utility", "Authentication-International").
    static func categoryColumns(_ names: [String]) -> [(column: Int, category: PricingCategory)] {
        names.enumerated().compactMap { i, name in PricingCategory(meta: name).map { (column: i, category: $0) } }
    }

    /// Two files of the same card (Meta publishes the list rates and the volume tiers apart) as one.
    public func merged(with other: RateCard) -> RateCard {
        var card = self
        card.rates.merge(other.rates) { mine, _ in mine }
        card.tiers.merge(other.tiers) { mine, _ in mine }
        if other.source != source { card.source = "\(source) + \(other.source)" }
        return card
    }

    /// `0.0250`, `$0.0250`, `US$ 0.025` → 25,000 millionths; `n/a`, `-`, `` → nil. Anything else
    /// (`0,0250`, `8E-04`, `-0.01`, words) is refused with its line: a rate is never guessed.
    static func micros(_ cell: String, line: Int) throws -> Int64? {
        var text = cell.trimmingCharacters(in: .whitespaces)
        let lowered = text.lowercased()
        if text.isEmpty || lowered == "n/a" || lowered == "na" || lowered == "-" || lowered == "–" || lowered == "--" { return nil }
        if lowered == "free" { return 0 }
        for prefix in ["US$", "$"] where text.hasPrefix(prefix) {
            text = String(text.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces)
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), (1...6).contains(parts[0].count), parts[0].allSatisfy(\.isASCII),
            parts[0].allSatisfy(\.isNumber),
            parts.count == 1 || ((1...6).contains(parts[1].count) && parts[1].allSatisfy({ $0.isASCII && $0.isNumber }))
        else {
            throw RateCardError(description: "line \(line): '\(cell)' is not a rate (a decimal like 0.0250)")
        }
        var fraction = parts.count == 2 ? String(parts[1]) : ""
        fraction += String(repeating: "0", count: 6 - fraction.count)
        return Int64(parts[0])! * 1_000_000 + Int64(fraction)!
    }

    /// "effective April 1, 2026" or "effective 2026-04-01" → `2026-04-01`.
    static func effectiveDate(in note: String) -> String? {
        if let r = note.range(of: #"\d{4}-\d{2}-\d{2}"#, options: .regularExpression) { return String(note[r]) }
        let months = [
            "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december",
        ]
        guard
            let r = note.range(
                of: #"(?i)(january|february|march|april|may|june|july|august|september|october|november|december) \d{1,2}, \d{4}"#,
                options: .regularExpression)
        else { return nil }
        let words = note[r].replacingOccurrences(of: ",", with: "").split(separator: " ")
        guard let month = months.firstIndex(of: words[0].lowercased()), let day = Int(words[1]), let year = Int(words[2]) else {
            return nil
        }
        return String(format: "%04d-%02d-%02d", year, month + 1, day)
    }

    static func isDay(_ text: String) -> Bool {
        text.range(of: #"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"#, options: .regularExpression) != nil
    }
}

/// RFC 4180 records (quoted cells may hold commas, quotes and line breaks), each with the line it
/// starts on. Rate cards are a few dozen lines: this is all they need.
enum CSVRecords {
    static func split(_ text: String) throws -> [(line: Int, cells: [String])] {
        var records: [(Int, [String])] = []
        var cells: [String] = []
        var cell = ""
        var quoted = false
        var line = 1
        var start = 1
        var chars = Array(text.replacingOccurrences(of: "\r\n", with: "\n").drop { $0 == "\u{FEFF}" })
        chars.append("\n")
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if quoted {
                if c == "\"" {
                    if i + 1 < chars.count, chars[i + 1] == "\"" {
                        cell.append("\"")
                        i += 1
                    } else {
                        quoted = false
                    }
                } else {
                    if c == "\n" { line += 1 }
                    cell.append(c)
                }
            } else if c == "\"" && cell.isEmpty {
                // A quote opens a quoted cell only at its start; elsewhere it is text.
                quoted = true
            } else if c == "," {
                cells.append(cell)
                cell = ""
            } else if c == "\n" {
                cells.append(cell)
                if cells.contains(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) { records.append((start, cells)) }
                cells = []
                cell = ""
                line += 1
                start = line
            } else {
                cell.append(c)
            }
            i += 1
        }
        if quoted { throw RateCardError(description: "line \(start): a quoted cell is never closed") }
        return records
    }
}
