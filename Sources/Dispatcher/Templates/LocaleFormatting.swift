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
        // A symbol that is the code itself (`CHF 12.50`) stands apart from the number.
        let gap = symbol == money.currency.code && symbol.utf8.count == 3 ? "\u{A0}" : style.gap
        let (symbolBytes, gapBytes, groupBytes) = (symbol.utf8.count, gap.utf8.count, style.group.utf8.count)
        // Sign, symbol and gap, at most 20 digits with a group mark before every third, decimals.
        let capacity = 1 + symbolBytes + gapBytes + 20 + 6 * groupBytes + style.decimal.utf8.count + max(digits, 20)
        // Written as bytes into the string's own storage, left to right: one allocation at most,
        // and nothing appended a character at a time (3 % of a million-row preview before).
        return String(unsafeUninitializedCapacity: capacity) { out in
            var n = 0
            func put(_ text: String) {
                for byte in text.utf8 {
                    out[n] = byte
                    n += 1
                }
            }
            /// `value` in decimal, zero-padded to `minimum` digits, with `group` before every third
            /// digit from the right when there is one.
            func put(_ value: UInt64, minimum: Int, group: String?) {
                var reversed: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for any UInt64
                withUnsafeMutableBytes(of: &reversed) { d in
                    var value = value, count = 0
                    repeat {
                        d[count] = UInt8(ascii: "0") + UInt8(value % 10)
                        value /= 10
                        count += 1
                    } while value > 0 || count < min(minimum, 20)
                    for i in stride(from: count - 1, through: 0, by: -1) {
                        out[n] = d[i]
                        n += 1
                        if let group, i > 0 && i % 3 == 0 { put(group) }
                    }
                }
            }
            if money.minorUnits < 0 { put("-") }
            if style.symbolFirst {
                put(symbol)
                put(gap)
            }
            put(magnitude / scale, minimum: 1, group: style.group)
            if digits > 0 {
                put(style.decimal)
                put(magnitude % scale, minimum: digits, group: nil)
            }
            if !style.symbolFirst {
                put(gap)
                put(symbol)
            }
            return n
        }
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
