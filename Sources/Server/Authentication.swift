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
        await claims(token, now: now).verdict
    }

    /// The verdict and, when valid, the token's claims.
    public func claims(_ token: String, now: Double) async -> (verdict: Verdict, claims: AccessClaims?) {
        guard let claims = try? await collection().verify(token, as: AccessClaims.self), let exp = claims.exp else {
            return (.invalid, nil)
        }
        if let nbf = claims.nbf, nbf.value.timeIntervalSince1970 > now + 60 { return (.invalid, nil) }
        return exp.value.timeIntervalSince1970 > now ? (.valid, claims) : (.expired, nil)
    }

    /// Signs claims with this secret (tests, and a way to mint a token for a script).
    public func sign(_ claims: AccessClaims) async throws -> String {
        try await collection().sign(claims)
    }
}

/// What we read of the property system's access tokens: the expiry, a not-before, and the
/// account's email (`account.email`: its landlord tokens are `{type, account}`), which says which
/// organizations the caller belongs to. The account is read leniently and the other claims not at
/// all, so that no shape of theirs can make a valid token invalid.
public struct AccessClaims: JWTPayload, Equatable {
    public var exp: ExpirationClaim?
    public var nbf: NotBeforeClaim?
    public var account: Account?

    public struct Account: Codable, Equatable, Sendable {
        public var email: String?

        public init(email: String?) { self.email = email }

        public init(from decoder: any Decoder) throws {
            email = try? decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(String.self, forKey: .email)
        }

        enum CodingKeys: String, CodingKey { case email }
    }

    enum CodingKeys: String, CodingKey { case exp, nbf, account }

    /// Expiring at `expires` (Unix seconds), or never (refused); for the account with `email`.
    public init(expires: Double?, notBefore: Double? = nil, email: String? = nil) {
        exp = expires.map { ExpirationClaim(value: Date(timeIntervalSince1970: $0)) }
        nbf = notBefore.map { NotBeforeClaim(value: Date(timeIntervalSince1970: $0)) }
        account = email.map { Account(email: $0) }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        exp = try c.decodeIfPresent(ExpirationClaim.self, forKey: .exp)
        nbf = try c.decodeIfPresent(NotBeforeClaim.self, forKey: .nbf)
        account = try? c.decodeIfPresent(Account.self, forKey: .account)
    }

    /// The times are checked by `HS256Verifier.verify` against the time it is given (tests and the
    /// fuzzer fix it); jwt-kit has checked the signature when it calls this.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Which organizations a caller of the API reaches. With organizations from a configuration file
/// (`serve --config`), a property-system token reaches only the organizations whose `members`
/// list its account's email; the static token (`DISPATCHER_API_TOKEN`) is the operator's and
/// reaches all. Without the file (one organization) every valid token reaches everything, as
/// before. A run belongs to an organization by its name: `RUN@ORGANIZATION` (batch lanes) and
/// `api-DATE@ORGANIZATION` (`/send-invoice`).
public struct OrganizationAccess: Sendable, Equatable {
    /// Organization id → its members' emails (lowercased).
    public var members: [String: Set<String>]

    public init(members: [String: [String]]) {
        self.members = members.mapValues { Set($0.map { $0.lowercased() }) }
    }

    /// The organizations the account with `email` belongs to.
    public func organizations(of email: String?) -> Set<String> {
        guard let email = email?.lowercased(), !email.isEmpty else { return [] }
        return Set(members.filter { $0.value.contains(email) }.keys)
    }

    /// Whether a caller reaching `organizations` (nil: all) may see `run`.
    public static func reaches(_ organizations: Set<String>?, run: String) -> Bool {
        guard let organizations else { return true }
        guard let at = run.lastIndex(of: "@") else { return false }
        return organizations.contains(String(run[run.index(after: at)...]))
    }
}
