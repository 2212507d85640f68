import Foundation

extension WebhookPayload {
    /// Reads Meta's webhook JSON: directly from its bytes when they are the plain shape Meta
    /// sends, else with `JSONDecoder`, which then decides (and explains any error).
    ///
    /// `JSONDecoder` spent about 60 µs on a one-status payload, the largest single cost of a
    /// POST in `serve` (perf, docs/benchmarks.md); this reader spends a few µs. It never decides
    /// differently: on anything it does not settle exactly as `JSONDecoder` would (a byte outside
    /// ASCII, a lone surrogate escape, a known key twice, a value of another type than expected, a
    /// number with a fraction or exponent where an integer goes, nesting past 64, invalid JSON) it
    /// gives up and `JSONDecoder` reads the payload. Held equal to `JSONDecoder` by tests and by the
    /// webhook fuzzer (`ServerFuzzTargets.webhook`).
    public static func decode(_ bytes: [UInt8]) throws -> WebhookPayload {
        if let payload = fromPlainBytes(bytes) { return payload }
        return try JSONDecoder().decode(WebhookPayload.self, from: Data(bytes))
    }

    /// The payload, or nil when the bytes are not for this reader to decide (see `decode`).
    public static func fromPlainBytes(_ bytes: [UInt8]) -> WebhookPayload? {
        // Meta escapes every non-ASCII character (`\u00e9`): other bytes go to JSONDecoder, which
        // knows what it accepts of them.
        guard !bytes.contains(where: { $0 >= 0x80 }) else { return nil }
        return bytes.withUnsafeBufferPointer { buffer -> WebhookPayload? in
            var reader = PlainJSONReader(buffer)
            var payload = WebhookPayload()
            let read = reader.object { r, key in
                switch key {
                case "object": return r.string(into: &payload.object)
                case "entry": return r.array(into: &payload.entry) { r in r.entry() }
                default: return r.skipValue()
                }
            }
            guard read, reader.atEnd() else { return nil }
            return payload
        }
    }
}

/// A strict reader of JSON text over ASCII bytes, for `WebhookPayload.fromPlainBytes`. Every
/// method returns false (or nil) to mean "not mine to decide", never a different answer.
struct PlainJSONReader {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0
    /// Deeper than this goes to JSONDecoder (Meta's payloads nest 6 levels).
    private let maxDepth = 64

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    private mutating func skipWhitespace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private mutating func peek() -> UInt8? {
        skipWhitespace()
        return i < bytes.count ? bytes[i] : nil
    }

    mutating func atEnd() -> Bool {
        skipWhitespace()
        return i == bytes.count
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard i + count <= bytes.count else { return false }
        for k in 0..<count where bytes[i + k] != word.utf8Start[k] { return false }
        i += count
        return true
    }

    /// `null`, consumed; false (nothing consumed) for anything else.
    private mutating func null() -> Bool { peek() == UInt8(ascii: "n") && literal("null") }

    // MARK: Containers

    /// Calls `member` with each key (known keys must not repeat: JSONDecoder's choice between two is
    /// not this reader's to guess); `member` reads the value.
    mutating func object(_ member: (inout PlainJSONReader, String) -> Bool) -> Bool {
        guard peek() == UInt8(ascii: "{"), depth < maxDepth else { return false }
        i += 1
        depth += 1
        defer { depth -= 1 }
        var seen = Set<String>()
        if peek() == UInt8(ascii: "}") {
            i += 1
            return true
        }
        while true {
            guard peek() == UInt8(ascii: "\""), let key = rawString() else { return false }
            guard peek() == UInt8(ascii: ":") else { return false }
            i += 1
            guard seen.insert(key).inserted else { return false }
            guard member(&self, key) else { return false }
            switch peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "}"):
                i += 1
                return true
            default: return false
            }
        }
    }

    /// An optional list of objects: `null` or `[` elements `]`, each read by `element`.
    mutating func array<T>(into target: inout [T]?, _ element: (inout PlainJSONReader) -> T?) -> Bool {
        if null() {
            target = nil
            return true
        }
        guard peek() == UInt8(ascii: "["), depth < maxDepth else { return false }
        i += 1
        depth += 1
        defer { depth -= 1 }
        var items: [T] = []
        if peek() == UInt8(ascii: "]") {
            i += 1
            target = items
            return true
        }
        while true {
            guard let item = element(&self) else { return false }
            items.append(item)
            switch peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "]"):
                i += 1
                target = items
                return true
            default: return false
            }
        }
    }

    /// An optional object: `null`, or `{…}` read by `read` into a value made by `make`.
    mutating func nested<T>(into target: inout T?, make: () -> T, _ read: (inout PlainJSONReader, inout T, String) -> Bool) -> Bool {
        if null() {
            target = nil
            return true
        }
        var value = make()
        guard object({ r, key in read(&r, &value, key) }) else { return false }
        target = value
        return true
    }

    // MARK: Scalars

    mutating func string(into target: inout String?) -> Bool {
        if null() {
            target = nil
            return true
        }
        guard peek() == UInt8(ascii: "\""), let value = rawString() else { return false }
        target = value
        return true
    }

    mutating func bool(into target: inout Bool?) -> Bool {
        switch peek() {
        case UInt8(ascii: "t") where literal("true"): target = true
        case UInt8(ascii: "f") where literal("false"): target = false
        case UInt8(ascii: "n") where literal("null"): target = nil
        default: return false
        }
        return true
    }

    mutating func int(into target: inout Int?) -> Bool {
        if null() {
            target = nil
            return true
        }
        guard let value = integer(), let int = Int(exactly: value) else { return false }
        target = int
        return true
    }

    /// Unix seconds as Meta writes them (a string) or as a whole number; a number with a fraction
    /// or exponent is JSONDecoder's.
    mutating func unixSeconds(into target: inout UnixSeconds?) -> Bool {
        if null() {
            target = nil
            return true
        }
        if peek() == UInt8(ascii: "\"") {
            guard let text = rawString() else { return false }
            target = UnixSeconds(text: text)
            return true
        }
        guard let value = integer() else { return false }
        target = UnixSeconds(value)
        return true
    }

    /// `-?(0|[1-9][0-9]*)` not followed by a fraction or exponent, within Int64.
    private mutating func integer() -> Int64? {
        skipWhitespace()
        let start = i
        var negative = false
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") {
            negative = true
            i += 1
        }
        let digitsStart = i
        var value: Int64 = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            let digit = Int64(bytes[i] - 0x30)
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = negative ? times.subtractingReportingOverflow(digit) : times.addingReportingOverflow(digit)
            guard !o1, !o2 else { return nil }
            value = sum
            i += 1
        }
        let digits = i - digitsStart
        guard digits > 0, !(digits > 1 && bytes[digitsStart] == 0x30) else { return nil }
        if i < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[i]) {
            i = start
            return nil
        }
        return value
    }

    /// A string at `"`, unescaped; nil on a control character, a bad escape or a lone surrogate.
    private mutating func rawString() -> String? {
        i += 1  // the opening quote
        let start = i
        // The common case: no escape, copied as it stands.
        while i < bytes.count, bytes[i] != UInt8(ascii: "\""), bytes[i] != UInt8(ascii: "\\") {
            guard bytes[i] >= 0x20 else { return nil }
            i += 1
        }
        guard i < bytes.count else { return nil }
        if bytes[i] == UInt8(ascii: "\"") {
            defer { i += 1 }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        }
        var scalars = String.UnicodeScalarView()
        for k in start..<i { scalars.append(Unicode.Scalar(bytes[k])) }
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\"") {
                i += 1
                return String(scalars)
            }
            guard byte >= 0x20 else { return nil }
            guard byte == UInt8(ascii: "\\") else {
                scalars.append(Unicode.Scalar(byte))
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { return nil }
            let escaped = bytes[i + 1]
            i += 2
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(Unicode.Scalar(escaped))
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                guard let unit = hex4() else { return nil }
                if (0xD800...0xDBFF).contains(unit) {
                    // A pair: the high half, then `\u` and the low half.
                    guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else { return nil }
                    i += 2
                    guard let low = hex4(), (0xDC00...0xDFFF).contains(low),
                        let scalar = Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                    else { return nil }
                    scalars.append(scalar)
                } else {
                    guard let scalar = Unicode.Scalar(unit) else { return nil }  // a lone low half
                    scalars.append(scalar)
                }
            default: return nil
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard i + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let digit: UInt32
            switch c {
            case 0x30...0x39: digit = UInt32(c - 0x30)
            case 0x41...0x46: digit = UInt32(c - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(c - 0x61 + 10)
            default: return nil
            }
            value = value << 4 | digit
            i += 1
        }
        return value
    }

    /// Any JSON value, checked to the grammar and skipped.
    mutating func skipValue() -> Bool {
        switch peek() {
        case UInt8(ascii: "{"): return object { r, _ in r.skipValue() }
        case UInt8(ascii: "["):
            var ignored: [Bool]? = nil
            return array(into: &ignored) { r in r.skipValue() ? true : nil }
        case UInt8(ascii: "\""): return rawString() != nil
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        default: return number()
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    private mutating func number() -> Bool {
        func digits(_ r: inout PlainJSONReader) -> Int {
            let start = r.i
            while r.i < r.bytes.count, r.bytes[r.i] >= 0x30, r.bytes[r.i] <= 0x39 { r.i += 1 }
            return r.i - start
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        let first = i
        let whole = digits(&self)
        guard whole > 0, !(whole > 1 && bytes[first] == 0x30) else { return false }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digits(&self) > 0 else { return false }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits(&self) > 0 else { return false }
        }
        return true
    }
}

// MARK: - Meta's objects, key by key (the CodingKeys of WebhookPayload.swift)

extension PlainJSONReader {
    mutating func entry() -> WebhookPayload.Entry? {
        var entry = WebhookPayload.Entry()
        let read = object { r, key in
            switch key {
            case "id": return r.string(into: &entry.id)
            case "changes": return r.array(into: &entry.changes) { r in r.change() }
            default: return r.skipValue()
            }
        }
        return read ? entry : nil
    }

    mutating func change() -> WebhookPayload.Change? {
        var change = WebhookPayload.Change()
        let read = object { r, key in
            switch key {
            case "field": return r.string(into: &change.field)
            case "value": return r.nested(into: &change.value, make: WebhookPayload.Value.init) { r, v, key in r.value(&v, key) }
            default: return r.skipValue()
            }
        }
        return read ? change : nil
    }

    mutating func value(_ v: inout WebhookPayload.Value, _ key: String) -> Bool {
        switch key {
        case "messaging_product": return string(into: &v.messagingProduct)
        case "metadata":
            return nested(into: &v.metadata, make: WebhookPayload.Metadata.init) { r, m, key in
                switch key {
                case "display_phone_number": return r.string(into: &m.displayPhoneNumber)
                case "phone_number_id": return r.string(into: &m.phoneNumberID)
                default: return r.skipValue()
                }
            }
        case "statuses": return array(into: &v.statuses) { r in r.status() }
        case "messages": return array(into: &v.messages) { r in r.inbound() }
        case "contacts":
            return array(into: &v.contacts) { r in
                var contact = WebhookPayload.Contact()
                let read = r.object { r, key in
                    switch key {
                    case "wa_id": return r.string(into: &contact.waID)
                    case "user_id": return r.string(into: &contact.userID)
                    default: return r.skipValue()
                    }
                }
                return read ? contact : nil
            }
        case "errors": return array(into: &v.errors) { r in r.errorDetail() }
        default: return skipValue()
        }
    }

    mutating func status() -> WebhookPayload.Status? {
        var s = WebhookPayload.Status()
        let read = object { r, key in
            switch key {
            case "id": return r.string(into: &s.id)
            case "status": return r.string(into: &s.status)
            case "timestamp": return r.unixSeconds(into: &s.timestamp)
            case "recipient_id": return r.string(into: &s.recipientID)
            case "recipient_user_id": return r.string(into: &s.recipientUserID)
            case "biz_opaque_callback_data": return r.string(into: &s.bizOpaqueCallbackData)
            case "errors": return r.array(into: &s.errors) { r in r.errorDetail() }
            case "pricing":
                return r.nested(into: &s.pricing, make: WebhookPayload.Pricing.init) { r, p, key in
                    switch key {
                    case "billable": return r.bool(into: &p.billable)
                    case "pricing_model": return r.string(into: &p.pricingModel)
                    case "category": return r.string(into: &p.category)
                    case "type": return r.string(into: &p.type)
                    default: return r.skipValue()
                    }
                }
            default: return r.skipValue()
            }
        }
        return read ? s : nil
    }

    mutating func errorDetail() -> WebhookPayload.ErrorDetail? {
        var e = WebhookPayload.ErrorDetail()
        let read = object { r, key in
            switch key {
            case "code": return r.int(into: &e.code)
            case "title": return r.string(into: &e.title)
            case "message": return r.string(into: &e.message)
            case "href": return r.string(into: &e.href)
            case "error_data":
                return r.nested(into: &e.errorData, make: WebhookPayload.ErrorDetail.ErrorData.init) { r, d, key in
                    key == "details" ? r.string(into: &d.details) : r.skipValue()
                }
            default: return r.skipValue()
            }
        }
        return read ? e : nil
    }

    mutating func inbound() -> WebhookPayload.InboundMessage? {
        var m = WebhookPayload.InboundMessage()
        let read = object { r, key in
            switch key {
            case "from": return r.string(into: &m.from)
            case "from_user_id": return r.string(into: &m.fromUserID)
            case "id": return r.string(into: &m.id)
            case "timestamp": return r.unixSeconds(into: &m.timestamp)
            case "type": return r.string(into: &m.type)
            case "text":
                return r.nested(into: &m.text, make: WebhookPayload.InboundMessage.Text.init) { r, t, key in
                    key == "body" ? r.string(into: &t.body) : r.skipValue()
                }
            default: return r.skipValue()
            }
        }
        return read ? m : nil
    }
}
