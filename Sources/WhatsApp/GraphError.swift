import Dispatcher
import Foundation

/// What the dispatcher does about a Graph API error, from Meta's code (never the HTTP status or
/// subcode, which Meta says are unreliable). See shared docs, "Errors".
public enum ErrorClass: String, Sendable, Codable {
    /// 4, 80007, 130429: slow the whole sender down and send the same message again.
    case throttled
    /// 131056: this recipient only, again after 4^x seconds.
    case pairRate
    /// 1, 2, 131000, 131016, 133004, 131057, and HTTP 5xx without an envelope: bounded retries with jitter.
    case transient
    /// 131049: not before 24 hours.
    case waitDay
    /// Token, permissions, payment, template missing or paused, account restricted: nothing else will succeed.
    case halt
    /// The message will never be delivered as it is: failed, with the reason.
    case final
    /// A code we do not know: final for the message; many in a row halt the run.
    case unknownCode

    public static func of(code: Int?) -> ErrorClass {
        guard let code else { return .transient }
        switch code {
        case 4, 80007, 130429: return .throttled
        case 131056: return .pairRate
        case 1, 2, 131000, 131016, 133004, 131057: return .transient
        case 131049: return .waitDay
        case 0, 190, 3, 10, 200...299, 368, 131005, 131031, 131037, 131042, 131045, 133010, 132001, 132015, 132016, 131048, 131064:
            return .halt
        case 100, 131008, 131009, 131026, 131047, 131050, 131051, 131053, 132000, 132005, 132007, 132012, 130472, 130403, 131021,
            132018:
            return .final
        default: return .unknownCode
        }
    }

    /// Account-level failures that Meta may report in a status webhook after accepting the send
    /// (payment, spam limits, a locked or restricted account, a paused template, media upload):
    /// one of them during a run halts it, as the same code answered at once would.
    public static let webhookHaltCodes: [Int] = [368, 131005, 131031, 131037, 131042, 131045, 131048, 131053, 132015, 132016]

    /// Refusals of the request's shape or of the template's parameters: one is that message's
    /// problem, the same one several times in a row is the template's (the run halts).
    public static let requestShapeCodes: Set<Int> = [100, 132000, 132012, 132018]

    /// Worth a `dispatcher retry`: the reason may have passed. The one meaning of "retryable":
    /// the engine, `retry`, `/send-invoice` and the reports all ask this. A halt (token, payment,
    /// account) is retryable once its cause is fixed; nothing of it reached the tenant.
    public var isRetryable: Bool {
        self == .throttled || self == .pairRate || self == .transient || self == .waitDay || self == .halt
    }

    /// The earliest time (Unix seconds) a message that failed at `failedAt` may be sent again:
    /// 24 hours later for Meta's per-user limit (131049), at once otherwise.
    public func earliestRetry(failedAt: Double?) -> Double? {
        guard self == .waitDay, let failedAt else { return nil }
        return failedAt + 86_400
    }
}

/// An error answered by the Graph API (or a transport failure shaped like one).
public struct GraphError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int?
    public var title: String
    public var details: String?
    public var httpStatus: Int
    /// Seconds, from a `Retry-After` header.
    public var retryAfter: Double?
    public var fbtraceID: String?

    public init(code: Int?, title: String, details: String? = nil, httpStatus: Int, retryAfter: Double? = nil, fbtraceID: String? = nil) {
        self.code = code
        self.title = title
        self.details = details
        self.httpStatus = httpStatus
        self.retryAfter = retryAfter
        self.fbtraceID = fbtraceID
    }

    public var errorClass: ErrorClass { ErrorClass.of(code: code) }

    public var description: String {
        "\(code.map { "(#\($0)) " } ?? "")\(title)\(details.map { ": \($0)" } ?? "") [HTTP \(httpStatus)]"
    }
}

/// Meta's error envelope: `{"error":{"message","type","code","error_data":{"details"},"error_subcode","fbtrace_id"}}`.
struct GraphErrorEnvelope: Decodable {
    var error: Body

    struct Body: Decodable {
        var message: String?
        var type: String?
        var code: Int?
        var errorData: ErrorData?
        var errorSubcode: Int?
        var fbtraceID: String?
        var errorUserTitle: String?

        struct ErrorData: Decodable { var details: String? }

        enum CodingKeys: String, CodingKey {
            case message, type, code
            case errorData = "error_data"
            case errorSubcode = "error_subcode"
            case fbtraceID = "fbtrace_id"
            case errorUserTitle = "error_user_title"
        }
    }
}

/// Meta's answer to an accepted send.
struct SendResponse: Decodable, Equatable {
    var contacts: [Contact]?
    var messages: [Message]?

    struct Contact: Decodable, Equatable {
        var input: String?
        var waID: String?
        enum CodingKeys: String, CodingKey { case input; case waID = "wa_id" }
    }

    struct Message: Decodable, Equatable {
        var id: String
        var messageStatus: String?
        enum CodingKeys: String, CodingKey { case id; case messageStatus = "message_status" }
    }

    /// Meta's answer read from its bytes when it is the plain shape Meta sends, else by
    /// `JSONDecoder`, which then decides; nil when neither can read it. The same reader, on the same
    /// terms, as `WebhookPayload.decode`: it never decides differently (held equal by tests), and
    /// saves `JSONDecoder`'s share of a send (about 4 % of the sender's CPU at 1,000/s).
    static func decode(_ body: Data) -> SendResponse? {
        if let plain = body.withUnsafeBytes({ fromPlainBytes($0.bindMemory(to: UInt8.self)) }) { return plain }
        return try? JSONDecoder().decode(SendResponse.self, from: body)
    }

    /// The answer, or nil when the bytes are not for the plain reader to decide.
    static func fromPlainBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> SendResponse? {
        guard !bytes.contains(where: { $0 >= 0x80 }) else { return nil }
        var reader = PlainJSONReader(bytes)
        var response = SendResponse()
        let read = reader.object { r, key in
            switch key {
            case "contacts":
                return r.array(into: &response.contacts) { r in
                    var contact = Contact()
                    let read = r.object { r, key in
                        switch key {
                        case "input": return r.string(into: &contact.input)
                        case "wa_id": return r.string(into: &contact.waID)
                        default: return r.skipValue()
                        }
                    }
                    return read ? contact : nil
                }
            case "messages":
                return r.array(into: &response.messages) { r in
                    var id: String? = nil
                    var status: String? = nil
                    let read = r.object { r, key in
                        switch key {
                        case "id": return r.string(into: &id)
                        case "message_status": return r.string(into: &status)
                        default: return r.skipValue()
                        }
                    }
                    // Without an id (or with null) JSONDecoder refuses the whole answer: its call.
                    guard read, let id else { return nil }
                    return Message(id: id, messageStatus: status)
                }
            default: return r.skipValue()
            }
        }
        guard read, reader.atEnd() else { return nil }
        return response
    }
}
