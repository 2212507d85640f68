import Foundation
import Server
import Store
import Testing
import WhatsApp

/// The webhook and token fuzzers' corpus and kept findings (Fuzz/corpus/TARGET), replayed.
@Suite("Fuzz corpus replay (webhooks, tokens)")
struct ServerFuzzCorpusTests {
    @Test("each input runs through its target without a crash or a broken property", arguments: ["webhook", "jwt"])
    func replay(target: String) async throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/\(target)")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        #expect(!names.isEmpty)
        for name in names {
            let bytes = Array(try Data(contentsOf: folder.appendingPathComponent(name)))
            if target == "webhook" { ServerFuzzTargets.webhook(bytes) } else { await ServerFuzzTargets.jwt(bytes) }
        }
    }
}
