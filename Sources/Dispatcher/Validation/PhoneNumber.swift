/// Normalises the phone numbers people type into E.164 digits (`18095550101`, no `+`).
///
/// The rule (also in docs/manifests.md):
/// 1. Spaces, dashes, dots, slashes and brackets are dropped.
/// 2. `+` or `00` in front: the number is international as written.
/// 3. Otherwise the configured default country code is put in front, as Meta itself does for a
///    number without `+`. One national trunk `0` is dropped first (`06…` in France). For code `1`
///    (North America and the Caribbean), eleven digits that already start with `1` are taken as
///    written. Without a default country code such a number is an error: we never guess a country.
/// 4. The result must be 8 to 15 digits (E.164), must not start with `0`, and a number in
///    country code `1` must have exactly 11 digits.
public struct PhoneNormalizer: Sendable {
    public var defaultCountryCode: String?

    public init(defaultCountryCode: String?) {
        self.defaultCountryCode = defaultCountryCode
    }

    /// The E.164 digits, or a message saying what is wrong (in words a user can act on).
    public func normalize(_ bytes: UnsafeBufferPointer<UInt8>) -> Result<String, PhoneError> {
        var digits: [UInt8] = []
        digits.reserveCapacity(16)
        var plus = false
        var sawDigit = false
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                digits.append(b)
                sawDigit = true
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "/"),
                UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "["), UInt8(ascii: "]"):
                break
            case UInt8(ascii: "+") where !sawDigit && !plus:
                plus = true
            case 0xC2 where i + 1 < bytes.count && bytes[i + 1] == 0xA0:  // no-break space
                i += 1
            default:
                let shown = b < 0x80 ? String(UnicodeScalar(b)) : "a non-ASCII character"
                return .failure(PhoneError("contains '\(shown)': only digits, spaces, dashes, dots, slashes and brackets are allowed"))
            }
            i += 1
        }
        if digits.isEmpty { return .failure(PhoneError("has no digits")) }
        var international: ArraySlice<UInt8>
        if plus {
            international = digits[...]
        } else if digits.count > 2 && digits[0] == UInt8(ascii: "0") && digits[1] == UInt8(ascii: "0") {
            international = digits.dropFirst(2)
        } else if let code = defaultCountryCode {
            var national = digits[...]
            if code == "1" && national.count == 11 && national.first == UInt8(ascii: "1") {
                international = national
            } else {
                if national.first == UInt8(ascii: "0") { national = national.dropFirst() }
                international = ArraySlice(Array(code.utf8) + national)
            }
        } else {
            return .failure(PhoneError("has no country code: write it as +CC… (e.g. +1 809 555 0101) or set --default-country-code"))
        }
        if international.first == UInt8(ascii: "0") {
            return .failure(PhoneError("has a country code starting with 0"))
        }
        if international.count < 8 {
            return .failure(PhoneError("is too short (\(international.count) digits with the country code; E.164 needs 8 to 15)"))
        }
        if international.count > 15 { return .failure(PhoneError("is too long (\(international.count) digits; E.164 allows 15)")) }
        if international.first == UInt8(ascii: "1") && international.count != 11 {
            return .failure(PhoneError("has \(international.count) digits; numbers with country code 1 have 11 (+1 and 10 digits)"))
        }
        return .success(String(decoding: international, as: UTF8.self))
    }

    public func normalize(_ text: String) -> Result<String, PhoneError> {
        var copy = text
        return copy.withUTF8 { normalize($0) }
    }
}

public struct PhoneError: Error, Sendable, Equatable {
    public var message: String
    init(_ message: String) { self.message = message }
}
