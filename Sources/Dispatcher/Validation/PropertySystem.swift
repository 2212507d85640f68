import Foundation

/// The property system whose PDFs sit behind its own authentication
/// (`DISPATCHER_PROPERTY_SYSTEM_URL`): a document link on its origin, or relative to it
/// (`/api/v2/documents/invoice/T1/2026030100`, as its landlord UI sends them), is fetched with
/// credentials and uploaded to Meta, never handed to Meta as a link it could not fetch.
public struct PropertySystem: Sendable, Equatable {
    /// `scheme://host[:port]`, lowercased, without a trailing slash.
    public let origin: String
    /// Only links below this path are fetched with credentials (the property system's documents,
    /// `/api/v2/documents/`): the service token opens nothing else, whatever a manifest or a
    /// caller names.
    public let documentsPath: String

    /// Nil when `url` is not an http(s) URL with a host.
    public init?(url: String, documentsPath: String = "/api/v2/documents/") {
        self.documentsPath = documentsPath.hasPrefix("/") ? documentsPath : "/" + documentsPath
        guard let parsed = URL(string: url.trimmingASCIIWhitespace()), let scheme = parsed.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = parsed.host?.lowercased(), !host.isEmpty
        else { return nil }
        origin = "\(scheme)://\(host)" + (parsed.port.map { ":\($0)" } ?? "")
    }

    /// The link as an absolute URL on this origin, or nil when it is not one of ours: a path
    /// (`/api/…`) is resolved against the origin; an absolute link must start with the origin.
    public func resolve(_ link: String) -> String? {
        let path: Substring
        if link.hasPrefix("/") && !link.hasPrefix("//") {
            path = Substring(link)
        } else {
            guard link.lowercased().hasPrefix(origin) else { return nil }
            path = link.dropFirst(origin.count)
            guard path.hasPrefix("/") else { return nil }  // not https://pm.example.com.evil, nor …@evil
        }
        guard path.hasPrefix(documentsPath) else { return nil }
        // No way out of the documents, however a server in front normalises the path (up to its
        // query or fragment): no dot segment, also before a `;` parameter (`..;/`), and no encoded
        // dot, slash, backslash or percent sign (`%2e%2e`, `..%2f`, `%252e`), nor a backslash.
        let lowered = path.lowercased()
        let pathPart = lowered.prefix { $0 != "?" && $0 != "#" }
        if ["%2e", "%2f", "%5c", "%25", "\\"].contains(where: { pathPart.contains($0) }) { return nil }
        for segment in pathPart.split(separator: "/", omittingEmptySubsequences: false) {
            let name = segment.prefix { $0 != ";" }
            if name == "." || name == ".." { return nil }
        }
        return link.hasPrefix("/") ? origin + link : link
    }

    /// Whether a (resolved) document link is to be fetched from the property system.
    public func owns(_ link: String) -> Bool { resolve(link) != nil && !link.hasPrefix("/") }
}
