public import Foundation

/// What a JSON file a person wrote (a template, the organizations file, a sandbox scenario) got
/// wrong, in words that name the place.
extension DecodingError {
    /// What is wrong and where, for a person editing the file: `missing 'id' at organizations.[1]`,
    /// `Cannot initialize Outcome from invalid String value nonsense at rules.[0].outcome`, or for
    /// a file that is not JSON, "not valid JSON" (`readable(in:)` adds where the parser stopped).
    public var readable: String {
        switch self {
        case .keyNotFound(let key, let context):
            return "missing '\(key.stringValue)' at \(path(context.codingPath))"
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            return "not valid JSON"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(context.debugDescription) at \(path(context.codingPath))"
        @unknown default:
            return "\(self)"
        }
    }

    /// `readable`, and for a file that is not JSON at all, where the parser stopped in `data`
    /// ("Invalid value around character 30.").
    public func readable(in data: Data) -> String {
        guard case .dataCorrupted(let context) = self, context.codingPath.isEmpty else { return readable }
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            if let position = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String { return "not valid JSON (\(position))" }
        }
        return readable
    }

    /// The last key of the path where it went wrong (`outcome`), if any.
    public var lastKey: String? {
        switch self {
        case .keyNotFound(_, let context), .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return context.codingPath.last?.stringValue
        @unknown default:
            return nil
        }
    }
}

private func path(_ keys: [any CodingKey]) -> String {
    keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}
