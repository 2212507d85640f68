import Crypto
import Dispatcher

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
