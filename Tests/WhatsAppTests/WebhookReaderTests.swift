import Foundation
import Testing

@testable import WhatsApp

/// The receiver reads Meta's payloads with its own byte reader and leaves anything unusual to
/// JSONDecoder: these hold the two equal on what the reader takes, and check it takes Meta's shapes.
@Suite("Webhook payloads read from their bytes")
struct WebhookReaderTests {
    /// Meta's shapes, as documented and as seen: statuses (with errors, pricing, 2026 contacts and
    /// user ids), inbound texts with escapes, system errors, numbers as timestamps, nulls, unknown fields.
    static let payloads: [String] = [
        #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"18095550000","phone_number_id":"123"},"statuses":[{"id":"wamid.A","status":"delivered","timestamp":"1772000001","recipient_id":"18095550101","biz_opaque_callback_data":"m-1","pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"},"conversation":{"id":"c","origin":{"type":"utility"}}}]}}]}]}"#,
        #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1","phone_number_id":"123"},"contacts":[{"wa_id":"18095550101","user_id":"DO.1","profile":{"name":"Mar\u00eda"}}],"statuses":[{"id":"wamid.B","status":"failed","timestamp":1772000002,"recipient_id":"18095550101","recipient_user_id":"DO.1","errors":[{"code":131026,"title":"Message undeliverable","message":"Message undeliverable","error_data":{"details":"Receiver is incapable of receiving this message"},"href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]}}]}]}"#,
        #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1","phone_number_id":"123"},"contacts":[{"profile":{"name":"Jos\u00e9"},"wa_id":"18095550101"}],"messages":[{"from":"18095550101","id":"wamid.C","timestamp":"1772000003","type":"text","text":{"body":"\u00a1Gracias! \"Recib\u00ed\" la factura \ud83d\ude00\n\tok\/\\ \b\f\r"}}]}}]}]}"#,
        #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"123"},"messages":[{"from_user_id":"DO.77","id":"wamid.D","timestamp":"  1772000004 ","type":"text","text":{"body":"STOP"}},{"from":"1809","id":"wamid.E","timestamp":"1772000004.5","type":"image","image":{"id":"x","mime_type":"image/jpeg"}}]}}]}]}"#,
        #"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","errors":[{"code":130429,"title":"Rate limit hit"}]}},{"field":"message_template_status_update","value":{"event":"APPROVED","message_template_id":12,"reason":null,"other":[1,-2.5e3,true,false,null,{},[],"x"]}}]}]}"#,
        #"  {"object":null,"entry":[{"id":null,"changes":null}],"extra":{"deep":[[[{"a":[0.5,1E-7,-0]}]]]}}  "#,
        #"{"entry":[{"changes":[{"value":{"statuses":[{"id":"w","status":"read","timestamp":null,"pricing":null,"errors":[]}],"messages":[],"contacts":null,"metadata":null}}]}]}"#,
        #"{}"#,
        #"{"entry":[]}"#,
    ]

    static func jsonDecoder(_ text: String) -> WebhookPayload? {
        try? JSONDecoder().decode(WebhookPayload.self, from: Data(text.utf8))
    }

    @Test("Meta's payloads: read without JSONDecoder, and read the same")
    func metaShapes() throws {
        for text in Self.payloads {
            let plain = try #require(WebhookPayload.fromPlainBytes(Array(text.utf8)), "not read: \(text)")
            #expect(plain == Self.jsonDecoder(text), "\(text)")
        }
        let inbound = try #require(WebhookPayload.fromPlainBytes(Array(Self.payloads[2].utf8)))
        #expect(inbound.entry?[0].changes?[0].value?.messages?[0].text?.body == "¡Gracias! \"Recibí\" la factura 😀\n\tok/\\ \u{08}\u{0C}\r")
        let failed = try #require(WebhookPayload.fromPlainBytes(Array(Self.payloads[1].utf8)))
        #expect(failed.entry?[0].changes?[0].value?.statuses?[0].errors?[0].code == 131026)
        #expect(failed.entry?[0].changes?[0].value?.statuses?[0].timestamp == UnixSeconds(1_772_000_002))
    }

    @Test("what the reader leaves to JSONDecoder: decided there, the same as before")
    func leftToJSONDecoder() throws {
        let cases = [
            #"{"entry":[{"changes":[{"value":{"statuses":[{"id":"w","status":"sent","timestamp":1772000001.5}]}}]}]}"#,  // a fraction
            #"{"entry":[{"changes":[{"value":{"errors":[{"code":"131026"}]}}]}]}"#,  // a code as text: JSONDecoder refuses
            #"{"entry":[{"changes":[{"value":{"errors":[{"code":1e3}]}}]}]}"#,
            #"{"object":"a","object":"b"}"#,  // a key twice
            #"{"entry":[{"changes":[{"value":{"messages":[{"text":{"body":"Mar\#u{ED}a"}}]}}]}]}"#,  // a raw non-ASCII byte
            #"{"entry":[{"changes":[{"value":{"messages":[{"text":{"body":"\ud83d"}}]}}]}]}"#,  // a lone surrogate
            #"{"entry":[null]}"#,
            #"{"entry":{}}"#,
            #"{"object":"a"} x"#,
            #"{"object":"a",}"#,
            #"{"n":01}"#,
            #"{"n":-}"#,
            "{\"s\":\"tab\tinside\"}",  // a raw control character
            #"[]"#,
            "",
            String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
            "{\"x\":" + String(repeating: "[", count: 70) + String(repeating: "]", count: 70) + "}",
        ]
        for text in cases {
            #expect(WebhookPayload.fromPlainBytes(Array(text.utf8)) == nil, "\(text)")
            let decoded = try? WebhookPayload.decode(Array(text.utf8))
            #expect(decoded == Self.jsonDecoder(text), "\(text)")
        }
        // Left to JSONDecoder and read there: the fraction and the raw byte.
        #expect(
            try WebhookPayload.decode(Array(cases[0].utf8)).entry?[0].changes?[0].value?.statuses?[0].timestamp
                == UnixSeconds(1_772_000_001))
        #expect(try WebhookPayload.decode(Array(cases[4].utf8)).entry?[0].changes?[0].value?.messages?[0].text?.body == "María")
        #expect(throws: (any Error).self) { try WebhookPayload.decode(Array(cases[1].utf8)) }
    }

    @Test("every prefix and every one-byte change of Meta's payloads: the reader either agrees with JSONDecoder or leaves it to it")
    func mutations() {
        // Seeded, so a failure can be run again: the seed is in the failure's message.
        let seed = UInt64.random(in: 1...UInt64.max)
        var generator = SeededGenerator(seed: seed)
        var read = 0, compared = 0
        for text in Self.payloads {
            for variant in mutatedVariants(of: text, using: &generator) {
                compared += 1
                guard let plain = WebhookPayload.fromPlainBytes(variant) else { continue }
                read += 1
                let decoded = try? JSONDecoder().decode(WebhookPayload.self, from: Data(variant))
                #expect(plain == decoded, "seed \(seed): \(String(decoding: variant, as: UTF8.self))")
            }
        }
        #expect(read > 100 && compared > 3000)
    }
}

/// Every prefix of a JSON text, and 400 seeded one-byte changes (a byte replaced, removed or
/// inserted, from JSON's own characters): what the byte readers are held equal to JSONDecoder on.
func mutatedVariants(of text: String, using generator: inout SeededGenerator) -> [[UInt8]] {
    let alphabet = Array(#"{}[]",:0123456789.-+eE\"u nultrfasx"#.utf8)
    let bytes = Array(text.utf8)
    var variants: [[UInt8]] = (0..<bytes.count).map { Array(bytes[..<$0]) }
    for _ in 0..<400 {
        var changed = bytes
        let at = Int.random(in: 0..<bytes.count, using: &generator)
        switch Int.random(in: 0..<3, using: &generator) {
        case 0: changed[at] = alphabet.randomElement(using: &generator)!
        case 1: changed.remove(at: at)
        default: changed.insert(alphabet.randomElement(using: &generator)!, at: at)
        }
        variants.append(changed)
    }
    return variants
}

/// SplitMix64: a small seeded generator for reproducible mutations.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
