import Crypto
import Dispatcher
import Foundation
import Hummingbird

/// The API's bearer tokens: `DISPATCHER_API_TOKEN`, and, when `DISPATCHER_JWT_SECRET` is set, the
/// property system's own HS256 access tokens (signature and expiry checked). Tokens are compared
/// in constant time and never logged.
struct BearerAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiToken: String?
    let jwt: HS256Verifier?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let challenge: HTTPFields = [.wwwAuthenticate: "Bearer"]
        guard let header = request.headers[.authorization], header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw APIError(.unauthorized, "a bearer token is required (Authorization: Bearer …)", headers: challenge)
        }
        let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        if let apiToken, constantTimeEquals(token, apiToken) {
            return try await next(request, context)
        }
        if let jwt {
            switch jwt.verify(token, now: Date().timeIntervalSince1970) {
            case .valid: return try await next(request, context)
            case .expired: throw APIError(.unauthorized, "the access token has expired", headers: challenge)
            case .invalid: break
            }
        }
        throw APIError(.unauthorized, "the bearer token is not valid", headers: challenge)
    }
}

/// Verifies HS256 JSON Web Tokens: the property system's access tokens.
///
/// Written here rather than taken from jwt-kit: only HS256 with an expiry is needed, and jwt-kit
/// would add X.509, ASN.1 and big-integer packages to every build for it. Other algorithms
/// (`none` included) are refused.
public struct HS256Verifier: Sendable {
    private let key: SymmetricKey

    public init(secret: String) {
        key = SymmetricKey(data: Array(secret.utf8))
    }

    public enum Verdict: Equatable, Sendable {
        case valid
        case expired
        case invalid
    }

    public func verify(_ token: String, now: Double) -> Verdict {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = base64URLDecode(parts[0]), let payloadBytes = base64URLDecode(parts[1]),
            let signature = base64URLDecode(parts[2]),
            let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
            header["alg"] as? String == "HS256"
        else { return .invalid }
        let signed = Array("\(parts[0]).\(parts[1])".utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signed, using: key) else { return .invalid }
        guard let payload = try? JSONSerialization.jsonObject(with: Data(payloadBytes)) as? [String: Any],
            let exp = (payload["exp"] as? NSNumber)?.doubleValue
        else { return .invalid }  // a token that never expires is not accepted
        if let nbf = (payload["nbf"] as? NSNumber)?.doubleValue, nbf > now + 60 { return .invalid }
        return exp > now ? .valid : .expired
    }

    /// Signs a payload (tests, and a way to mint a token for a script).
    public func sign(_ payload: [String: Any]) throws -> String {
        let header = base64URLEncode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let body = base64URLEncode(Array(try JSONSerialization.data(withJSONObject: payload, options: [.sortedKeys])))
        let mac = HMAC<SHA256>.authenticationCode(for: Array("\(header).\(body)".utf8), using: key)
        return "\(header).\(body).\(base64URLEncode(Array(mac)))"
    }
}

func base64URLDecode(_ text: Substring) -> [UInt8]? {
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    return Data(base64Encoded: s).map(Array.init)
}

func base64URLEncode(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}
