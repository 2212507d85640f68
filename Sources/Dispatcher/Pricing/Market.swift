import Foundation

/// The market Meta prices a number in: by its calling code (and, for `+1`, its area code), the
/// country's own market when the rate card has one, else the group it belongs to ("Rest of Latin
/// America"), else `Other`. The table is data (`RateCards/markets.csv`), so a regrouping by Meta
/// is an edit, not a change of code.
public struct MarketMap: Sendable {
    public struct Country: Sendable, Equatable {
        public var iso: String
        public var name: String
        public var group: String
    }

    /// Number prefix (digits) → country.
    let byPrefix: [String: Country]
    let longest: Int

    public init(csv: String) {
        var table: [String: Country] = [:]
        for (_, cells) in (try? CSVRecords.split(csv)) ?? [] {
            guard cells.count >= 4, let first = cells.first, !first.hasPrefix("#"), first.allSatisfy(\.isNumber), !first.isEmpty
            else { continue }
            table[first] = Country(
                iso: cells[1].trimmingCharacters(in: .whitespaces), name: cells[2].trimmingCharacters(in: .whitespaces),
                group: cells[3].trimmingCharacters(in: .whitespaces))
        }
        byPrefix = table
        longest = table.keys.map(\.count).max() ?? 0
    }

    /// The built-in table.
    public static let builtIn = MarketMap(csv: String(decoding: PackageResources.markets_csv, as: UTF8.self))

    /// The country of an E.164 number (digits, no `+`), when its calling code is in the table.
    public func country(of phone: String) -> Country? {
        let digits = phone.hasPrefix("+") ? String(phone.dropFirst()) : phone
        var length = min(longest, digits.count)
        while length > 0 {
            if let country = byPrefix[String(digits.prefix(length))] { return country }
            length -= 1
        }
        return nil
    }

    /// The first `longest` digits of a number (after a `+`) as one integer, with how many there
    /// are: every prefix the table matches lies within them, so numbers with the same start have
    /// the same market. Nil when they are not all digits.
    public func start(of phone: String) -> Int? {
        var value = 0, count = 0
        for (i, byte) in phone.utf8.enumerated() {
            if i == 0 && byte == UInt8(ascii: "+") { continue }  // as `country(of:)`: one `+`, first
            guard count < longest else { break }
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            count += 1
        }
        return value * 10 + count
    }

    /// The market of a number on this card: the country's own, its group's, or `Other`.
    public func market(of phone: String, on card: RateCard) -> String {
        guard let country = country(of: phone) else { return Market.other }
        if card.rates[country.name] != nil { return country.name }
        if card.rates[country.group] != nil { return country.group }
        return Market.other
    }
}

public enum Market {
    /// Meta's market for every number no other market or group takes.
    public static let other = "Other"
}
