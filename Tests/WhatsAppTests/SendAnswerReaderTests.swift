import Foundation
import Testing

@testable import WhatsApp

/// The sender reads Meta's answer to each send with the webhook's byte reader and leaves anything
/// unusual to JSONDecoder: the wamid it records must be the one JSONDecoder would have read.
@Suite("Meta's answer to a send, read from its bytes")
struct SendAnswerReaderTests {
    /// Meta's answers as documented and as seen (a held message, the 2026 user id, no contacts),
    /// with unknown fields, nulls and escapes.
    static let answers: [String] = [
        #"{"messaging_product":"whatsapp","contacts":[{"input":"18095550101","wa_id":"18095550101"}],"messages":[{"id":"wamid.HBgLMTgwOTU1NTAxMDEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}"#,
        #"{"messaging_product":"whatsapp","contacts":[{"input":"+1 809 555 0101","wa_id":"18095550101","user_id":"DO.1"}],"messages":[{"id":"wamid.B","message_status":"held_for_quality_assessment"}]}"#,
        #"{"messaging_product":"whatsapp","messages":[{"id":"wamid.C","message_status":"accepted"}]}"#,
        #" { "messages" : [ { "id" : "wamid.D\/\u0041" , "message_status" : null } ] , "contacts" : null , "extra" : [1, -2.5e3, true, {"a": []}] } "#,
        #"{"messages":[]}"#,
        #"{}"#,
    ]

    static func jsonDecoder(_ bytes: [UInt8]) -> SendResponse? {
        try? JSONDecoder().decode(SendResponse.self, from: Data(bytes))
    }

    static func plain(_ bytes: [UInt8]) -> SendResponse? {
        bytes.withUnsafeBufferPointer { SendResponse.fromPlainBytes($0) }
    }

    @Test("Meta's answers: read without JSONDecoder, and read the same; the outcome names the wamid")
    func metaShapes() throws {
        for text in Self.answers {
            let bytes = Array(text.utf8)
            let plain = try #require(Self.plain(bytes), "\(text)")
            #expect(plain == Self.jsonDecoder(bytes), "\(text)")
        }
        guard
            case .accepted(let wamid, let waID, let held) = GraphClient.outcome(
                status: 200, retryAfter: nil, body: Data(Self.answers[1].utf8))
        else {
            Issue.record("a 200 with Meta's answer is accepted")
            return
        }
        #expect(wamid == "wamid.B" && waID == "18095550101" && held)
        #expect(Self.plain(Array(Self.answers[3].utf8))?.messages?.first?.id == "wamid.D/A")
    }

    @Test("what the reader leaves to JSONDecoder is decided there: a message without an id, repeated keys, non-ASCII")
    func leftToJSONDecoder() {
        for text in [
            #"{"messages":[{"message_status":"accepted"}]}"#, #"{"messages":[{"id":null}]}"#,
            #"{"messages":[{"id":"a","id":"b"}]}"#, #"{"messages":[{"id":"wamid.é"}]}"#, #"{"messages":[{"id":7}]}"#,
            #"{"messages":[{"id":"a"}]"#, #"[]"#, "",
        ] {
            #expect(Self.plain(Array(text.utf8)) == nil, "\(text)")
        }
        // A message without an id is not Meta's answer: the send's outcome stays unknown, never accepted.
        if case .accepted = GraphClient.outcome(
            status: 200, retryAfter: nil, body: Data(#"{"messages":[{"message_status":"accepted"}]}"#.utf8))
        {
            Issue.record("an answer without a wamid must not count as accepted")
        }
    }

    @Test("every prefix and seeded one-byte change of Meta's answers: the reader agrees with JSONDecoder or leaves it to it")
    func mutations() {
        // Fixed seeds, so that a failure runs again the same; and one new each run, named in its failures.
        var read = 0, compared = 0
        for seed in [1, 2, 3, UInt64.random(in: 4...UInt64.max)] as [UInt64] {
            var generator = SeededGenerator(seed: seed)
            for text in Self.answers {
                for variant in mutatedVariants(of: text, using: &generator) {
                    compared += 1
                    guard let plain = Self.plain(variant) else { continue }
                    read += 1
                    #expect(plain == Self.jsonDecoder(variant), "seed \(seed): \(String(decoding: variant, as: UTF8.self))")
                }
            }
        }
        #expect(read > 400 && compared > 8000)
    }
}
