import Foundation
import StoreTesting
import Testing

@testable import Dispatcher

/// The package's root folder (samples/, templates/).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func samplePath(_ name: String) -> String { packageRoot.appendingPathComponent("samples/\(name)").path }
var templatesPath: String { packageRoot.appendingPathComponent("templates").path }

/// A file in a fresh temporary folder, removed when the process ends.
func temporaryFile(_ name: String, _ bytes: [UInt8]) throws -> String {
    let url = try scratchFolder("dispatcher").appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url.path
}

func temporaryFile(_ name: String, _ text: String) throws -> String {
    try temporaryFile(name, Array(text.utf8))
}

/// What a test wants to know of a record: its line and each field's text.
struct ReadRecord: Equatable {
    var line: Int
    var fields: [String: String]
    var phones: [String]
    var extras: [String: String]
    var issues: [String]
}

/// Reads every record of a manifest into plain values.
func readAll(_ reader: any ManifestReader) throws -> [ReadRecord] {
    var out: [ReadRecord] = []
    try reader.read { record in
        var fields: [String: String] = [:]
        for field in ManifestField.allCases {
            if let bytes = record[field] { fields[field.name] = String(decoding: bytes, as: UTF8.self) }
        }
        out.append(
            ReadRecord(
                line: record.line, fields: fields,
                phones: record.phones.map { String(decoding: $0.bytes, as: UTF8.self) },
                extras: Dictionary(
                    record.extras.map { ($0.name, String(decoding: $0.bytes, as: UTF8.self)) }, uniquingKeysWith: { a, _ in a }),
                issues: record.structuralIssues.map { "\($0.field ?? "-"): \($0.message)" }))
    }
    return out
}

/// Imports a manifest held in a string and returns the valid invoices and the summary.
func importCSV(_ text: String, options: ValidationOptions = .init()) throws -> (invoices: [Invoice], summary: ImportSummary) {
    var invoices: [Invoice] = []
    let summary = try ManifestImporter(options: options).importManifest(
        from: CSVManifestReader(bytes: Array(text.utf8)), format: .csv
    ) { invoices.append($0) }
    return (invoices, summary)
}

func importXML(_ text: String, options: ValidationOptions = .init()) throws -> (invoices: [Invoice], summary: ImportSummary) {
    var invoices: [Invoice] = []
    let summary = try ManifestImporter(options: options).importManifest(
        from: XMLManifestReader(bytes: Array(text.utf8)), format: .xml
    ) { invoices.append($0) }
    return (invoices, summary)
}

let csvHeader = "invoice_id,tenant_name,phone,amount,currency,period"
