import Foundation

/// A rate card as imported by `dispatcher pricing import`: Meta's CSV as given, parsed when used
/// (the parser, not the store, knows Meta's layout).
public struct StoredRateCard: Sendable, Equatable {
    /// The first day the card applies, `YYYY-MM-DD`.
    public var effective: String
    public var currency: String
    /// Where it came from (the file's name, or Meta's page).
    public var source: String
    public var importedAt: Double
    public var text: String

    public init(effective: String, currency: String, source: String, importedAt: Double, text: String) {
        self.effective = effective
        self.currency = currency
        self.source = source
        self.importedAt = importedAt
        self.text = text
    }
}

/// SQLite's charge counts, added up in a pass over messages (`chargeCounts`, and the report's own
/// pass) rather than by GROUP BY, which sorts. Each message gives its landlord and currency (a
/// bucket the caller numbers), its number and what its statuses said of its pricing (kept on its
/// row, schema v10); the number's first four digits and the pricing are matched by their bytes
/// with those seen before (a run has a few: no String per row).
struct ChargeTally: Sendable {
    private struct Key: Hashable, Sendable { var bucket: Int32; var prefix: UInt32; var category: Int16; var type: Int16 }
    private var counts: [Key: Int] = [:]
    private var categories = ByteNames(), types = ByteNames()
    private var last: Key?
    private var lastCount = 0

    /// One message: `phone` its E.164 digits, `category` and `type` its pricing, nil when none.
    mutating func add(bucket: Int, phone: UnsafeRawBufferPointer?, category: UnsafeRawBufferPointer?, type: UnsafeRawBufferPointer?) {
        var prefix: UInt32 = 0
        if let phone {
            for i in 0..<min(4, phone.count) { prefix |= UInt32(phone[i]) << (8 * UInt32(i)) }
        }
        let category = category.map { categories.index($0) } ?? -1
        let type = type.map { types.index($0) } ?? -1
        let key = Key(bucket: Int32(bucket), prefix: prefix, category: Int16(category), type: Int16(type))
        // Runs of one key are common (one landlord's tenants in one country): counted apart.
        if key == last {
            lastCount += 1
        } else {
            flush()
            last = key
            lastCount = 1
        }
    }

    private mutating func flush() {
        if let last, lastCount > 0 { counts[last, default: 0] += lastCount }
        lastCount = 0
    }

    /// The counts, with each bucket's landlord and currency.
    func counts(buckets: (Int) -> (landlord: String?, currency: String)) -> [ChargeCount] {
        var tally = self
        tally.flush()
        return ChargeCount.merged(
            tally.counts.map { key, n in
                let (landlord, currency) = buckets(Int(key.bucket))
                let digits = (0..<4).map { UInt8(truncatingIfNeeded: key.prefix >> (8 * UInt32($0))) }.filter { $0 != 0 }
                return ChargeCount(
                    landlord: landlord, currency: currency, prefix: String(decoding: digits, as: UTF8.self),
                    category: key.category < 0 ? nil : tally.categories.names[Int(key.category)],
                    type: key.type < 0 ? nil : tally.types.names[Int(key.type)], messages: n)
            })
    }
}

/// Short strings read as bytes, numbered in the order first seen (a few per run: found by
/// comparing bytes, no hashing).
struct ByteNames: Sendable {
    private var bytes: [[UInt8]] = []
    private(set) var names: [String] = []

    mutating func index(_ new: UnsafeRawBufferPointer) -> Int {
        for (i, known) in bytes.enumerated() where known.count == new.count {
            if new.isEmpty || known.withUnsafeBytes({ memcmp($0.baseAddress!, new.baseAddress!, new.count) == 0 }) { return i }
        }
        bytes.append([UInt8](new))
        names.append(String(decoding: new, as: UTF8.self))
        return bytes.count - 1
    }
}

extension ChargeCount {
    /// Counts with the same landlord, currency, prefix and pricing added together, in order.
    static func merged(_ counts: [ChargeCount]) -> [ChargeCount] {
        var merged: [ChargeCount] = []
        var at: [String: Int] = [:]
        for c in counts {
            let key = [c.landlord.map { "=" + $0 } ?? "", c.currency, c.prefix, c.category ?? "", c.type ?? ""].joined(separator: "\u{1F}")
            if let i = at[key] { merged[i].messages += c.messages } else { at[key] = merged.count; merged.append(c) }
        }
        return merged.sorted {
            ($0.landlord ?? "", $0.currency, $0.prefix, $0.category ?? "", $0.type ?? "")
                < ($1.landlord ?? "", $1.currency, $1.prefix, $1.category ?? "", $1.type ?? "")
        }
    }
}

/// Messages of a run Meta delivered, grouped by what their price depends on: the landlord, the
/// start of the number (enough digits to tell its market: `1809`, `34`…), and the `pricing` the
/// statuses carried (nil when none did). Both engines give them in `ChargeCount.merged`'s order.
public struct ChargeCount: Sendable, Equatable {
    public var landlord: String?
    /// The invoice's currency (landlords.csv has a row per landlord and currency).
    public var currency: String
    /// The first four digits of the E.164 number.
    public var prefix: String
    /// `pricing.category` (`utility`, `marketing`, …).
    public var category: String?
    /// `pricing.type` (`regular`, `free_customer_service`, `free_entry_point`), or from the
    /// deprecated `billable` (`regular` when true, `free` when false).
    public var type: String?
    public var messages: Int

    public init(landlord: String?, currency: String, prefix: String, category: String?, type: String?, messages: Int) {
        self.landlord = landlord
        self.currency = currency
        self.prefix = prefix
        self.category = category
        self.type = type
        self.messages = messages
    }
}

/// Where an invoice's email stands. Never twice: a `sending` fallback that never finished (a crash
/// while the mail was handed over) is not sent again by itself; the operator checks and decides.
public enum FallbackState: String, Sendable, Codable, CaseIterable {
    /// Claimed; the mail is being handed over.
    case sending
    /// Handed over (to the mail transfer agent, or accepted by the property system's emailer).
    case sent
    /// The hand-over failed; a later `fallback` tries again.
    case failed
    /// Nothing to send it to: no email address. Someone has to call.
    case noAddress = "no_address"
}

/// An invoice WhatsApp could not carry, with what an email needs, and its fallback so far.
public struct FallbackCandidate: Sendable, Equatable {
    public var invoice: InvoiceRecord
    /// Why WhatsApp could not carry it: the error code of its failed message (131026…), or nil
    /// when it was skipped (the tenant opted out).
    public var errorCode: Int?
    public var reason: String
    public var fallback: FallbackRecord?
}

/// One invoice's fallback, as stored.
public struct FallbackRecord: Sendable, Equatable, Codable {
    public var run: String
    public var invoiceID: String
    public var via: String
    public var address: String?
    public var state: FallbackState
    public var detail: String?
    public var startedAt: Double
    public var finishedAt: Double?

    public init(
        run: String, invoiceID: String, via: String, address: String?, state: FallbackState, detail: String?, startedAt: Double,
        finishedAt: Double?
    ) {
        self.run = run
        self.invoiceID = invoiceID
        self.via = via
        self.address = address
        self.state = state
        self.detail = detail
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

/// Meta's codes for a message WhatsApp cannot carry to this tenant, whatever we retry: the number
/// is not on WhatsApp (131026), the business may not message that country (130497), the tenant
/// stopped marketing messages (131050). Invoices whose every message ended so (or was skipped
/// because the tenant opted out) are `fallback`'s candidates.
public let unreachableCodes: [Int] = [131026, 130497, 131050]

/// The SQL both engines share for the candidates: invoices of the run whose every message failed
/// with an unreachable code or was skipped as opted out (one that may still arrive, failed for
/// another reason, or was skipped as sent before keeps the invoice out).
enum FallbackSQL {
    static let codes = unreachableCodes.map(String.init).joined(separator: ", ")
    static func candidates(run: String) -> String {
        """
        SELECT i.invoice_id,
            MAX(CASE WHEN m.state = 'failed' AND m.error_code IN (\(codes)) THEN m.error_code END) AS code,
            MAX(CASE WHEN m.state = 'failed' AND m.error_code IN (\(codes)) THEN m.error_title END) AS title
        FROM invoices i JOIN messages m ON m.run = i.run AND m.invoice_id = i.invoice_id
        WHERE i.run = \(run)
        GROUP BY i.invoice_id
        HAVING SUM(CASE WHEN (m.state = 'failed' AND m.error_code IN (\(codes)))
                         OR (m.state = 'skipped' AND m.skip_reason LIKE 'opted out%') THEN 0 ELSE 1 END) = 0
        ORDER BY MIN(m.seq)
        """
    }

    /// Messages of a run in `states` by landlord, number prefix and the pricing their statuses
    /// carried: delivered (or read) ones for the cost after a run, queued ones for the estimate.
    static func charges(run: String, states: [MessageState], landlord: String? = nil) -> String {
        // One landlord's (`landlord`: its placeholder) through their index, not the whole run's.
        let inner = landlord.map { " AND mm.landlord = \($0)" } ?? ""
        let outer = landlord.map { " AND m.landlord = \($0)" } ?? ""
        return
            """
            SELECT i.landlord, i.currency, substr(m.phone, 1, 4), p.category, p.type, COUNT(*)
            FROM messages m
            JOIN invoices i ON i.run = m.run AND i.invoice_id = m.invoice_id
            LEFT JOIN (
                SELECT e.message_id, MAX(e.pricing_category) AS category, MAX(e.pricing_type) AS type
                FROM status_events e JOIN messages mm ON mm.id = e.message_id
                WHERE mm.run = \(run)\(inner) AND (e.pricing_category IS NOT NULL OR e.pricing_type IS NOT NULL)
                GROUP BY e.message_id
            ) p ON p.message_id = m.id
            WHERE m.run = \(run)\(outer) AND m.state IN (\(states.map { "'\($0.rawValue)'" }.joined(separator: ", ")))
            GROUP BY i.landlord, i.currency, substr(m.phone, 1, 4), p.category, p.type
            ORDER BY 1, 2, 3, 4, 5
            """
    }
}
