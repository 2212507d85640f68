import CXMLReader
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
        let renderer = try MessageRenderer(
            catalog: TemplateCatalog(directory: Self.root.appendingPathComponent("templates").path),
            templateName: "invoice", defaultLanguage: "es")
        for (_, bytes) in inputs {
            switch target {
            case "csv": FuzzTargets.manifest(bytes, format: .csv, renderer: renderer)
            case "xml": FuzzTargets.manifest(bytes, format: .xml, renderer: renderer)
            default: FuzzTargets.amountsAndPhones(bytes)
            }
        }
    }

    @Test("an XML import frees everything libxml2 allocated (the fuzzer found a document node left behind)")
    func xmlFreesWhatItAllocates() throws {
        #expect(dx_xml_count_allocations() == 1)
        let bytes = Array(try Data(contentsOf: Self.root.appendingPathComponent("samples/march-2026.xml")))
        func importOnce() {
            let reader = XMLManifestReader(bytes: bytes)
            _ = try? ManifestImporter(options: ValidationOptions()).importManifest(from: reader, format: .xml) { _ in }
        }
        importOnce()  // libxml2's own one-time state (its dictionary, encodings) is made here
        let before = dx_xml_live_allocations()
        for _ in 0..<20 { importOnce() }
        #expect(dx_xml_live_allocations() - before == 0, "libxml2 allocations left after 20 imports")
    }
}
