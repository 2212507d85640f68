import Dispatcher
import Foundation
import Store
import WhatsApp

/// A failure in words a landlord can act on.
public struct FailureExplanation: Sendable, Equatable {
    public var reason: String
    public var action: String
    public var retryable: Bool
}

/// Meta's codes in plain words (English, Spanish, French, Portuguese), with what to do next:
/// our own table, never Meta's English titles alone.
public func explain(code: Int?, title: String?, state: String, lang: String) -> FailureExplanation {
    let language = ReportLanguageWords(lang)
    func text(_ en: String, _ sp: String, _ fr: String, _ pt: String) -> String { language.pick(en, sp, fr, pt) }
    if state == "unknown" {
        return .init(
            reason: text(
                "Unknown whether Meta received it (no answer was recorded)", "No se sabe si Meta lo recibió (no hubo respuesta)",
                "On ne sait pas si Meta l'a reçu (aucune réponse enregistrée)",
                "Não se sabe se a Meta o recebeu (nenhuma resposta registrada)"),
            action: text(
                "Wait for its status; if none comes, retry with --include-unknown",
                "Esperar su estado; si no llega, reintentar con --include-unknown",
                "Attendre son statut ; s'il ne vient pas, relancer avec --include-unknown",
                "Aguardar o status; se não vier, reenviar com --include-unknown"),
            retryable: true)
    }
    let errorClass = ErrorClass.of(code: code)
    switch code {
    case 131026:
        return .init(
            reason: text(
                "This number is not on WhatsApp, or cannot receive the message",
                "Este número no tiene WhatsApp o no puede recibir el mensaje",
                "Ce numéro n'est pas sur WhatsApp ou ne peut pas recevoir le message",
                "Este número não tem WhatsApp ou não pode receber a mensagem"),
            action: text(
                "Send the invoice by email", "Enviar la factura por correo electrónico", "Envoyer la facture par courriel",
                "Enviar a fatura por e-mail"), retryable: false)
    case 131050:
        return .init(
            reason: text(
                "The tenant chose to stop receiving these messages", "El inquilino pidió no recibir estos mensajes",
                "Le locataire a demandé à ne plus recevoir ces messages", "O inquilino pediu para não receber estas mensagens"),
            action: text(
                "Send the invoice by email or another channel", "Enviar la factura por correo u otro medio",
                "Envoyer la facture par courriel ou un autre moyen", "Enviar a fatura por e-mail ou outro meio"), retryable: false)
    case 131049:
        return .init(
            reason: text(
                "Meta held it back to limit messages to this user", "Meta lo retuvo para limitar los mensajes a este usuario",
                "Meta l'a retenu pour limiter les messages à cet utilisateur", "A Meta o reteve para limitar as mensagens a este usuário"),
            action: text("Retry after 24 hours", "Reintentar después de 24 horas", "Relancer après 24 heures", "Reenviar após 24 horas"),
            retryable: true)
    case 131047:
        return .init(
            reason: text(
                "More than 24 hours since the tenant last wrote", "Pasaron más de 24 horas desde el último mensaje del inquilino",
                "Plus de 24 heures depuis le dernier message du locataire", "Mais de 24 horas desde a última mensagem do inquilino"),
            action: text(
                "Send with an approved template", "Enviar con una plantilla aprobada", "Envoyer avec un modèle approuvé",
                "Enviar com um modelo aprovado"), retryable: false)
    case 132000, 132012, 132018, 132005, 131008:
        return .init(
            reason: text(
                "The message did not match the approved template", "El mensaje no coincidía con la plantilla aprobada",
                "Le message ne correspondait pas au modèle approuvé", "A mensagem não correspondia ao modelo aprovado"),
            action: text(
                "Fix the template definition, then send again", "Corregir la definición de la plantilla y volver a enviar",
                "Corriger la définition du modèle, puis renvoyer", "Corrigir a definição do modelo e enviar de novo"),
            retryable: false)
    default:
        break
    }
    switch errorClass {
    case .throttled, .pairRate:
        return .init(
            reason: text(
                "Sent faster than Meta allows", "Enviado más rápido de lo que Meta permite", "Envoyé plus vite que Meta ne le permet",
                "Enviado mais rápido do que a Meta permite"),
            action: text("Retry", "Reintentar", "Relancer", "Reenviar"), retryable: true)
    case .transient:
        return .init(
            reason: text(
                "A temporary problem at Meta or on the network", "Un problema temporal en Meta o en la red",
                "Un problème passager chez Meta ou sur le réseau", "Um problema temporário na Meta ou na rede")
                + (title.map { " (\($0))" } ?? ""),
            action: text("Retry", "Reintentar", "Relancer", "Reenviar"), retryable: true)
    case .halt:
        return .init(
            reason: text("Sending was halted: ", "Se detuvo el envío: ", "L'envoi a été arrêté : ", "O envio foi interrompido: ")
                + (title ?? ""),
            action: text(
                "Fix the account or token, then retry", "Corregir la cuenta o el token y reintentar",
                "Corriger le compte ou le jeton, puis relancer", "Corrigir a conta ou o token e reenviar"), retryable: true)
    default:
        return .init(
            reason: text("Meta error", "Error de Meta", "Erreur Meta", "Erro da Meta") + (code.map { " \($0)" } ?? "")
                + (title.map { ": \($0)" } ?? ""),
            action: text(
                "See Meta's error code reference", "Ver la referencia de códigos de error de Meta",
                "Voir la référence des codes d'erreur de Meta", "Ver a referência de códigos de erro da Meta"),
            retryable: errorClass.isRetryable)
    }
}

/// The report's languages, the property system's locales: English, Spanish, French, Portuguese.
struct ReportLanguageWords: Sendable {
    enum Code: String { case en, es, fr, pt }
    let code: Code

    init(_ lang: String) {
        code = Code(rawValue: String(lang.lowercased().prefix(2))) ?? .en
    }

    func pick(_ en: String, _ es: String, _ fr: String, _ pt: String) -> String {
        switch code {
        case .en: en
        case .es: es
        case .fr: fr
        case .pt: pt
        }
    }

    /// How amounts are written on the page.
    var locale: String { pick("en", "es-DO", "fr-FR", "pt-BR") }
}

/// Why a message was not sent, as the store keeps it (in English, for the CSV and the logs), in
/// the page's language: the reasons the engine writes are recognised by their beginning; any
/// other is shown as kept.
func skipReason(_ reason: String, lang: String) -> String {
    let w = ReportLanguageWords(lang)
    if reason.hasPrefix(SkipReason.nothingDue) {
        // "nothing due (amount 0.00 DOP)", or the send API's "nothing due (totalAmount 0): nothing was sent".
        var amount = ""
        if let open = reason.firstIndex(of: "("), let close = reason[open...].firstIndex(of: ")") {
            amount = reason[reason.index(after: open)..<close].split(separator: " ", maxSplits: 1).last.map(String.init) ?? ""
        }
        let suffix = amount.isEmpty ? "" : " (\(w.pick("amount", "importe", "montant", "valor")) \(amount))"
        return w.pick("nothing due", "nada que cobrar", "rien à payer", "nada a cobrar") + suffix
    }
    if reason.hasPrefix(SkipReason.optedOut) {
        return w.pick(
            "opted out: the tenant asked to stop receiving messages", "baja: el inquilino pidió no recibir más mensajes",
            "désinscrit : le locataire a demandé à ne plus recevoir de messages",
            "descadastrado: o inquilino pediu para não receber mais mensagens")
    }
    if reason.hasPrefix(SkipReason.alreadySent), let open = reason.firstIndex(of: "("),
        let close = reason[open...].firstIndex(of: ")")
    {
        let run = reason[reason.index(reason.startIndex, offsetBy: SkipReason.alreadySent.count)..<open]
            .trimmingCharacters(in: .whitespaces)
        let state = stateWord(String(reason[reason.index(after: open)..<close]), w)
        return w.pick(
            "already sent in run \(run) (\(state)); --resend sends it again",
            "ya enviada en la ejecución \(run) (\(state)); --resend la envía de nuevo",
            "déjà envoyée dans l'envoi \(run) (\(state)) ; --resend l'envoie à nouveau",
            "já enviada na execução \(run) (\(state)); --resend envia de novo")
    }
    return reason
}

/// One message's state in a sentence.
private func stateWord(_ state: String, _ w: ReportLanguageWords) -> String {
    switch MessageState(rawValue: state) {
    case .queued, .sending: w.pick("queued", "en cola", "en file", "na fila")
    case .unknown: w.pick("unknown", "desconocido", "inconnu", "desconhecido")
    case .accepted: w.pick("accepted", "aceptado", "accepté", "aceito")
    case .held: w.pick("held by Meta", "retenido por Meta", "retenu par Meta", "retido pela Meta")
    case .sent: w.pick("sent", "enviado", "envoyé", "enviado")
    case .delivered: w.pick("delivered", "entregado", "remis", "entregue")
    case .read: w.pick("read", "leído", "lu", "lido")
    case .failed: w.pick("failed", "fallido", "échoué", "falhou")
    case .skipped: w.pick("skipped", "omitido", "omis", "omitido")
    case nil: state
    }
}
