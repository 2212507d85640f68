import Foundation
import Testing
@testable import Tracking

import StoreTesting

func freshStore(busyTimeout: Double = 5) throws -> SQLiteStore {
    try SQLiteStore(path: try freshSQLitePath(), busyTimeout: busyTimeout)
}

/// A run with one invoice and one queued message per phone.
@discardableResult
func seed(_ store: any DispatchStore, run: String = "march", invoice: String = "INV-1", phones: [String] = ["18095550101"],
          landlord: String = "Caribe") async throws -> [String] {
    try await store.saveRun(RunRecord(name: run, manifest: "m.csv", template: "invoice", sender: "123", createdAt: 1_772_000_000))
    try await store.addInvoices([InvoiceRecord(run: run, invoiceID: invoice, line: 2, tenantName: "María Pérez", landlord: landlord,
                                               amountMinor: 1_234_550, currency: "DOP", period: "2026-03", locale: "es-DO")])
    let messages = phones.map { NewMessage(id: "m-\(invoice)-\($0)", run: run, invoiceID: invoice, phone: $0, template: "invoice", language: "es") }
    _ = try await store.addMessages(messages)
    return messages.map(\.id)
}

/// A status as Meta would send it for our message.
func status(_ wamid: String, _ status: String, at timestamp: Int64, callback: String? = nil, error: Int? = nil) -> StatusUpdate {
    StatusUpdate(wamid: wamid, status: status, timestamp: timestamp, recipientID: "18095550101", callbackData: callback,
                 errorCode: error, errorTitle: error.map { "error \($0)" }, errorDetails: error.map { "details \($0)" })
}

func ingest(_ store: any DispatchStore, _ updates: [StatusUpdate], inbound: [InboundText] = []) async throws -> IngestResult {
    var contents = WebhookContents()
    contents.statuses = updates
    contents.inbound = inbound
    return try await store.ingestWebhook(body: Array("{}".utf8), signature: "sha256=test", contents: contents, parseError: nil,
                                         at: Date().timeIntervalSince1970)
}

/// Every ordering of a list.
func permutations<T>(_ items: [T]) -> [[T]] {
    guard items.count > 1 else { return [items] }
    return items.indices.flatMap { i -> [[T]] in
        var rest = items
        let head = rest.remove(at: i)
        return permutations(rest).map { [head] + $0 }
    }
}
