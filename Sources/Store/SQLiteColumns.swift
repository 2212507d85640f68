import GRDB
import GRDBSQLite

/// The current row of a statement GRDB steps, read straight from SQLite's C API by position.
///
/// For the passes that read a whole run (a report's million rows): GRDB's `Row` decodes each cell
/// through `DatabaseValue` checks, and its `withUnsafeData` wraps each cell in a `Data`, which was
/// most of the report page's own time. Text and blobs are lent as bytes that stay valid only until
/// the statement steps again.
struct SQLiteColumns {
    let statement: SQLiteStatement

    init(_ statement: Statement) { self.statement = statement.sqliteStatement }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(statement, column) == SQLITE_NULL }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }

    func intOrNil(_ column: Int32) -> Int? { isNull(column) ? nil : Int(sqlite3_column_int64(statement, column)) }

    func doubleOrNil(_ column: Int32) -> Double? { isNull(column) ? nil : sqlite3_column_double(statement, column) }

    /// A text cell's UTF-8 bytes, nil for NULL; valid until the next step.
    func bytes(_ column: Int32) -> UnsafeRawBufferPointer? {
        guard !isNull(column), let text = sqlite3_column_text(statement, column) else { return nil }
        return UnsafeRawBufferPointer(start: text, count: Int(sqlite3_column_bytes(statement, column)))
    }

    func stringOrNil(_ column: Int32) -> String? {
        bytes(column).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A text cell that the schema makes NOT NULL ("" if it were NULL).
    func string(_ column: Int32) -> String { stringOrNil(column) ?? "" }
}

/// A message's state from the bytes of its stored name, with no String per row (an unknown name
/// reads as `unknown`, as `MessageState(rawValue:) ?? .unknown` does elsewhere).
struct StateNames {
    private let names: [(bytes: [UInt8], state: MessageState)] = MessageState.allCases.map { (Array($0.rawValue.utf8), $0) }

    func state(_ bytes: UnsafeRawBufferPointer?) -> MessageState {
        guard let bytes else { return .unknown }
        for (name, state) in names where name.count == bytes.count && name.elementsEqual(bytes) { return state }
        return .unknown
    }
}
