import Foundation
public import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Store

/// An error the API answers with, as `{"error": "…"}` and its status; on `/send-invoice`, as the
/// old service answered, with `"success": false` too (the landlord UI reads `success` and `error`
/// whatever the status).
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var headers: HTTPFields
    /// Answer with the old service's `success: false` beside `error`.
    public var oldServiceShape = false

    public init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    /// A request the API cannot take, and why (400).
    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, message) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response =
            oldServiceShape
            ? try jsonResponse(ErrorBody(error: message), status: status) : try jsonResponse(["error": message], status: status)
        for field in headers { response.headers.append(field) }
        return response
    }
}

struct ErrorBody: Encodable {
    var error: String
    var success = false
}

/// A JSON response: sorted keys, slashes unescaped.
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    Response(status: status, headers: [.contentType: jsonContentType], body: .init(byteBuffer: ByteBuffer(bytes: try jsonBytes(value))))
}

/// The API's JSON: sorted keys, slashes unescaped (every answer, the webhook's fast path's too).
func jsonBytes(_ value: some Encodable) throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return try encoder.encode(value)
}

/// The content type of the API's JSON answers.
let jsonContentType = "application/json; charset=utf-8"

/// Turns every error into a JSON answer; anything we did not expect is logged at error level
/// (Hummingbird alone would log it at debug and answer an empty 500).
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "the body is too large")
        } catch let error as HTTPParserError {
            // A body the HTTP parser could not frame (a `Transfer-Encoding` it does not know):
            // the client's mistake, not ours.
            throw APIError(.badRequest, "the request is malformed: \(error)")
        } catch let error as HTTPError {
            throw APIError(error.status, error.body ?? error.status.reasonPhrase, headers: error.headers)
        } catch  where StoreError.isUnavailable(error) {
            // The database gone or locked for now: a 503 to retry, as /health and the webhook say
            // (it was a 500 "internal error"); the log has the reason in the store's words.
            context.logger.error(
                "request failed: database unavailable", metadata: ["http.path": "\(request.uri.path)", "error": "\(error)"])
            throw APIError(.serviceUnavailable, "the database is unavailable; retry later", headers: [.retryAfter: "1"])
        } catch {
            context.logger.error("request failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(error)"])
            throw APIError(.internalServerError, "internal error")
        }
    }
}
