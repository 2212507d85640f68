import Dispatcher
public import Foundation
import Store
import WhatsApp

/// The view model of `templates/reports/delivery.mustache`.
struct DeliveryPage {
    struct Labels {
        var title, subtitle, funnel, landlords, failures, retry, retryHint, skipped, timeline, landlord, invoices, billed, delivered,
            failed, unreachable, pending, reason, action, count, tenant, phone, invoice, email, none, moreInCSV, sends, deliveries,
            manifest, template, sender, created, finished, settle, status, details, queued, accepted, held, sent, read, unknown,
            skippedState,
            allGood, perMinute, noStatuses, cost, notYetKnown, notYetKnownHint, amount, times: String

        static func of(_ lang: String) -> Labels {
            switch ReportLanguageWords(lang).code {
            case .fr:
                return Labels(
                    title: "Rapport de distribution", subtitle: "Factures envoyées par WhatsApp", funnel: "Entonnoir de distribution",
                    landlords: "Par bailleur", failures: "Non remis : la raison et que faire", retry: "À relancer",
                    retryHint: "Ces messages peuvent être relancés avec :", skipped: "Non envoyés, volontairement",
                    timeline: "Envois et remises par minute",
                    landlord: "Bailleur", invoices: "Factures", billed: "Facturé", delivered: "Remis", failed: "Échecs",
                    unreachable: "Sans WhatsApp", pending: "En cours", reason: "Raison", action: "Que faire", count: "Nombre",
                    tenant: "Locataire", phone: "Téléphone", invoice: "Facture", email: "Courriel", none: "Aucun.",
                    moreInCSV: "La liste complète est dans messages.csv.", sends: "envois", deliveries: "remises",
                    manifest: "Manifeste", template: "Modèle", sender: "Numéro d'envoi", created: "Commencé", finished: "Terminé",
                    settle: "Attente des statuts", status: "État", details: "Détail", queued: "En file", accepted: "Acceptés",
                    held: "Retenus par Meta",
                    sent: "Envoyés", read: "Lus", unknown: "Inconnus", skippedState: "Omis",
                    allGood: "Tous les messages sont arrivés ou en route.", perMinute: "par minute",
                    noStatuses:
                        "Aucun statut de distribution n'est arrivé pour cet envoi : rien ne recevait les webhooks de Meta (lancez `dispatcher serve` là où pointe le webhook de Meta, ou envoyez avec --listen). « Acceptés » veut dire que WhatsApp a pris le message, pas qu'il a échoué ; `dispatcher report` montre les statuts qui arrivent ensuite.",
                    cost: "Coût WhatsApp", notYetKnown: "Pas encore connu",
                    notYetKnownHint:
                        "WhatsApp n'a pas encore dit s'ils sont arrivés. Attendez : `dispatcher report` montre les statuts qui arrivent ; s'ils restent inconnus demain, appelez le locataire.",
                    amount: "Montant", times: "Heures"
                )
            case .pt:
                return Labels(
                    title: "Relatório de entrega", subtitle: "Faturas enviadas pelo WhatsApp", funnel: "Funil de entrega",
                    landlords: "Por proprietário", failures: "Não entregues: o motivo e o que fazer", retry: "Para reenviar",
                    retryHint: "Estas mensagens podem ser reenviadas com:", skipped: "Não enviadas, de propósito",
                    timeline: "Envios e entregas por minuto",
                    landlord: "Proprietário", invoices: "Faturas", billed: "Faturado", delivered: "Entregue", failed: "Falhas",
                    unreachable: "Sem WhatsApp", pending: "Em aberto", reason: "Motivo", action: "O que fazer", count: "Quantidade",
                    tenant: "Inquilino", phone: "Telefone", invoice: "Fatura", email: "E-mail", none: "Nenhum.",
                    moreInCSV: "A lista completa está em messages.csv.", sends: "envios", deliveries: "entregas",
                    manifest: "Manifesto", template: "Modelo", sender: "Número de envio", created: "Início", finished: "Fim",
                    settle: "Espera de status", status: "Estado", details: "Detalhe", queued: "Na fila", accepted: "Aceitas",
                    held: "Retidas pela Meta",
                    sent: "Enviadas", read: "Lidas", unknown: "Desconhecidas", skippedState: "Omitidas",
                    allGood: "Todas as mensagens chegaram ou estão a caminho.", perMinute: "por minuto",
                    noStatuses:
                        "Nenhum status de entrega chegou para este envio: nada recebia os webhooks da Meta (inicie `dispatcher serve` onde aponta o webhook da Meta, ou envie com --listen). \"Aceitas\" quer dizer que o WhatsApp recebeu a mensagem, não que ela falhou; `dispatcher report` mostra os status que chegarem depois.",
                    cost: "Custo do WhatsApp", notYetKnown: "Ainda não se sabe",
                    notYetKnownHint:
                        "O WhatsApp ainda não disse se chegaram. Aguarde: `dispatcher report` mostra os status que chegarem; se amanhã continuarem sem confirmação, ligue para o inquilino.",
                    amount: "Valor", times: "Horários"
                )
            case .es:
                return Labels(
                    title: "Informe de entrega", subtitle: "Facturas enviadas por WhatsApp", funnel: "Embudo de entrega",
                    landlords: "Por arrendador", failures: "No entregados: motivo y qué hacer", retry: "Para reintentar",
                    retryHint: "Estos mensajes pueden reintentarse con:", skipped: "No enviados a propósito",
                    timeline: "Envíos y entregas por minuto",
                    landlord: "Arrendador", invoices: "Facturas", billed: "Facturado", delivered: "Entregado", failed: "Fallidos",
                    unreachable: "Sin WhatsApp", pending: "Abiertos", reason: "Motivo", action: "Qué hacer", count: "Cantidad",
                    tenant: "Inquilino", phone: "Teléfono", invoice: "Factura", email: "Correo", none: "Ninguno.",
                    moreInCSV: "La lista completa está en messages.csv.", sends: "envíos", deliveries: "entregas",
                    manifest: "Manifiesto", template: "Plantilla", sender: "Número emisor", created: "Iniciado", finished: "Terminado",
                    settle: "Espera de estados", status: "Estado", details: "Detalle", queued: "En cola", accepted: "Aceptados",
                    held: "Retenidos por Meta",
                    sent: "Enviados", read: "Leídos", unknown: "Desconocidos", skippedState: "Omitidos",
                    allGood: "Todos los mensajes llegaron o están en camino.", perMinute: "por minuto",
                    noStatuses:
                        "No llegó ningún estado de entrega para esta ejecución: nada recibía los webhooks de Meta (inicie `dispatcher serve` donde apunta el webhook de Meta, o envíe con --listen). «Aceptados» quiere decir que WhatsApp tomó el mensaje, no que haya fallado; `dispatcher report` muestra los estados que lleguen después.",
                    cost: "Costo de WhatsApp", notYetKnown: "Aún sin confirmar",
                    notYetKnownHint:
                        "WhatsApp aún no dijo si llegaron. Espere: `dispatcher report` muestra los estados que lleguen; si mañana siguen sin confirmar, llame al inquilino.",
                    amount: "Importe", times: "Horas"
                )
            case .en:
                break
            }
            return Labels(
                title: "Delivery report", subtitle: "Invoices sent over WhatsApp", funnel: "Delivery funnel", landlords: "Per landlord",
                failures: "Not delivered: the reason and what to do", retry: "To retry", retryHint: "These messages can be retried with:",
                skipped: "Not sent, on purpose", timeline: "Sends and deliveries per minute", landlord: "Landlord", invoices: "Invoices",
                billed: "Billed", delivered: "Delivered", failed: "Failed", unreachable: "Not on WhatsApp", pending: "Open",
                reason: "Reason", action: "What to do", count: "Count", tenant: "Tenant", phone: "Phone", invoice: "Invoice",
                email: "Email", none: "None.", moreInCSV: "The full list is in messages.csv.", sends: "sends", deliveries: "deliveries",
                manifest: "Manifest", template: "Template", sender: "Sender number", created: "Started", finished: "Finished",
                settle: "Settle window", status: "Status", details: "Details", queued: "Queued", accepted: "Accepted", held: "Held by Meta",
                sent: "Sent",
                read: "Read", unknown: "Unknown", skippedState: "Skipped",
                allGood: "Every message arrived or is on its way.", perMinute: "per minute",
                noStatuses:
                    "No delivery status was received for this run: nothing was receiving Meta's webhooks (start `dispatcher serve` where Meta's webhook points, or send with --listen). \"Accepted\" means WhatsApp took the message, not that it failed; `dispatcher report` shows statuses that arrive later.",
                cost: "WhatsApp cost", notYetKnown: "Not yet known",
                notYetKnownHint:
                    "WhatsApp has not said yet whether these arrived. Wait: `dispatcher report` shows the statuses that come; if they are still unknown tomorrow, call the tenant.",
                amount: "Amount", times: "Times"
            )
        }
    }

    /// A failure's details when they are ours (the engine writes them for Meta's per-user limit),
    /// in the page's language; nil for Meta's own words.
    static func detail(_ text: String, lang: String, clock: LocalClock) -> String? {
        guard text.hasPrefix(FailureDetail.perUserLimit) else { return nil }
        let stamp = String(text.dropFirst(FailureDetail.perUserLimit.count))
        let when = ISO8601DateFormatter().date(from: stamp).map { clock.dateTime($0.timeIntervalSince1970) } ?? stamp
        return ReportLanguageWords(lang).pick(
            "Meta's limit per tenant: retry not before \(when)", "Límite de Meta por inquilino: reintentar no antes de \(when)",
            "Limite de Meta par locataire : relancer pas avant \(when)", "Limite da Meta por inquilino: reenviar não antes de \(when)")
    }

    /// The run's status in the page's language.
    static func statusWord(_ status: RunStatus, lang: String) -> String {
        let w = ReportLanguageWords(lang)
        switch status {
        case .created: return w.pick("created", "creada", "créé", "criada")
        case .sending: return w.pick("sending", "enviando", "en cours d'envoi", "enviando")
        case .settling: return w.pick("waiting for statuses", "esperando estados", "en attente des statuts", "aguardando status")
        case .done: return w.pick("done", "terminada", "terminé", "concluída")
        case .halted: return w.pick("halted", "detenida", "arrêté", "interrompida")
        case .interrupted: return w.pick("interrupted", "interrumpida", "interrompu", "interrompida")
        }
    }

    /// " · sent by email on 2026-12-02T10:00:00Z", " · needs a call"…: what `dispatcher fallback` did.
    static func fallbackNote(_ record: FallbackRecord?, lang: String, clock: LocalClock) -> String {
        guard let record else { return "" }
        let w = ReportLanguageWords(lang)
        let when = clock.dateTime(record.finishedAt ?? record.startedAt)
        switch record.state {
        case .sent:
            return w.pick(
                " · sent by email on \(when)", " · enviada por correo el \(when)", " · envoyée par courriel le \(when)",
                " · enviada por e-mail em \(when)")
        case .noAddress:
            return w.pick(" · no email address: call", " · sin correo: llamar", " · pas de courriel : appeler", " · sem e-mail: ligar")
        case .failed:
            return w.pick(
                " · the email failed", " · el envío por correo falló", " · l'envoi par courriel a échoué", " · o envio por e-mail falhou")
        case .sending:
            return w.pick(
                " · email hand-over unconfirmed", " · envío por correo sin confirmar", " · envoi par courriel non confirmé",
                " · envio por e-mail não confirmado")
        }
    }

    struct Bar { var label: String; var count: Int; var percent: String; var y: Int; var width: Int; var color: String; var textY: Int }
    /// Each outcome cell: invoices, and under them their amount in each currency (a line each, so
    /// that the table fits the page).
    struct LandlordRow {
        struct Cell { var count: String; var amounts: [String] }
        var name: String; var invoices: Int; var billed: [String]; var delivered: Cell; var read: Cell; var open: Cell
        var failed: Cell; var notOnWhatsApp: Cell; var notSent: Cell; var cost: String
    }
    struct FailureGroup { var reason: String; var action: String; var code: String; var count: Int; var rows: [FailureRow]; var more: Bool }
    /// `detailLang`: "en" for Meta's own words, the page's language for ours.
    struct FailureRow {
        var tenant: String; var phone: String; var invoice: String; var email: String; var detail: String; var detailLang: String
    }
    struct RetryRow { var tenant: String; var phone: String; var invoice: String; var reason: String }
    struct SkippedRow { var invoice: String; var tenant: String; var reason: String }
    struct PendingRow { var tenant: String; var phone: String; var invoice: String; var amount: String; var state: String }
    struct Column { var x: Int; var sendY: Int; var sendHeight: Int; var deliveredY: Int; var deliveredHeight: Int; var label: String? }
    struct Fact { var label: String; var value: String }

    var l: Labels
    var lang: String
    var run: String
    var facts: [Fact]
    var bars: [Bar]
    var funnelHeight: Int
    var landlords: [LandlordRow]
    /// Words the labels lack: the "not sent" column, and how the table adds up.
    var notSentLabel: String
    var landlordsNote: String
    /// The details column: Meta's own words on a failure are English, said as such (ours are translated).
    var detailsLabel: String
    var failures: [FailureGroup]
    var noFailures: Bool
    var retryable: [RetryRow]
    var retryableCount: Int
    var moreRetryable: Bool
    var retryCommand: String
    var hasRetryable: Bool
    var skipped: [SkippedRow]
    var hasSkipped: Bool
    var moreSkipped: Bool
    var columns: [Column]
    var hasTimeline: Bool
    var timelineMax: Int
    var generatedAt: String
    /// Meta took messages but not one status came back: said, so that "accepted" is not read as failure.
    var noStatuses: Bool
    /// What Meta charged, in a sentence with the rate card's date; nil without a card.
    var cost: String?
    /// Tenants whose message's outcome is not known yet, by name.
    var pending: [PendingRow]
    var pendingCount: Int
    var hasPending: Bool
    var morePending: Bool

    init(
        run: RunRecord, totals: Totals, settle: String?, landlordFilter: String?, lang: String, generatedAt: Date,
        fallbacks: [String: FallbackRecord] = [:], clock: LocalClock = LocalClock(zone: .current)
    ) {
        func iso(_ seconds: Double?) -> String { seconds.map(clock.dateTime) ?? "" }
        l = Labels.of(lang)
        self.lang = ReportLanguageWords(lang).code.rawValue
        self.run = run.name + (landlordFilter.map { " · \($0)" } ?? "")
        facts = [
            Fact(label: l.manifest, value: run.manifest), Fact(label: l.template, value: run.template),
            Fact(label: l.sender, value: run.sender),
            Fact(label: l.status, value: Self.statusWord(run.status, lang: lang) + (run.haltReason.map { ": \($0)" } ?? "")),
            Fact(label: l.created, value: iso(run.createdAt)), Fact(label: l.finished, value: iso(run.finishedAt)),
            Fact(label: l.times, value: clock.describe(at: run.createdAt)),
        ]
        if let settle { facts.append(Fact(label: l.settle, value: settle)) }

        // The funnel: each stage counts the messages that got at least that far.
        let s = totals.states
        let read = s[.read] ?? 0
        let delivered = (s[.delivered] ?? 0) + read
        let sent = (s[.sent] ?? 0) + delivered
        // Held messages were taken by Meta too: counted as accepted, and shown on their own.
        let accepted = (s[.accepted] ?? 0) + (s[.held] ?? 0) + sent
        noStatuses = accepted > 0 && sent == 0
        let toSend = s.filter { $0.key != .skipped }.values.reduce(0, +)
        let stages: [(String, Int, String)] = [
            (ReportLanguageWords(lang).pick("To send", "Para enviar", "À envoyer", "Para enviar"), toSend, "#8696a0"),
            (l.accepted, accepted, "#53bdeb"),
            (l.sent, sent, "#25a0d8"),
            (l.delivered, delivered, "#25d366"), (l.read, read, "#128c7e"), (l.failed, s[.failed] ?? 0, "#d93025"),
            (l.unknown, s[.unknown] ?? 0, "#f29900"), (l.held, s[.held] ?? 0, "#b06000"),
            (l.queued, (s[.queued] ?? 0) + (s[.sending] ?? 0), "#9aa0a6"),
            (l.skippedState, s[.skipped] ?? 0, "#c5c9cc"),
        ]
        let top = max(1, stages.map(\.1).max() ?? 1)
        bars = stages.enumerated().map { i, stage in
            let percent = toSend > 0 && i < 8 ? String(format: "%.1f %%", Double(stage.1) * 100 / Double(toSend)) : ""
            return Bar(
                label: stage.0, count: stage.1, percent: percent, y: 8 + i * 34, width: max(2, stage.1 * 420 / top),
                color: stage.2, textY: 8 + i * 34 + 18)
        }
        funnelHeight = 16 + stages.count * 34

        let english = LocaleFormatting(locale: ReportLanguageWords(lang).locale)
        func amounts(_ map: [String: Int64]) -> [String] {
            map.keys.sorted().map { code in
                english.money(Money(minorUnits: map[code] ?? 0, currency: Currency(code: code) ?? Currency(code: "USD")!))
            }
        }
        landlords = totals.landlords.keys.sorted().map { name in
            let x = totals.landlords[name]!
            // Invoices by outcome with their money: "2" over "RD$23,400.00", or "0" alone.
            func counted(_ tally: KeyPath<Totals.Counts, ReportSummary.Tally>) -> LandlordRow.Cell {
                let (n, money) = x.outcome(tally)
                return LandlordRow.Cell(count: String(n), amounts: amounts(money.filter { $0.value != 0 }))
            }
            return LandlordRow(
                name: name, invoices: x.invoices, billed: amounts(x.billed), delivered: counted(\.delivered), read: counted(\.read),
                open: counted(\.open), failed: counted(\.failed), notOnWhatsApp: counted(\.notOnWhatsApp), notSent: counted(\.notSent),
                cost: totals.cost.map { CostEstimate.format(x.cost, currency: $0.card.currency) } ?? "—")
        }
        let words = ReportLanguageWords(lang)
        detailsLabel = words.pick(
            "Details", "Detalle (el de Meta, en inglés)", "Détail (celui de Meta, en anglais)", "Detalhe (o da Meta, em inglês)")
        notSentLabel = words.pick("Not sent", "No enviadas", "Non envoyées", "Não enviadas")
        landlordsNote = words.pick(
            "Invoices, each counted once: delivered (read among them), open, failed, not on WhatsApp and not sent add up to the invoices and the amount billed.",
            "Facturas, cada una contada una vez: entregadas (las leídas entre ellas), abiertas, fallidas, sin WhatsApp y no enviadas suman las facturas y lo facturado.",
            "Factures, chacune comptée une fois : remises (les lues parmi elles), en cours, échecs, sans WhatsApp et non envoyées font le total des factures et du facturé.",
            "Faturas, cada uma contada uma vez: entregues (as lidas entre elas), em aberto, falhas, sem WhatsApp e não enviadas somam as faturas e o faturado."
        )
        cost = totals.cost.map { c in
            let w = ReportLanguageWords(lang)
            let total = CostEstimate.format(c.total, currency: c.card.currency)
            let free = c.notCharged.values.reduce(0, +)
            let (n, date) = (c.messages, c.card.effective)
            var text = w.pick(
                "\(total) for \(n) delivered messages (Meta's rates effective \(date), as each status's pricing says)",
                "\(total) por \(n) mensajes entregados (tarifas de Meta vigentes desde el \(date), según el precio que cada estado indica)",
                "\(total) pour \(n) messages remis (tarifs de Meta en vigueur au \(date), selon le prix indiqué par chaque statut)",
                "\(total) por \(n) mensagens entregues (tarifas da Meta em vigor desde \(date), conforme o preço de cada status)")
            if free > 0 {
                text += w.pick(
                    "; \(free) delivered free of charge", "; \(free) entregados sin cargo", "; \(free) remis sans frais",
                    "; \(free) entregues sem custo")
            }
            if c.unpriced > 0 {
                text += w.pick(
                    "; \(c.unpriced) without pricing in their statuses, counted as utility",
                    "; \(c.unpriced) sin precio en sus estados, contados como utilidad",
                    "; \(c.unpriced) sans prix dans leurs statuts, comptés comme utilitaires",
                    "; \(c.unpriced) sem preço nos seus status, contadas como utilidade")
            }
            return text + "."
        }
        let pageLang = self.lang
        failures = totals.failures.values.sorted { $0.count > $1.count }.map { f in
            FailureGroup(
                reason: f.explanation.reason, action: f.explanation.action, code: f.code.map(String.init) ?? "—", count: f.count,
                rows: f.rows.map {
                    FailureRow(
                        tenant: $0.tenant, phone: $0.phone, invoice: $0.invoice,
                        email: ($0.email ?? "—") + DeliveryPage.fallbackNote(fallbacks[$0.invoice], lang: lang, clock: clock),
                        detail: Self.detail($0.detail ?? "", lang: lang, clock: clock) ?? $0.detail ?? "",
                        detailLang: Self.detail($0.detail ?? "", lang: lang, clock: clock) == nil ? "en" : pageLang)
                },
                more: f.count > f.rows.count)
        }
        noFailures = failures.isEmpty
        let states: [MessageState: String] = [
            .queued: l.queued, .sending: l.queued, .accepted: l.accepted, .held: l.held, .sent: l.sent,
        ]
        pending = totals.pending.map { p in
            PendingRow(
                tenant: p.tenantName, phone: displayPhone(p.phone), invoice: p.invoiceID,
                amount: english.money(Money(minorUnits: p.amountMinor, currency: Currency(code: p.currency) ?? Currency(code: "USD")!)),
                state: states[p.state] ?? p.state.rawValue)
        }
        pendingCount = totals.pendingCount
        hasPending = totals.pendingCount > 0
        morePending = totals.pendingCount > pending.count
        retryable = totals.retryable.map { RetryRow(tenant: $0.tenant, phone: $0.phone, invoice: $0.invoice, reason: $0.reason) }
        retryableCount = totals.retryableCount
        moreRetryable = totals.retryableCount > retryable.count
        hasRetryable = totals.retryableCount > 0
        let unknown = s[.unknown] ?? 0
        retryCommand = "dispatcher retry \(run.name)" + (unknown > 0 ? " --include-unknown" : "")
        skipped = totals.skipped.map { SkippedRow(invoice: $0.invoice, tenant: $0.tenant, reason: $0.reason) }
        hasSkipped = !skipped.isEmpty
        moreSkipped = totals.skippedCount > skipped.count

        // The timeline: at most 120 minutes of columns.
        let minutes = Set(totals.sendsPerMinute.keys).union(totals.deliveriesPerMinute.keys).sorted()
        hasTimeline = !minutes.isEmpty
        let shown = minutes.isEmpty ? [] : Array(minutes.first!...min(minutes.first! + 119, minutes.last!))
        let peak = max(1, shown.map { max(totals.sendsPerMinute[$0] ?? 0, totals.deliveriesPerMinute[$0] ?? 0) }.max() ?? 1)
        timelineMax = peak
        let width = shown.isEmpty ? 0 : max(4, min(40, 640 / shown.count))
        columns = shown.enumerated().map { i, minute in
            let sends = (totals.sendsPerMinute[minute] ?? 0) * 110 / peak
            let deliveries = (totals.deliveriesPerMinute[minute] ?? 0) * 110 / peak
            let label =
                i % max(1, shown.count / 6) == 0
                ? clock.hourMinute(Double(minute * 60)) : nil
            return Column(
                x: 40 + i * width, sendY: 120 - sends, sendHeight: sends, deliveredY: 120 - deliveries, deliveredHeight: deliveries,
                label: label)
        }
        self.generatedAt = iso(generatedAt.timeIntervalSince1970)
    }
}

/// Times on the page in one time zone (`--timezone`, default the machine's), said once on the page.
public struct LocalClock: Sendable, CustomStringConvertible {
    public let zone: TimeZone

    public init(zone: TimeZone) { self.zone = zone }

    func parts(_ seconds: Double) -> DateComponents {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return calendar.dateComponents([.year, .month, .day, .hour, .minute], from: Date(timeIntervalSince1970: seconds))
    }

    /// `2026-12-01 22:14`
    public func dateTime(_ seconds: Double) -> String {
        let c = parts(seconds)
        return String(format: "%04d-%02d-%02d %02d:%02d", c.year!, c.month!, c.day!, c.hour!, c.minute!)
    }

    /// `22:14`
    public func hourMinute(_ seconds: Double) -> String {
        let c = parts(seconds)
        return String(format: "%02d:%02d", c.hour!, c.minute!)
    }

    /// `America/Santo_Domingo (UTC-04:00)`, the offset on the run's day (summer time included).
    public var description: String { describe(at: Date().timeIntervalSince1970) }

    public func describe(at seconds: Double) -> String {
        let offset = zone.secondsFromGMT(for: Date(timeIntervalSince1970: seconds))
        let sign = offset < 0 ? "-" : "+"
        return String(format: "%@ (UTC%@%02d:%02d)", zone.identifier, sign, abs(offset) / 3600, abs(offset) % 3600 / 60)
    }
}
