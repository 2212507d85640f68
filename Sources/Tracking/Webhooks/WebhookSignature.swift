import Crypto

/// Meta's `X-Hub-Signature-256`: `sha256=` and the lowercase hex HMAC-SHA256 of the raw body,
/// keyed with the app secret. Checked on the bytes as received (Meta escapes non-ASCII as
/// `\uXXXX`; re-serialising parsed JSON would give another signature), in constant time.
public struct WebhookSignature: Sendable {
    private let key: SymmetricKey

    public init(appSecret: String) {
        key = SymmetricKey(data: Array(appSecret.utf8))
    }

    public enum Verdict: String, Sendable {
        case valid
        case missing
        case malformed
        case mismatch
    }

    public func verify(header: String?, body: [UInt8]) -> Verdict {
        guard let mac = Self.mac(in: header) else { return Self.shape(of: header) }
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key) ? .valid : .mismatch
    }

    /// What the header alone says, before any body is read: `.missing`, `.malformed`, or `.valid`
    /// meaning only "well-formed, worth reading the body for".
    public static func shape(of header: String?) -> Verdict {
        guard let header, !header.isEmpty else { return .missing }
        return mac(in: header) == nil ? .malformed : .valid
    }

    private static func mac(in header: String?) -> [UInt8]? {
        guard let header, header.hasPrefix("sha256="), let mac = hexBytes(header.dropFirst(7)), mac.count == 32 else { return nil }
        return mac
    }

    /// The header value for a body: what Meta (and our sandbox) send.
    public func header(for body: [UInt8]) -> String {
        "sha256=" + lowercaseHex(HMAC<SHA256>.authenticationCode(for: body, using: key))
    }
}

/// Bytes as lowercase hex, two digits each (signatures, message ids).
public func lowercaseHex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

func hexBytes(_ text: Substring) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
        guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
        bytes.append(hi << 4 | lo)
        i += 2
    }
    return bytes
}

private func nibble(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
}

/// Compares two secrets in time that depends only on their lengths.
public func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var difference = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return difference == 0
}
