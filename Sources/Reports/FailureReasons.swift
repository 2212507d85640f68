import Dispatcher
import WhatsApp

/// A failure in words a landlord can act on.
public struct FailureExplanation: Sendable, Equatable {
    public var reason: String
    public var action: String
    public var retryable: Bool
}

/// Meta's codes in plain words (English and Spanish), with what to do next.
public func explain(code: Int?, title: String?, state: String, lang: String) -> FailureExplanation {
    let es = lang.hasPrefix("es")
    func text(_ en: String, _ sp: String) -> String { es ? sp : en }
    if state == "unknown" {
        return .init(
            reason: text("Unknown whether Meta received it (no answer was recorded)", "No se sabe si Meta lo recibió (no hubo respuesta)"),
            action: text(
                "Wait for its status; if none comes, retry with --include-unknown",
                "Esperar su estado; si no llega, reintentar con --include-unknown"),
            retryable: true)
    }
    let errorClass = ErrorClass.of(code: code)
    switch code {
    case 131026:
        return .init(
            reason: text(
                "This number is not on WhatsApp, or cannot receive the message",
                "Este número no tiene WhatsApp o no puede recibir el mensaje"),
            action: text("Send the invoice by email", "Enviar la factura por correo electrónico"), retryable: false)
    case 131050:
        return .init(
            reason: text("The tenant chose to stop receiving these messages", "El inquilino pidió no recibir estos mensajes"),
            action: text("Send the invoice by email or another channel", "Enviar la factura por correo u otro medio"), retryable: false)
    case 131049:
        return .init(
            reason: text("Meta held it back to limit messages to this user", "Meta lo retuvo para limitar los mensajes a este usuario"),
            action: text("Retry after 24 hours", "Reintentar después de 24 horas"), retryable: true)
    case 131047:
        return .init(
            reason: text("More than 24 hours since the tenant last wrote", "Pasaron más de 24 horas desde el último mensaje del inquilino"),
            action: text("Send with an approved template", "Enviar con una plantilla aprobada"), retryable: false)
    case 132000, 132012, 132018, 132005, 131008:
        return .init(
            reason: text("The message did not match the approved template", "El mensaje no coincidía con la plantilla aprobada"),
            action: text("Fix the template definition, then send again", "Corregir la definición de la plantilla y volver a enviar"),
            retryable: false)
    default:
        break
    }
    switch errorClass {
    case .throttled, .pairRate:
        return .init(
            reason: text("Sent faster than Meta allows", "Enviado más rápido de lo que Meta permite"),
            action: text("Retry", "Reintentar"), retryable: true)
    case .transient:
        return .init(
            reason: text("A temporary problem at Meta or on the network", "Un problema temporal en Meta o en la red")
                + (title.map { " (\($0))" } ?? ""),
            action: text("Retry", "Reintentar"), retryable: true)
    case .halt:
        return .init(
            reason: text("Sending was halted: ", "Se detuvo el envío: ") + (title ?? ""),
            action: text("Fix the account or token, then retry", "Corregir la cuenta o el token y reintentar"), retryable: true)
    default:
        return .init(
            reason: text("Meta error", "Error de Meta") + (code.map { " \($0)" } ?? "") + (title.map { ": \($0)" } ?? ""),
            action: text("See Meta's error code reference", "Ver la referencia de códigos de error de Meta"),
            retryable: errorClass.isRetryable)
    }
}
