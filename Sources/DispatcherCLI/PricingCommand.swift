import ArgumentParser
import Dispatcher
import Foundation
import Reports
import Store

/// `dispatcher pricing import|show`: Meta's rate cards, as data an operator updates without a release.
struct PricingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pricing",
        abstract: "Import Meta's rate card (CSV) or show the one in force: what estimates and reports price messages with.",
        discussion: """
            This build carries Meta's USD cards effective 2026-04-01 and 2026-10-01 (docs/pricing.md \
            says where they came from). Meta publishes a new card each quarter: download "USD rates" \
            (and "USD volume tiers") from developers.facebook.com/docs/whatsapp/pricing, saved as \
            CSV, and import it; estimates then use the newest card in force on the run's day.
            """,
        subcommands: [Import.self, Show.self],
        defaultSubcommand: Show.self)

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep a rate card file in the database (list rates or volume tiers, Meta's CSV layout).")

        @Argument(help: "Meta's rate card as CSV.")
        var file: String

        @Option(help: "The day the card applies from (YYYY-MM-DD), when the file's notes do not say it.")
        var effective: String?

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let settings = Settings(environment: ProcessInfo.processInfo.environment)
            guard let data = FileManager.default.contents(atPath: file), data.count <= 5_000_000 else {
                throw ValidationError("cannot read \(file) (or it is over 5 MB: a rate card is a few KB)")
            }
            let text = String(decoding: data, as: UTF8.self)
            let card: RateCard
            do {
                card = try RateCard.parse(text, source: (file as NSString).lastPathComponent, effective: effective)
            } catch let error as RateCardError {
                throw ValidationError("\(file): \(error.description)")
            }
            let store = try await database.open(settings: settings)
            // The same file again (a re-run of an import script) is kept once: cards are never
            // replaced, and a second copy only listed the card twice.
            if try await store.rateCards().contains(where: {
                $0.effective == card.effective && $0.currency == card.currency && $0.text == text
            }) {
                print("\(file) is imported already (\(card.currency) card effective \(card.effective)): nothing changed")
                return
            }
            try await store.saveRateCard(
                StoredRateCard(
                    effective: card.effective, currency: card.currency, source: card.source,
                    importedAt: Date().timeIntervalSince1970, text: text))
            let tiered = card.tiers.count
            print(
                "imported \(file): \(card.currency) card effective \(card.effective), \(card.rates.count) markets with rates"
                    + (tiered > 0 ? ", volume tiers for \(tiered) markets" : ""))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The rate card in force on a day, and every card known.")

        @Option(help: "The day (YYYY-MM-DD; default today).")
        var on: String?

        @OptionGroup var database: DatabaseOptions

        @Flag(help: "Print one JSON object on stdout.")
        var json = false

        func run() async throws {
            let settings = Settings(environment: ProcessInfo.processInfo.environment)
            let day = on ?? isoDay(Date())
            var text = day
            guard text.withUTF8({ parseDate($0) }) != nil, day.count == 10 else {
                throw ValidationError("--on '\(day)' is not a day: write it YYYY-MM-DD (2026-03-01)")
            }
            let store = try await StoreOpener.openExisting(url: database.resolved(settings: settings))
            let (card, imported) = try await rateCard(on: day, store: store)
            guard let card else { throw ValidationError("no rate card in USD") }
            if json {
                struct CardJSON: Encodable {
                    var effective, currency, source: String
                    var rates: [String: [String: String]]
                    var tiered_markets: [String]
                }
                return try Console(json: true).emit(
                    CardJSON(
                        effective: card.effective, currency: card.currency, source: card.source,
                        rates: card.rates.mapValues {
                            Dictionary(uniqueKeysWithValues: $0.map { ($0.key.rawValue, CostEstimate.decimal($0.value)) })
                        },
                        tiered_markets: card.tiers.keys.sorted()))
            }
            if card.effective > day {
                // (Estimates of such a day use it: it is the nearest there is.)
                print(
                    "No card known was in force on \(day); the earliest is the \(card.currency) card effective \(card.effective) (\(card.source))"
                )
            } else {
                print("In force on \(day): \(card.currency) card effective \(card.effective) (\(card.source))")
            }
            print("  market                              marketing   utility  authentication")
            for market in card.markets {
                let r = card.rates[market]!
                func cell(_ c: PricingCategory) -> String {
                    r[c].map { CostEstimate.format($0, currency: card.currency) } ?? "n/a"
                }
                print(
                    "  \(market.padding(toLength: 34, withPad: " ", startingAt: 0))  \(cell(.marketing))  \(cell(.utility))  \(cell(.authentication))"
                        + (card.tiers[market] != nil ? "  (volume tiers)" : ""))
            }
            print(
                "Cards: \(RateCards.builtIn.map { "\($0.effective) (built in)" }.joined(separator: ", "))"
                    + imported.map { ", \($0.effective) (imported from \($0.source))" }.joined())
        }
    }
}

/// The card in force on `day` (the store's imported cards and the built-in ones), and the imported ones.
func rateCard(on day: String, store: (any DispatchStore)?) async throws -> (RateCard?, [RateCard]) {
    try await RateCards.inForce(on: day, store: store) { FileHandle.standardError.write(Data("warning: \($0)\n".utf8)) }
}

/// `2026-12-02`, in the machine's time zone.
func isoDay(_ date: Date) -> String { localDay(date.timeIntervalSince1970) }
