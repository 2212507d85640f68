/// The fields of a manifest record, by their canonical names (CSV column or XML element).
public enum ManifestField: Int, CaseIterable, Sendable {
    case invoiceID, tenantName, phone, amount, currency, period, dueDate
    case landlord, property, tenantID, locale, documentURL, email
    /// The property system's organization (realm) the invoice is sent for: its number, token and
    /// templates (`dispatcher.json`, docs/configuration.md).
    case organization

    /// The name a manifest uses for the field, and the name every error reports.
    public var name: String {
        switch self {
        case .invoiceID: "invoice_id"
        case .tenantName: "tenant_name"
        case .phone: "phone"
        case .amount: "amount"
        case .currency: "currency"
        case .period: "period"
        case .dueDate: "due_date"
        case .landlord: "landlord"
        case .property: "property"
        case .tenantID: "tenant_id"
        case .locale: "locale"
        case .documentURL: "document_url"
        case .email: "email"
        case .organization: "organization"
        }
    }

    /// What a header cell or element name means, case-insensitively, with the property system's
    /// aliases (`name`, `term`, `grandTotal`, `amount_due`, `reference`, `whatsapp`).
    public enum Column: Equatable, Sendable {
        case field(ManifestField)
        /// `phone2`, `phone3`…: the number is kept only for ordering and error messages.
        case extraPhone(Int)
        case extra(String)
    }

    public static func column(named raw: String) -> Column {
        let name = raw.trimmingASCIIWhitespace().lowercased()
        if let field = byName[name] { return .field(field) }
        if name.hasPrefix("phone"), let n = Int(name.dropFirst(5)), n >= 2 { return .extraPhone(n) }
        return .extra(raw.trimmingASCIIWhitespace())
    }

    private static let byName: [String: ManifestField] = {
        var map: [String: ManifestField] = [:]
        for field in ManifestField.allCases { map[field.name] = field }
        map["name"] = .tenantName
        map["term"] = .period
        map["grandtotal"] = .amount
        map["amount_due"] = .amount
        map["reference"] = .tenantID
        map["whatsapp"] = .phone
        map["organization_id"] = .organization
        map["organizationid"] = .organization
        map["realm"] = .organization
        return map
    }()
}

extension String {
    /// The string without leading and trailing ASCII spaces, tabs and line breaks.
    func trimmingASCIIWhitespace() -> String {
        let utf8 = self.utf8
        guard let first = utf8.firstIndex(where: { !isASCIISpace($0) }) else { return "" }
        let last = utf8.lastIndex(where: { !isASCIISpace($0) })!
        return String(self[first...last])
    }
}

@inline(__always) func isASCIISpace(_ byte: UInt8) -> Bool {
    byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
}
