public import Dispatcher
import Foundation
public import Store
import WhatsApp

// MARK: - The checks before a run's first request
//
// Whatever drives a billing run (the CLI today; a server route or a test tomorrow) makes the same
// decisions before the first request, here; the driver only says them in its own words.

/// What the template check before the first request found.
public enum TemplateCheck: Sendable {
    /// Not checked: no business account id to ask Meta with. Meta's own answers still halt the run.
    case noAccount
    /// Not checked: Meta would not list the account's templates (a token without
    /// `whatsapp_business_management`), for this reason. Meta's own answers still halt the run.
    case unreadable(reason: String)
    /// Nothing is queued: nothing to check.
    case nothingQueued
    /// Every (template, language) the queued messages need is APPROVED.
    case approved([TemplateLanguage])
    /// Some are not, and the run may not start: it is halted before its first request, with why.
    case refused([UnapprovedTemplate])
    /// Some are not, and their messages were skipped with the reason (`--skip-unapproved-languages`); the rest go.
    case skipped([(problem: UnapprovedTemplate, messages: Int)])
}

extension RunEngine {
    /// Every (template, language) the run's queued messages need must be APPROVED at Meta, in
    /// business account `account` (nil: not checked). Refused without `skipUnapproved`: the run is
    /// halted with the reason, nothing sent; with it, those messages are skipped with the reason.
    public func checkTemplates(run: String, businessAccountID account: String?, skipUnapproved: Bool) async throws -> TemplateCheck {
        guard let account else { return .noAccount }
        let needed = try await queuedTemplates(run: run)
        guard !needed.isEmpty else { return .nothingQueued }
        let templates: [AccountTemplate]
        do {
            templates = try await client.messageTemplates(businessAccountID: account)
        } catch {
            return .unreadable(reason: "could not read the templates of business account \(account) from Meta (\(error))")
        }
        let problems = UnapprovedTemplate.find(needed: needed.map { ($0.template, $0.language) }, account: templates)
        if problems.isEmpty { return .approved(needed) }
        guard skipUnapproved else {
            try await haltBeforeSending(run: run, reason: problems.map(\.description).joined(separator: "; "))
            return .refused(problems)
        }
        var skipped: [(problem: UnapprovedTemplate, messages: Int)] = []
        for problem in problems {
            let n = try await skipQueued(
                run: run, template: problem.template, language: problem.language, reason: SkipReason.templateNotApproved + "\(problem)")
            skipped.append((problem, n))
        }
        return .skipped(skipped)
    }

    /// Refuses the run, recording the halt, when `estimate` (of what it still has queued,
    /// `queuedCharges`) is over `maxCost` in the card's currency (nil: no limit), or has messages
    /// without a rate so that the limit cannot be checked: returns why, or nil when it may send. For a run stored while it sends, the count is the check pass's, which includes
    /// messages an earlier run already sent (skipped when stored): the estimate is never below the cost.
    public func refuseOverCost(run: String, estimate: CostEstimate, maxCost: Double?) async throws -> String? {
        guard let maxCost else { return nil }
        let card = estimate.card
        let limit = Int64((maxCost * 1_000_000).rounded())
        let refusal: String
        if estimate.withoutRate > 0 {
            refusal = "\(estimate.withoutRate) messages have no rate on the card effective \(card.effective): --max-cost cannot be checked"
        } else if estimate.total > limit {
            refusal =
                "the estimated cost \(CostEstimate.format(estimate.total, currency: card.currency)) is above --max-cost \(CostEstimate.format(limit, currency: card.currency))"
        } else {
            return nil
        }
        try await haltBeforeSending(run: run, reason: refusal)
        return refusal
    }

    /// A run stopped before its first request: halted, with why (as `BillingRun.conclude` records a halt).
    public func haltBeforeSending(run: String, reason: String) async throws {
        guard var record = try await store.run(named: run) else { return }
        record.status = .halted
        record.haltReason = reason
        try await store.saveRun(record)
    }
}
