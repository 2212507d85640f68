/// Amounts, months and dates written the way a tenant reads them in their locale.
///
/// A small table of our own rather than Foundation's formatters: the output must be the same on
/// every machine (ICU versions differ in spaces and symbols, e.g. `RD$` vs `DOP`), and it is cheap
/// enough to run for every message of a million-invoice preview.
public struct LocaleFormatting: Sendable {
    public let locale: String
    let language: String
    let region: String?

    public init(locale: String) {
        self.locale = locale
        let parts = locale.split(whereSeparator: { $0 == "-" || $0 == "_" })
        language = parts.first.map { $0.lowercased() } ?? "en"
        region = parts.dropFirst().first { $0.count == 2 }.map { $0.uppercased() }
        numberStyle = Self.numberStyle(language: language, region: region)
    }

    // MARK: - Money

    private struct NumberStyle {
        var group: String
        var decimal: String
        var symbolFirst: Bool
        var gap: String  // between symbol and number
    }

    /// Worked out once per locale: a formatting is kept for every row with its locale.
    private let numberStyle: NumberStyle

    private static func numberStyle(language: String, region: String?) -> NumberStyle {
        switch (language, region) {
        case ("es", "ES"), ("es", "AR"), ("es", "CL"), ("es", "UY"), ("es", "VE"), ("es", "PY"), ("es", "BO"), ("es", "EC"):
            return NumberStyle(group: ".", decimal: ",", symbolFirst: region != "ES", gap: region == "ES" ? "\u{A0}" : "")
        case ("es", "CO"):
            return NumberStyle(group: ".", decimal: ",", symbolFirst: true, gap: "\u{A0}")
        case ("es", _):
            // Dominican Republic, Mexico, Central America, the US, and plain `es`.
            return NumberStyle(group: ",", decimal: ".", symbolFirst: true, gap: "")
        case ("pt", _):
            return NumberStyle(group: ".", decimal: ",", symbolFirst: true, gap: "\u{A0}")
        case ("fr", "CA"), ("fr", _):
            return NumberStyle(group: "\u{202F}", decimal: ",", symbolFirst: false, gap: "\u{A0}")
        case ("de", _), ("it", _), ("nl", _):
            return NumberStyle(group: ".", decimal: ",", symbolFirst: false, gap: "\u{A0}")
        default:
            return NumberStyle(group: ",", decimal: ".", symbolFirst: true, gap: "")
        }
    }

    /// The symbol a reader in this locale knows the currency by (`RD$`, `US$`, `€`), or its code.
    public func symbol(for currency: Currency) -> String {
        switch currency.code {
        case "DOP": return "RD$"
        case "USD":
            return (region == "US" || region == "PR" || (language == "en" && region == nil) || region == "EC" || region == "SV")
                ? "$" : "US$"
        case "EUR": return "€"
        case "GBP": return "£"
        case "BRL": return "R$"
        case "MXN": return region == "MX" ? "$" : "MX$"
        case "COP": return region == "CO" ? "$" : "COP"
        case "CAD": return region == "CA" ? "$" : "CA$"
        case "JPY": return "¥"
        case "CHF": return "CHF"
        default: return currency.code
        }
    }

    /// `RD$12,345.50` (es-DO), `12.345,50 €` (es-ES), `R$ 12.345,50` (pt-BR), `$12,345.50` (en, USD).
    public func money(_ money: Money) -> String {
        let style = numberStyle
        let digits = money.currency.minorUnitDigits
        let magnitude = money.minorUnits.magnitude
        let scale = UInt64(pow10(digits))
        let symbol = symbol(for: money.currency)
        let gap = symbol.count == 3 && symbol == money.currency.code ? "\u{A0}" : style.gap
        // Written in one string, left to right: no intermediate strings for the parts.
        var out = ""
        out.reserveCapacity(32)
        if money.minorUnits < 0 { out.append("-") }
        if style.symbolFirst {
            out.append(symbol)
            out.append(gap)
        }
        let whole = String(magnitude / scale)  // at most 20 ASCII digits: a small string, not allocated
        var remaining = whole.utf8.count
        for digit in whole.unicodeScalars {
            out.unicodeScalars.append(digit)
            remaining -= 1
            if remaining > 0 && remaining % 3 == 0 { out.append(style.group) }
        }
        if digits > 0 {
            out.append(style.decimal)
            let fraction = String(magnitude % scale)
            for _ in fraction.utf8.count..<max(digits, fraction.utf8.count) { out.append("0") }
            out.append(fraction)
        }
        if !style.symbolFirst {
            out.append(gap)
            out.append(symbol)
        }
        return out
    }

    // MARK: - Months and dates

    private static let months: [String: [String]] = [
        "es": [
            "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
        ],
        "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"],
        "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"],
        "pt": [
            "janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro", "novembro", "dezembro",
        ],
        "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"],
        "it": [
            "gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre", "ottobre", "novembre",
            "dicembre",
        ],
    ]

    private var monthNames: [String] { Self.months[language] ?? Self.months["en"]! }

    /// `marzo 2026`, `March 2026`, `mars 2026`, `março de 2026`.
    public func period(_ period: BillingPeriod) -> String {
        let month = monthNames[period.month - 1]
        return language == "pt" ? "\(month) de \(period.year)" : "\(month) \(period.year)"
    }

    /// `10 de marzo de 2026`, `March 10, 2026`, `10 mars 2026`, `10 de março de 2026`.
    public func date(_ date: CalendarDate) -> String {
        let month = monthNames[date.month - 1]
        switch language {
        case "es", "pt": return "\(date.day) de \(month) de \(date.year)"
        case "fr", "it": return "\(date.day) \(month) \(date.year)"
        case "de": return "\(date.day). \(month) \(date.year)"
        case "en" where region != nil && region != "US": return "\(date.day) \(month) \(date.year)"
        default: return "\(month) \(date.day), \(date.year)"
        }
    }
}
