import Dispatcher
import Foundation
import Testing

/// The fuzzers' seed corpus and every finding kept with its fix (Fuzz/corpus/TARGET), through the
/// same entry points the fuzzers drive: what a fuzzer once crashed on stays fixed.
@Suite("Fuzz corpus replay (manifests, amounts, phones)")
struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func corpus(_ target: String) throws -> [(String, [UInt8])] {
        let folder = root.appendingPathComponent("Fuzz/corpus/\(target)")
        return try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().map { name in
            (name, Array(try Data(contentsOf: folder.appendingPathComponent(name))))
        }
    }

    @Test("each input runs through its target without a crash or a broken property", arguments: ["csv", "xml", "amounts"])
    func replay(target: String) throws {
        let inputs = try Self.corpus(target)
        #expect(!inputs.isEmpty)
        let renderer = try MessageRenderer(catalog: TemplateCatalog(directory: Self.root.appendingPathComponent("templates").path),
                                           templateName: "invoice", defaultLanguage: "es")
        for (_, bytes) in inputs {
            switch target {
            case "csv": FuzzTargets.manifest(bytes, format: .csv, renderer: renderer)
            case "xml": FuzzTargets.manifest(bytes, format: .xml, renderer: renderer)
            default: FuzzTargets.amountsAndPhones(bytes)
            }
        }
    }
}
