import Foundation
import GRDB
import GRDBSQLite

/// The invoices of a run's messages, read as the messages are read in sequence, for the report
/// passes over a whole run (SQLite only).
///
/// Joined in SQL, each message's invoice was found through the `(run, invoice_id)` key: a B-tree
/// descent comparing text, then a second one into the table, a million times, which was a fifth of
/// a report's time. But a run's messages are stored in the order of its invoices (one or two
/// messages an invoice, in manifest order), so here a second statement reads the run's invoices
/// forwards in rowid order alongside (a window of them at a time), and a message's invoice is almost always the invoice under
/// that scan or the next one. Anything else (a message of a re-run, added at the end for an old
/// invoice; invoices without messages; another run's invoices in between) is looked up by its key,
/// as the join did, and the scan starts again from there when the invoice lies ahead of it. The
/// answer is the join's whatever the order; only its speed depends on the order.
struct SQLiteInvoiceFollower {
    /// `rowid`, `invoice_id`, then the caller's columns: the positions `SQLiteColumns` reads.
    private let scan: Statement
    private let lookup: Statement
    private let run: String
    private static let window: Int64 = 4096
    /// Whether `scan` stands on a row (false before the first look-up and once the run's invoices ran out).
    private var scanning = false

    /// `columns`: the invoice columns the caller reads, from position 2.
    init(_ db: Database, run: String, columns: String) throws {
        self.run = run
        // By rowid, with `+run` so that SQLite does not go through the (run, invoice_id) index and
        // sort; over a window, so that a scan past the run's last invoice never reads on through
        // another run's (a look-up and a new window every 4,096 invoices).
        scan = try db.makeStatement(
            sql: "SELECT rowid, invoice_id, \(columns) FROM invoices WHERE rowid BETWEEN ? AND ? AND +run = ? ORDER BY rowid")
        lookup = try db.makeStatement(sql: "SELECT rowid, invoice_id, \(columns) FROM invoices WHERE run = ? AND invoice_id = ?")
    }

    /// The invoice named by `invoiceID` (a message's `invoice_id` bytes), nil if there is none:
    /// its columns, readable until the next call.
    mutating func invoice(_ invoiceID: UnsafeRawBufferPointer) throws -> SQLiteColumns? {
        let columns = SQLiteColumns(scan)
        if scanning {
            if Self.same(columns.bytes(1), invoiceID) { return columns }
            scanning = try step(scan)
            if scanning && Self.same(columns.bytes(1), invoiceID) { return columns }
        }
        let id = String(decoding: invoiceID, as: UTF8.self)
        try lookup.setArguments([run, id])
        guard try step(lookup) else { return nil }
        let found = SQLiteColumns(lookup)
        // Ahead of the scan (or no scan yet): the scan starts again there, and follows on.
        if !scanning || found.int64(0) > columns.int64(0) {
            let from = found.int64(0)
            try scan.setArguments([from, from &+ (Self.window - 1), run])
            scanning = try step(scan)
            if scanning && Self.same(columns.bytes(1), invoiceID) { return columns }
        }
        return found
    }

    /// Steps with SQLite's own call (GRDB's `setArguments` has reset and bound it): GRDB's steps
    /// are for statements it iterates itself.
    private func step(_ statement: Statement) throws -> Bool {
        switch sqlite3_step(statement.sqliteStatement) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code:
            // GRDB interrupts the connection when the task is cancelled: say so, as its own steps would.
            if code == SQLITE_INTERRUPT { try Task.checkCancellation() }
            let message = sqlite3_errmsg(sqlite3_db_handle(statement.sqliteStatement)).map { String(cString: $0) }
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
        }
    }

    private static func same(_ a: UnsafeRawBufferPointer?, _ b: UnsafeRawBufferPointer) -> Bool {
        guard let a, a.count == b.count else { return false }
        return a.isEmpty || memcmp(a.baseAddress!, b.baseAddress!, b.count) == 0
    }
}
