/// A validated invoice from a manifest: what the rest of the pipeline works with.
public struct Invoice: Sendable, Hashable {
    /// Line where the record starts in the manifest (for messages that point back at it).
    public var line: Int
    public var invoiceID: String
    public var tenantName: String
    /// Distinct WhatsApp numbers as E.164 digits without the `+` (`18095550101`), in manifest order.
    public var phones: [String]
    public var amount: Money
    public var period: BillingPeriod
    public var dueDate: CalendarDate?
    public var landlord: String?
    public var property: String?
    public var tenantID: String?
    /// BCP 47 tag (`es-DO`), the record's own or the manifest's or the configured default.
    public var locale: String
    public var documentURL: String?
    public var email: String?
    /// Columns or elements the manifest has beyond the known fields, for templates.
    public var extras: [String: String]
    /// The period as the caller wrote it (`marzo 2026` from the landlord UI), shown instead of the formatted one.
    public var periodLabel: String? = nil
    /// The organization the invoice is sent for, when the run reads the manifest's `organization`.
    public var organization: String? = nil

    public init(
        line: Int, invoiceID: String, tenantName: String, phones: [String], amount: Money,
        period: BillingPeriod, dueDate: CalendarDate? = nil, landlord: String? = nil,
        property: String? = nil, tenantID: String? = nil, locale: String, documentURL: String? = nil,
        email: String? = nil, extras: [String: String] = [:]
    ) {
        self.line = line
        self.invoiceID = invoiceID
        self.tenantName = tenantName
        self.phones = phones
        self.amount = amount
        self.period = period
        self.dueDate = dueDate
        self.landlord = landlord
        self.property = property
        self.tenantID = tenantID
        self.locale = locale
        self.documentURL = documentURL
        self.email = email
        self.extras = extras
    }
}

/// An amount in integer minor units of its currency (cents for DOP), never floating point.
///
/// Every amount that reaches a `Money` fits `Money.maximumMinorUnits` (15 digits in all, whatever the
/// currency's decimals), so that its thousandths (`amount1000`) and the totals of a manifest are
/// computed without overflow; totals use `adding(_:)`, which says when they would not fit.
public struct Money: Sendable, Hashable, CustomStringConvertible {
    public var minorUnits: Int64
    public var currency: Currency

    /// The largest amount of any currency in minor units: 15 digits (999,999,999,999,999 minor units).
    public static let maximumMinorUnits: Int64 = 999_999_999_999_999

    public init(minorUnits: Int64, currency: Currency) {
        self.minorUnits = minorUnits
        self.currency = currency
    }

    /// How many digits an amount of `currency` may have before the point.
    public static func maximumWholeDigits(_ currency: Currency) -> Int { 15 - currency.minorUnitDigits }

    /// Amount × 1000 (Meta's `amount_1000`), exact for any amount within `maximumMinorUnits`.
    public var amount1000: Int64 {
        let digits = currency.minorUnitDigits
        return digits <= 3 ? minorUnits * pow10(3 - digits) : minorUnits / pow10(digits - 3)
    }

    /// `amount_1000` as Meta takes it: a 32-bit integer. Nil when the amount is larger (at most
    /// 2,147,483.647 of any currency); such an amount goes as a text parameter instead.
    public var metaAmount1000: Int32? { Int32(exactly: amount1000) }

    /// The sum of two amounts of one currency; nil when it would pass `maximumMinorUnits × 1000`
    /// (a total, unlike one invoice, may exceed one amount's limit but never wraps).
    public func adding(_ other: Money) -> Money? {
        let (sum, overflow) = minorUnits.addingReportingOverflow(other.minorUnits)
        guard !overflow, sum.magnitude <= UInt64(Self.maximumMinorUnits) * 1000 else { return nil }
        return Money(minorUnits: sum, currency: currency)
    }

    /// Plain decimal with `.` and the currency's digits (`12345.50`): for CSV reports and JSON.
    public var plainDecimal: String {
        let digits = currency.minorUnitDigits
        let negative = minorUnits < 0
        let magnitude = minorUnits.magnitude
        guard digits > 0 else { return (negative ? "-" : "") + String(magnitude) }
        let scale = UInt64(pow10(digits))
        var fraction = String(magnitude % scale)
        while fraction.count < digits { fraction = "0" + fraction }
        return (negative ? "-" : "") + String(magnitude / scale) + "." + fraction
    }

    public var description: String { "\(plainDecimal) \(currency.code)" }
}

func pow10(_ n: Int) -> Int64 {
    var value: Int64 = 1
    for _ in 0..<max(n, 0) { value *= 10 }
    return value
}

/// A billing period: year and month, with the manifest's own spelling kept.
public struct BillingPeriod: Sendable, Hashable, Comparable {
    public var year: Int
    public var month: Int
    /// As written in the manifest (`2026-03`, `202603`, `2026030100`).
    public var raw: String

    public init(year: Int, month: Int, raw: String? = nil) {
        self.year = year
        self.month = month
        self.raw = raw ?? "\(year)-\(month < 10 ? "0" : "")\(month)"
    }

    /// `2026-03`
    public var iso: String { "\(year)-\(month < 10 ? "0" : "")\(month)" }

    public static func < (a: Self, b: Self) -> Bool { (a.year, a.month) < (b.year, b.month) }
}

/// A calendar date without a time zone (`due_date`).
public struct CalendarDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int

    public init?(year: Int, month: Int, day: Int) {
        guard (1...12).contains(month), day >= 1, day <= CalendarDate.days(inMonth: month, year: year) else { return nil }
        self.year = year
        self.month = month
        self.day = day
    }

    public static func days(inMonth month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// `2026-03-10`
    public var description: String {
        let m = month < 10 ? "0\(month)" : "\(month)"
        let d = day < 10 ? "0\(day)" : "\(day)"
        return "\(year)-\(m)-\(d)"
    }

    public static func < (a: Self, b: Self) -> Bool { (a.year, a.month, a.day) < (b.year, b.month, b.day) }
}
