import Dispatcher

/// JSON written the way Meta writes its webhooks: compact, and every non-ASCII character escaped
/// as `\uXXXX` (UTF-16, surrogate pairs beyond the BMP), so signatures are computed over the same
/// kind of bytes Meta signs.
indirect enum MetaJSON: Sendable {
    case string(String)
    case number(Int64)
    case bool(Bool)
    case object([(String, MetaJSON)])
    case array([MetaJSON])

    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out)
        return out
    }

    func write(into out: inout [UInt8]) {
        switch self {
        case .string(let s): Self.writeString(s, into: &out)
        case .number(let n): out.append(contentsOf: String(n).utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let fields):
            out.append(UInt8(ascii: "{"))
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for unit in s.utf16 {
            switch unit {
            case 0x22: out.append(contentsOf: [0x5C, 0x22])
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x2F: out.append(contentsOf: [0x5C, 0x2F])  // Meta escapes slashes too
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x20..<0x7F: out.append(UInt8(unit))
            default:
                let hex = String(unit, radix: 16)
                out.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).utf8)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension AccountTemplate {
    /// The entry as Meta's template list writes it.
    var metaJSON: MetaJSON {
        var components: [MetaJSON] = []
        if let format = headerFormat {
            var header: [(String, MetaJSON)] = [("type", .string("HEADER")), ("format", .string(format))]
            if let headerText { header.append(("text", .string(headerText))) }
            components.append(.object(header))
        }
        components.append(.object([("type", .string("BODY")), ("text", .string(body))]))
        if let footer { components.append(.object([("type", .string("FOOTER")), ("text", .string(footer))])) }
        if !buttons.isEmpty {
            components.append(
                .object([
                    ("type", .string("BUTTONS")),
                    (
                        "buttons",
                        .array(
                            buttons.map { b in
                                var fields: [(String, MetaJSON)] = [("type", .string(b.type)), ("text", .string(b.text))]
                                if let url = b.url { fields.append(("url", .string(url))) }
                                return .object(fields)
                            })
                    ),
                ]))
        }
        var fields: [(String, MetaJSON)] = [("name", .string(name))]
        if let parameterFormat { fields.append(("parameter_format", .string(parameterFormat))) }
        fields += [("components", .array(components)), ("language", .string(language)), ("status", .string(status))]
        if let category { fields.append(("category", .string(category))) }
        if let quality { fields.append(("quality_score", .object([("score", .string(quality))]))) }
        if let id { fields.append(("id", .string(id))) }
        return .object(fields)
    }
}
