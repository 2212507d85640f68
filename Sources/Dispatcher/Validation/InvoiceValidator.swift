/// Settings that validation needs beyond the manifest itself.
public struct ValidationOptions: Sendable {
    /// Country calling code put in front of numbers written without `+` or `00`; nil: such numbers are errors.
    public var defaultCountryCode: String?
    /// Currency for records (and manifests) that give none.
    public var defaultCurrency: String?
    /// Locale for records that give none (after the manifest's own default).
    public var defaultLocale: String
    /// Where document links may also point (relative, or on its origin, over http too): their
    /// PDFs are fetched and uploaded to Meta before sending.
    public var propertySystem: PropertySystem?
    /// Which rows are this run's, by their `organization` (nil: the column is not read).
    public var organizations: OrganizationScope?
    /// Each organization's own defaults, for a check of several organizations' rows at once
    /// (`preview` of a whole manifest): a row of one listed here is read with them, as its own
    /// run (`send`) reads it. After the manifest's own defaults, before the ones above.
    public var byOrganization: [String: OrganizationDefaults] = [:]

    public init(
        defaultCountryCode: String? = nil, defaultCurrency: String? = nil, defaultLocale: String = "es",
        propertySystem: PropertySystem? = nil
    ) {
        self.defaultCountryCode = defaultCountryCode
        self.defaultCurrency = defaultCurrency
        self.defaultLocale = defaultLocale
        self.propertySystem = propertySystem
    }
}

/// An organization's defaults for its rows (`ValidationOptions.byOrganization`).
public struct OrganizationDefaults: Sendable, Equatable {
    public var countryCode: String?
    public var currency: String?
    public var locale: String

    public init(countryCode: String?, currency: String?, locale: String) {
        self.countryCode = countryCode
        self.currency = currency
        self.locale = locale
    }
}

/// The verdict on one record.
public enum RecordVerdict: Sendable {
    case valid(Invoice)
    /// Valid, but nothing is to be sent (amount `<= 0`).
    case skipped(Invoice, reason: String)
    case invalid([ValidationIssue])
    /// Another organization's row: its own run sends it (`OrganizationScope`).
    case elsewhere
}

/// Checks records one by one and remembers invoice ids to catch duplicates.
///
/// Duplicate detection keeps a 128-bit hash of each id and the line it was on, not the id itself,
/// so that a million-row manifest is checked in a few tens of megabytes.
public struct InvoiceValidator {
    public let options: ValidationOptions
    private let phones: PhoneNormalizer
    private let manifestDefaults: [ManifestField: String]
    private let defaultCurrency: Currency?
    private let defaultCurrencyIssue: String?
    private var seenIDs = SeenIDs()
    /// Nearly every row repeats the manifest's locale and currency: remember the last of each by its bytes.
    private var lastLocale: (raw: [UInt8], normal: String?) = ([], nil)
    private var lastCurrency: (raw: [UInt8], currency: Currency?) = ([], nil)

    /// `ValidationOptions.byOrganization`, ready to use: each organization's normalizer and
    /// default currency and locale.
    private let organizationDefaults: [String: (phones: PhoneNormalizer, currency: Currency?, currencyIssue: String?, locale: String)]

    public init(options: ValidationOptions, manifestDefaults: [ManifestField: String] = [:]) {
        self.options = options
        self.phones = PhoneNormalizer(defaultCountryCode: options.defaultCountryCode)
        self.manifestDefaults = manifestDefaults
        func currency(_ code: String?) -> (Currency?, String?) {
            guard let code else { return (nil, nil) }
            let currency = Currency(code: code)
            return (currency, currency == nil ? "the default currency '\(code)' is not an ISO 4217 code" : nil)
        }
        (defaultCurrency, defaultCurrencyIssue) = currency(manifestDefaults[.currency] ?? options.defaultCurrency)
        organizationDefaults = options.byOrganization.mapValues { own in
            let (code, issue) = currency(manifestDefaults[.currency] ?? own.currency ?? options.defaultCurrency)
            return (PhoneNormalizer(defaultCountryCode: own.countryCode), code, issue, own.locale)
        }
    }

    public mutating func validate(_ record: borrowing RawRecord) -> RecordVerdict {
        var issues: [ValidationIssue] = []
        let line = record.line

        // invoice_id first: every other problem is reported with it.
        let invoiceID = text(record[.invoiceID])
        func fail(_ field: String?, _ message: String) {
            issues.append(ValidationIssue(line: line, invoiceID: invoiceID?.value, field: field, message: message))
        }
        for (field, message) in record.structuralIssues { fail(field, message) }

        switch invoiceID {
        case nil: fail("invoice_id", "is missing")
        case .some(.invalidUTF8): fail("invoice_id", "is not valid UTF-8")
        case .some(.control(let c)): fail("invoice_id", controlMessage(c))
        case .some(.text(let id)):
            if id.utf8.count > 128 { fail("invoice_id", "is longer than 128 characters") }
            if id.utf8.contains(where: { $0 < 0x20 }) { fail("invoice_id", "contains a control character") }
            if let first = seenIDs.insert(trimmed(record[.invoiceID]!), line: line) {
                fail("invoice_id", "duplicate invoice_id: already used by the record on line \(first)")
            }
        }

        var organization: String? = nil
        if let scope = options.organizations {
            let value = optionalText(record, .organization, fail) ?? manifestDefaults[.organization]
            switch scope.owner(of: value) {
            case .this(let id): organization = id
            case .other: return .elsewhere
            case .nobody(let problem):
                guard scope.reportsStrays else { return .elsewhere }
                fail("organization", problem)
            }
        }

        // A row of an organization with defaults of its own is read with them.
        let own = organizationDefaults.isEmpty ? nil : organization.flatMap { organizationDefaults[$0] }
        let phones = own?.phones ?? self.phones
        let (defaultCurrency, defaultCurrencyIssue) =
            own.map { ($0.currency, $0.currencyIssue) } ?? (self.defaultCurrency, self.defaultCurrencyIssue)

        let tenantName = requiredText(record, .tenantName, fail)

        // Phones: every one must be valid; the same number twice collapses to one message.
        var numbers: [String] = []
        if record.phones.allSatisfy({ isBlankBytes($0.bytes) }) {
            fail("phone", "is missing: at least one WhatsApp number is needed")
        }
        for (field, bytes) in record.phones where !isBlankBytes(bytes) {
            switch phones.normalize(bytes) {
            case .success(let number):
                if !numbers.contains(number) { numbers.append(number) }
            case .failure(let error):
                let shown = String(decoding: bytes, as: UTF8.self).trimmingASCIIWhitespace()
                fail(field, "'\(shown)' \(error.message)")
            }
        }

        // Currency before amount: the currency says how many decimals the amount may have.
        var currency: Currency? = nil
        if let bytes = record[.currency], !isBlankBytes(bytes) {
            let raw = trimmed(bytes)
            if raw.elementsEqual(lastCurrency.raw) {
                currency = lastCurrency.currency
            } else {
                currency = Currency(code: String(decoding: raw, as: UTF8.self))
                lastCurrency = (Array(raw), currency)
            }
            if currency == nil {
                fail("currency", "'\(String(decoding: raw, as: UTF8.self))' is not an ISO 4217 currency code (e.g. DOP, USD, EUR)")
            }
        } else if let defaultCurrency {
            currency = defaultCurrency
        } else if let defaultCurrencyIssue {
            fail("currency", defaultCurrencyIssue)
        } else {
            fail("currency", "is missing and no default currency is set")
        }

        var minorUnits: Int64? = nil
        if let bytes = record[.amount], !isBlankBytes(bytes) {
            switch parseAmount(bytes, digits: currency?.minorUnitDigits) {
            case .success(let value): minorUnits = value
            case .failure(let error): fail("amount", error.message)
            }
        } else {
            fail("amount", "is missing")
        }

        var period: BillingPeriod? = nil
        if let bytes = record[.period], !isBlankBytes(bytes) {
            period = parsePeriod(bytes)
            if period == nil {
                let shown = String(decoding: bytes, as: UTF8.self).trimmingASCIIWhitespace()
                fail("period", "'\(shown)' is not a billing period (YYYY-MM, YYYYMM or YYYYMMDDHH)")
            }
        } else {
            fail("period", "is missing")
        }

        var dueDate: CalendarDate? = nil
        if let bytes = record[.dueDate], !isBlankBytes(bytes) {
            dueDate = parseDate(bytes)
            if dueDate == nil {
                let shown = String(decoding: bytes, as: UTF8.self).trimmingASCIIWhitespace()
                fail("due_date", "'\(shown)' is not a date in the calendar (YYYY-MM-DD)")
            }
        }

        let landlord = optionalText(record, .landlord, fail) ?? manifestDefaults[.landlord]
        let property = optionalText(record, .property, fail)
        let tenantID = optionalText(record, .tenantID, fail)

        var locale = manifestDefaults[.locale] ?? own?.locale ?? options.defaultLocale
        if let bytes = record[.locale], !isBlankBytes(bytes) {
            let raw = trimmed(bytes)
            if !raw.elementsEqual(lastLocale.raw) {
                lastLocale = (Array(raw), validatedString(raw).flatMap(normalizeLocale))
            }
            if let normal = lastLocale.normal {
                locale = normal
            } else {
                fail("locale", "'\(String(decoding: raw, as: UTF8.self))' is not a BCP 47 language tag (e.g. es-DO, en, fr-FR)")
            }
        }

        var documentURL: String? = nil
        if let bytes = record[.documentURL], !isBlankBytes(bytes) {
            let raw = trimmed(bytes)
            let text = String(decoding: raw, as: UTF8.self)
            if let local = options.propertySystem.flatMap({ $0.resolve(text) }) {
                // The property system's own document: fetched with credentials, uploaded to Meta.
                if let problem = checkLinkCharacters(raw) { fail("document_url", problem) } else { documentURL = local }
            } else if let system = options.propertySystem,
                (text.hasPrefix("/") && !text.hasPrefix("//")) || text.lowercased().hasPrefix(system.origin + "/")
            {
                // On the property system, but not a document its token may open.
                fail(
                    "document_url",
                    "'\(text)' is on the property system but not one of its documents: only links under \(system.documentsPath) are fetched (DISPATCHER_PROPERTY_SYSTEM_DOCUMENTS_PATH), without dot segments or encoded slashes"
                )
            } else if text.hasPrefix("/") {
                fail(
                    "document_url",
                    "'\(text)' is a path on the property system: set DISPATCHER_PROPERTY_SYSTEM_URL (its address) so that the PDF can be fetched and uploaded to Meta"
                )
            } else if let problem = checkDocumentURL(raw) {
                fail("document_url", problem)
            } else {
                documentURL = text
            }  // ASCII only: checked above
        }

        var email: String? = nil
        if let bytes = record[.email], !isBlankBytes(bytes) {
            let raw = trimmed(bytes)
            if let value = validatedString(raw) {
                if let control = forbiddenControl(raw) {
                    fail("email", controlMessage(control))
                } else if looksLikeEmail(raw) {
                    email = value
                } else {
                    fail("email", "'\(value)' is not an email address")
                }
            } else {
                fail("email", "is not valid UTF-8 (save the file as UTF-8)")
            }
        }

        var extras: [String: String] = [:]
        for (name, bytes) in record.extras {
            guard let value = validatedString(bytes) else {
                fail(name, "is not valid UTF-8")
                continue
            }
            if let control = forbiddenControl(bytes) {
                fail(name, controlMessage(control))
                continue
            }
            extras[name] = value.trimmingASCIIWhitespace()
        }

        guard issues.isEmpty, case .text(let id)? = invoiceID, let tenantName, let currency, let minorUnits, let period else {
            return .invalid(issues)
        }
        var invoice = Invoice(
            line: line, invoiceID: id, tenantName: tenantName, phones: numbers,
            amount: Money(minorUnits: minorUnits, currency: currency), period: period, dueDate: dueDate,
            landlord: landlord, property: property, tenantID: tenantID, locale: locale,
            documentURL: documentURL, email: email, extras: extras)
        invoice.organization = organization
        if minorUnits <= 0 {
            return .skipped(invoice, reason: SkipReason.nothingDue(amount: "\(invoice.amount.plainDecimal) \(currency.code)"))
        }
        return .valid(invoice)
    }

    // MARK: - Text fields

    private enum TextValue {
        case text(String)
        case invalidUTF8
        case control(UInt32)
        var value: String? { if case .text(let s) = self { s } else { nil } }
    }

    /// The trimmed text of a field; nil when absent or blank.
    private func text(_ bytes: UnsafeBufferPointer<UInt8>?) -> TextValue? {
        guard let bytes else { return nil }
        var lo = 0, hi = bytes.count
        while lo < hi && isASCIISpace(bytes[lo]) { lo += 1 }
        while hi > lo && isASCIISpace(bytes[hi - 1]) { hi -= 1 }
        if lo == hi { return nil }
        let field = UnsafeBufferPointer(rebasing: bytes[lo..<hi])
        guard let s = validatedString(field) else {
            return .invalidUTF8
        }
        if let control = forbiddenControl(field) { return .control(control) }
        return .text(s)
    }

    private func requiredText(
        _ record: borrowing RawRecord, _ field: ManifestField,
        _ fail: (String?, String) -> Void
    ) -> String? {
        switch text(record[field]) {
        case nil: fail(field.name, "is missing"); return nil
        case .some(.invalidUTF8): fail(field.name, "is not valid UTF-8 (save the file as UTF-8)"); return nil
        case .some(.control(let c)): fail(field.name, controlMessage(c)); return nil
        case .some(.text(let s)): return s
        }
    }

    private func optionalText(
        _ record: borrowing RawRecord, _ field: ManifestField,
        _ fail: (String?, String) -> Void
    ) -> String? {
        switch text(record[field]) {
        case nil: return nil
        case .some(.invalidUTF8): fail(field.name, "is not valid UTF-8 (save the file as UTF-8)"); return nil
        case .some(.control(let c)): fail(field.name, controlMessage(c)); return nil
        case .some(.text(let s)): return s
        }
    }
}

// MARK: - Field parsers (on bytes: no String is made for a value that is only checked)

package struct AmountError: Error { package var message: String }

/// Parses a plain decimal with `.` (`12345.50`, `-50`, `9800`) into minor units.
package func parseAmount(_ raw: UnsafeBufferPointer<UInt8>, digits: Int?) -> Result<Int64, AmountError> {
    var lo = 0, hi = raw.count
    while lo < hi && isASCIISpace(raw[lo]) { lo += 1 }
    while hi > lo && isASCIISpace(raw[hi - 1]) { hi -= 1 }
    let shown = String(decoding: UnsafeBufferPointer(rebasing: raw[lo..<hi]), as: UTF8.self)
    var negative = false
    if lo < hi && raw[lo] == UInt8(ascii: "-") { negative = true; lo += 1 }
    var whole: Int64 = 0, wholeDigits = 0, sawDigit = false
    var fraction: [UInt8] = []
    var sawPoint = false
    for i in lo..<hi {
        let b = raw[i]
        if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
            if sawPoint {
                if fraction.count > 64 { return .failure(AmountError(message: "'\(shown.prefix(40))…' has too many decimals")) }
                fraction.append(b - UInt8(ascii: "0"))
            } else {
                // Leading zeros do not count; 15 significant digits is the most any currency takes.
                if wholeDigits > 0 || b != UInt8(ascii: "0") { wholeDigits += 1 }
                if wholeDigits > 15 {
                    return .failure(
                        AmountError(
                            message:
                                "'\(shown.prefix(40))' is too large: at most \(15 - (digits ?? 0)) digits before the point\(digits == nil ? "" : " in this currency")"
                        ))
                }
                whole = whole * 10 + Int64(b - UInt8(ascii: "0"))
                sawDigit = true
            }
        } else if b == UInt8(ascii: ".") && !sawPoint {
            sawPoint = true
        } else if b == UInt8(ascii: ",") {
            return .failure(
                AmountError(message: "'\(shown)' is not a plain decimal: use '.' for decimals and no thousands separator (12345.50)"))
        } else {
            return .failure(AmountError(message: "'\(shown)' is not a number (write a plain decimal such as 12345.50)"))
        }
    }
    if !sawDigit || (sawPoint && fraction.isEmpty) {
        return .failure(AmountError(message: "'\(shown)' is not a number (write a plain decimal such as 12345.50)"))
    }
    guard let digits else { return .success(0) }  // the currency is wrong; that is reported on its own
    // Digits beyond the currency's minor unit are allowed only when they are zeros (`9800.000`).
    if fraction.count > digits {
        if fraction[digits...].contains(where: { $0 != 0 }) {
            return .failure(
                AmountError(
                    message:
                        "'\(shown)' has \(fraction.count) decimal\(fraction.count == 1 ? "" : "s"); this currency has \(digits == 0 ? "none" : "\(digits)")"
                ))
        }
        fraction.removeLast(fraction.count - digits)
    }
    // The whole part may have at most 15 − digits digits, so that minor units stay within
    // Money.maximumMinorUnits (and thousandths and totals cannot overflow).
    if wholeDigits > 15 - digits {
        return .failure(
            AmountError(message: "'\(shown.prefix(40))' is too large: at most \(15 - digits) digits before the point in this currency"))
    }
    while fraction.count < digits { fraction.append(0) }
    var minor = whole
    for d in fraction { minor = minor * 10 + Int64(d) }
    return .success(negative ? -minor : minor)
}

@inline(__always) private func digit(_ b: UInt8) -> Int? {
    b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") ? Int(b - UInt8(ascii: "0")) : nil
}

private func number(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
    var value = 0
    for i in range {
        guard let d = digit(bytes[i]) else { return nil }
        value = value * 10 + d
    }
    return value
}

func trimmed(_ raw: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
    var lo = 0, hi = raw.count
    while lo < hi && isASCIISpace(raw[lo]) { lo += 1 }
    while hi > lo && isASCIISpace(raw[hi - 1]) { hi -= 1 }
    return UnsafeBufferPointer(rebasing: raw[lo..<hi])
}

/// `YYYY-MM`, `YYYYMM`, or the property system's term `YYYYMMDDHH`.
func parsePeriod(_ raw: UnsafeBufferPointer<UInt8>) -> BillingPeriod? {
    let b = trimmed(raw)
    let year: Int?, month: Int?
    switch b.count {
    case 7 where b[4] == UInt8(ascii: "-"):
        year = number(b, 0..<4); month = number(b, 5..<7)
    case 6:
        year = number(b, 0..<4); month = number(b, 4..<6)
    case 10:
        year = number(b, 0..<4); month = number(b, 4..<6)
        guard let y = year, let m = month, let day = number(b, 6..<8), let hour = number(b, 8..<10),
            CalendarDate(year: y, month: m, day: day) != nil, hour < 24
        else { return nil }
    default:
        return nil
    }
    guard let year, let month, (1...12).contains(month), year >= 1900 else { return nil }
    return BillingPeriod(year: year, month: month, raw: String(decoding: b, as: UTF8.self))
}

/// `YYYY-MM-DD`, a real calendar date.
package func parseDate(_ raw: UnsafeBufferPointer<UInt8>) -> CalendarDate? {
    let b = trimmed(raw)
    guard b.count == 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
        let y = number(b, 0..<4), let m = number(b, 5..<7), let d = number(b, 8..<10)
    else { return nil }
    return CalendarDate(year: y, month: m, day: d)
}

/// A date as the property system's landlord UI writes it, day first: `10/03/2026` (or `1/3/2026`).
package func parseDayFirstDate(_ text: String) -> CalendarDate? {
    let parts = text.trimmingASCIIWhitespace().split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 3, (1...2).contains(parts[0].count), (1...2).contains(parts[1].count), parts[2].count == 4,
        parts.allSatisfy({ $0.allSatisfy { $0.isASCII && $0.isNumber } }),
        let d = Int(parts[0]), let m = Int(parts[1]), let y = Int(parts[2])
    else { return nil }
    return CalendarDate(year: y, month: m, day: d)
}

func isBlankBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    bytes.allSatisfy(isASCIISpace)
}

/// `es_do` → `es-DO`; nil when it is not shaped like a BCP 47 tag.
public func normalizeLocale(_ tag: String) -> String? {
    let parts = tag.split(whereSeparator: { $0 == "-" || $0 == "_" }).map(String.init)
    guard let language = parts.first, (2...3).contains(language.count), language.allSatisfy({ $0.isASCII && $0.isLetter })
    else { return nil }
    var out = [language.lowercased()]
    for part in parts.dropFirst() {
        guard (2...8).contains(part.count), part.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else { return nil }
        if part.count == 2 {
            out.append(part.uppercased())
        } else if part.count == 4 {
            out.append(part.prefix(1).uppercased() + part.dropFirst().lowercased())
        } else {
            out.append(part)
        }
    }
    return out.joined(separator: "-")
}

/// An https link with a host, no spaces, ASCII, at most 2,000 bytes; nil when fine, else the problem.
package func checkDocumentURL(_ url: UnsafeBufferPointer<UInt8>) -> String? {
    let shown = { String(decoding: url, as: UTF8.self) }
    let scheme = Array("https://".utf8)
    guard url.count >= scheme.count, zip(url.prefix(scheme.count), scheme).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) else {
        return "'\(shown())' must be an https:// link (Meta fetches the PDF over HTTPS)"
    }
    var hostLength = 0, hostHasDot = false
    for b in url.dropFirst(scheme.count) {
        if b == UInt8(ascii: "/") || b == UInt8(ascii: "?") || b == UInt8(ascii: "#") { break }
        if b == UInt8(ascii: ".") { hostHasDot = true }
        hostLength += 1
    }
    if hostLength == 0 || !hostHasDot { return "'\(shown())' has no host" }
    return checkLinkCharacters(url)
}

/// ASCII without spaces or controls, at most 2,000 bytes; nil when fine, else the problem.
package func checkLinkCharacters(_ url: UnsafeBufferPointer<UInt8>) -> String? {
    let shown = { String(decoding: url, as: UTF8.self) }
    // Besides spaces, controls and non-ASCII: what RFC 3986 never allows in a URI, " < > \ ^ ` { | },
    // which would also break out of the report's attributes.
    let notInLinks: [UInt8] = Array(#""<>\^`{|}"#.utf8)
    for b in url where b <= 0x20 || b >= 0x7F || notInLinks.contains(b) {
        return b > 0x20
            ? "'\(shown())' has characters that are not allowed in a link (percent-encode them)" : "'\(shown())' contains spaces"
    }
    if url.count > 2000 { return "is longer than 2,000 characters" }
    return nil
}

/// One `@` with something before it and a dotted domain after it; no spaces, commas or semicolons.
func looksLikeEmail(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    var at = -1
    for (i, b) in bytes.enumerated() {
        if b == UInt8(ascii: "@") {
            if at >= 0 { return false }
            at = i
        } else if b == UInt8(ascii: " ") || b == UInt8(ascii: ",") || b == UInt8(ascii: ";") || b < 0x20 {
            return false
        }
    }
    guard at > 0 else { return false }
    let domain = bytes[(at + 1)...]
    return domain.contains(UInt8(ascii: ".")) && domain.first != UInt8(ascii: ".") && domain.last != UInt8(ascii: ".")
}
