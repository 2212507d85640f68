/// `/send-invoice` for several organizations: the caller's `organizationId` picks the
/// organization's sender (its own number, token, templates and defaults). With one organization
/// configured, a call without the header goes to it; an id not configured here is refused (a
/// 403), never sent from another organization's number.
public struct OrganizationRouter: InvoiceSendService {
    let senders: [String: any InvoiceSendService]
    let only: (any InvoiceSendService)?

    /// `senders` by organization id.
    public init(senders: [String: any InvoiceSendService]) {
        self.senders = senders
        only = senders.count == 1 ? senders.values.first : nil
    }

    public func sendInvoice(_ request: SendInvoiceRequest, caller: InvoiceCaller) async throws -> SendInvoiceResponse {
        if let id = caller.organizationID, !id.isEmpty {
            if let sender = senders[id] { return try await sender.sendInvoice(request, caller: caller) }
            // The single-number setup (id `default`) sends for whoever calls, as before.
            if let only, senders["default"] != nil { return try await only.sendInvoice(request, caller: caller) }
            throw InvoiceRequestError.unknownOrganization(
                "organization '\(id)' is not configured here (docs/configuration.md): nothing was sent")
        }
        if let only { return try await only.sendInvoice(request, caller: caller) }
        throw InvoiceRequestError.unknownOrganization("the organizationId header is required: several organizations send from here")
    }
}
