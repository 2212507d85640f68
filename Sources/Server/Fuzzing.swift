import Crypto
import Foundation
import Store
import WhatsApp

/// The webhook and token parsers for the fuzzers and the corpus replay test (see `FuzzTargets`
/// in Dispatcher): any bytes, no crash, and the properties checked here hold.
public enum ServerFuzzTargets {
    static let signer = WebhookSignature(appSecret: "fuzz-app-secret")
    static let verifier = HS256Verifier(secret: fuzzSecret)!
    static let fuzzSecret = "fuzz-jwt-secret-of-at-least-32-bytes"

    /// A webhook body as the receiver takes it: signature, then the payload parsed and flattened.
    public static func webhook(_ bytes: [UInt8]) {
        // The signature of these very bytes is valid; any other header is not.
        let header = signer.header(for: bytes)
        check(signer.verify(header: header, body: bytes) == .valid, "own signature refused")
        let other = String(decoding: bytes.prefix(80), as: UTF8.self)
        check(signer.verify(header: other, body: bytes) != .valid || other == header, "a made-up header was valid: \(other)")
        _ = WebhookSignature.shape(of: other)
        // The receiver's own reader decides only what JSONDecoder decides the same way.
        let decoded = try? JSONDecoder().decode(WebhookPayload.self, from: Data(bytes))
        if let plain = WebhookPayload.fromPlainBytes(bytes) {
            check(decoded == plain, "the plain reader read \(plain), JSONDecoder \(decoded.map { "\($0)" } ?? "an error")")
        }
        guard let payload = decoded else { return }
        let contents = WebhookContents(payload)
        check(contents.statuses.count <= bytes.count, "more statuses than bytes")
        for message in contents.inbound {
            check(message.from != nil || message.fromUserID != nil, "an inbound message kept with nobody to answer")
            _ = message.isOptOut
        }
    }

    /// A bearer token: as given, and signed correctly around the input's header and payload (so
    /// that their JSON is parsed, not only refused by the signature).
    public static func jwt(_ bytes: [UInt8]) async {
        let verdict = await verifier.verify(String(decoding: bytes, as: UTF8.self), now: 1_800_000_000)
        check(verdict != .valid || bytes.count > 40, "a short token was valid")
        let split = bytes.firstIndex(of: 0x0A) ?? bytes.count / 2
        let header = base64URL(Array(bytes[..<split]))
        let payload = base64URL(Array(bytes[min(split + 1, bytes.count)...]))
        let signed = Array("\(header).\(payload)".utf8)
        let signature = base64URL(
            Array(HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: Array(fuzzSecret.utf8)))))
        _ = await verifier.verify("\(header).\(payload).\(signature)", now: 1_800_000_000)
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz property violated: \(message())") }
    }
}
