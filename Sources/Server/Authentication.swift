import Dispatcher
import Foundation
import Hummingbird
public import JWTKit
import Synchronization

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
            switch await jwt.verify(token, now: Date().timeIntervalSince1970) {
            case .valid: return try await next(request, context)
            case .expired: throw APIError(.unauthorized, "the access token has expired", headers: challenge)
            case .invalid: break
            }
        }
        throw APIError(.unauthorized, "the bearer token is not valid", headers: challenge)
    }
}

/// The property system's access tokens: HS256 JSON Web Tokens signed with its secret (its
/// `ACCESS_TOKEN_SECRET`; here `DISPATCHER_JWT_SECRET`), verified by jwt-kit. A token must carry an
/// expiry (one that never expires is refused) and may carry a not-before (60 s of clock skew
/// allowed). Only our HMAC key verifies a signature, whatever the token's header claims (`none`
/// included).
///
/// A secret shorter than 32 bytes is refused (jwt-kit asserts on such keys, and RFC 7518 forbids
/// them): `serve` will not start with one.
///
/// jwt-kit costs 37 s more on a clean debug build on this machine's two cores (a package with
/// swift-crypto alone: 127 s; with jwt-kit: 163 s) and 18 MB of debug binary; it replaces our own
/// base64url, header and signature parsing, and the second HMAC check beside the webhook's.
public final class HS256Verifier: Sendable {
    private let keys = JWTKeyCollection()
    private let key: HMACKey
    /// The key is added to the collection (an actor) on first use.
    private let ready = Atomic<Bool>(false)

    /// Nil when the secret is shorter than HS256 allows (`problem(withSecret:)` says why): jwt-kit
    /// refuses such keys, and so do we, rather than verify with a guessable one.
    public init?(secret: String) {
        guard Self.problem(withSecret: secret) == nil else { return nil }
        key = HMACKey(from: secret)
    }

    /// Why `secret` cannot sign HS256 tokens, or nil. RFC 7518 (3.2): an HS256 key must be at least
    /// as long as the hash, 32 bytes; a shorter one is refused at startup (`serve`, `doctor`).
    public static func problem(withSecret secret: String) -> String? {
        let bytes = secret.utf8.count
        guard bytes < 32 else { return nil }
        return "DISPATCHER_JWT_SECRET is \(bytes) bytes; HS256 needs at least 32 (RFC 7518, 3.2): "
            + "set a longer secret in the property system (ACCESS_TOKEN_SECRET) and here"
    }

    public enum Verdict: Equatable, Sendable {
        case valid
        case expired
        case invalid
    }

    private func collection() async -> JWTKeyCollection {
        if !ready.load(ordering: .acquiring) {
            // Two first callers may both add it: the second replaces the first with the same key.
            await keys.add(hmac: key, digestAlgorithm: .sha256)
            ready.store(true, ordering: .releasing)
        }
        return keys
    }

    /// Whether `token` is one of the property system's, valid at `now` (Unix seconds).
    public func verify(_ token: String, now: Double) async -> Verdict {
        guard let claims = try? await collection().verify(token, as: AccessClaims.self), let exp = claims.exp else {
            return .invalid
        }
        if let nbf = claims.nbf, nbf.value.timeIntervalSince1970 > now + 60 { return .invalid }
        return exp.value.timeIntervalSince1970 > now ? .valid : .expired
    }

    /// Signs claims with this secret (tests, and a way to mint a token for a script).
    public func sign(_ claims: AccessClaims) async throws -> String {
        try await collection().sign(claims)
    }
}

/// What we read of the property system's access tokens: the expiry and a not-before. Its other
/// claims (`account`…) are not decoded, so no shape of theirs can make a valid token invalid.
public struct AccessClaims: JWTPayload, Equatable {
    public var exp: ExpirationClaim?
    public var nbf: NotBeforeClaim?

    /// Expiring at `expires` (Unix seconds), or never (refused).
    public init(expires: Double?, notBefore: Double? = nil) {
        exp = expires.map { ExpirationClaim(value: Date(timeIntervalSince1970: $0)) }
        nbf = notBefore.map { NotBeforeClaim(value: Date(timeIntervalSince1970: $0)) }
    }

    /// The times are checked by `HS256Verifier.verify` against the time it is given (tests and the
    /// fuzzer fix it); jwt-kit has checked the signature when it calls this.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}
