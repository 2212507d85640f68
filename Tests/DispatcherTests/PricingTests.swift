import Testing

@testable import Dispatcher

@Suite("Rate cards, markets and estimates")
struct PricingTests {
    /// An excerpt of Meta's volume-tier CSV (effective 2026-04-01), as Meta lays it out: two header
    /// rows naming the categories over their columns, the market on its first row only, `--` for
    /// the open end, thresholds with thousands commas.
    static let tiersExcerpt = """
        "Cost per message in USD on the WhatsApp Business Platform, effective April 1, 2026 - Reflecting volume tiers for utility and authentication messages",,,,,,,,,,,,,,,,
        Volume tiers apply only to utility and authentication messages. Learn more here:,,,,,https://developers.facebook.com/docs/whatsapp/pricing/volume-tiers,,,,,,,,,,,
        ,,Utility,,,,,Authentication,,,,,Authentication-International,,,,
        ,,Messages (per month),,What we charge,,,Messages (per month),,What we charge,,,Messages (per month),,What we charge,,
        "Market
        (per rate card)",Currency,From,To,Rate type,Rate,vs. List rate,From,To,Rate type,Rate,vs. List rate,From,To,Rate type,Rate,vs. List rate
        Rest of Latin America,USD,0,"100,000",List rate,0.0113,0%,0,"120,000",List rate,0.0113,0%,n/a,n/a,n/a,n/a,n/a
        ,USD,"100,001","1,000,000",Tier rate,0.0107,-5%,"120,001","400,000",Tier rate,0.0107,-5%,n/a,n/a,n/a,n/a,n/a
        ,USD,"1,000,001","4,500,000",Tier rate,0.0102,-10%,"400,001","1,000,000",Tier rate,0.0102,-10%,n/a,n/a,n/a,n/a,n/a
        ,USD,"4,500,001","15,000,000",Tier rate,0.0096,-15%,"1,000,001","5,000,000",Tier rate,0.0096,-15%,n/a,n/a,n/a,n/a,n/a
        ,USD,"15,000,001","30,000,000",Tier rate,0.0090,-20%,"5,000,001","10,000,000",Tier rate,0.0090,-20%,n/a,n/a,n/a,n/a,n/a
        ,USD,"30,000,001",--,Tier rate,0.0085,-25%,"10,000,001",--,Tier rate,0.0085,-25%,n/a,n/a,n/a,n/a,n/a
        India,USD,0,"25,000,000",List rate,0.0014,0%,0,"750,000",List rate,0.0014,0%,0,"750,000",List rate,0.0304,0%
        ,USD,"25,000,001","50,000,000",Tier rate,0.0013,-6%,"750,001","15,000,000",Tier rate,0.0013,-6%,"750,001","15,000,000",Tier rate,0.0286,-6%
        """

    @Test("both built-in cards read: Meta's April 2026 file as published, and October 2026's, with their dates and markets")
    func builtIn() throws {
        let cards = RateCards.builtIn
        #expect(cards.map(\.effective) == ["2026-04-01", "2026-10-01"])
        let april = cards[0]
        #expect(april.currency == "USD")
        #expect(april.rates.count == 32)
        #expect(april.rates["Rest of Latin America"]?[.utility] == 11_300)
        #expect(april.rates["Germany"]?[.marketing] == 136_500)
        #expect(april.rates["India"]?[.authenticationInternational] == 30_400)
        #expect(april.rates["Argentina"]?[.authenticationInternational] == nil)  // "n/a"
        let october = cards[1]
        #expect(october.rates.count == 47)
        #expect(october.rates["Poland"]?[.utility] == 12_200)
        #expect(october.rates["Spain"]?[.marketing] == 70_700)
    }

    @Test("the card in force is the newest on or before the day; Meta's files of one date (list rates, tiers) make one card")
    func inForce() throws {
        #expect(RateCards.inForce(on: "2026-05-15")?.effective == "2026-04-01")
        #expect(RateCards.inForce(on: "2026-12-02")?.effective == "2026-10-01")
        #expect(RateCards.inForce(on: "2025-01-01")?.effective == "2026-04-01")  // before every card: the oldest
        let tiers = try RateCard.parse(Self.tiersExcerpt, source: "USD_volume_tiers.csv")
        let list = try RateCard.parse(
            "Market,Currency,Marketing,Utility\nRest of Latin America,USD,0.0740,0.0120\n", source: "mine.csv", effective: "2027-01-01")
        let inJanuary = try #require(RateCards.inForce(on: "2027-02-01", imported: [list]))
        #expect(inJanuary.rates["Rest of Latin America"]?[.utility] == 12_000)
        #expect(inJanuary.source == "mine.csv")
        // Meta's two files of one date (list rates, volume tiers) make one card.
        let april = try #require(RateCards.inForce(on: "2026-04-02", imported: [tiers]))
        #expect(april.rates.count == 32)
        #expect(april.tiers["India"]?[.utility]?.count == 2)
        #expect(april.source == "USD_volume_tiers.csv + built in: meta-usd-2026-04-01.csv")
    }

    @Test("Meta's volume-tier layout reads, and tiers price each message at its band's rate")
    func tiers() throws {
        let tiers = try RateCard.parse(Self.tiersExcerpt, source: "tiers.csv")
        #expect(tiers.effective == "2026-04-01")
        let latam = try #require(tiers.tiers["Rest of Latin America"]?[.utility])
        #expect(latam.map(\.from) == [1, 100_001, 1_000_001, 4_500_001, 15_000_001, 30_000_001])
        #expect(tiers.tiers["India"]?[.authenticationInternational]?.map(\.rate) == [30_400, 28_600])
        let card = RateCards.builtIn[0].merged(with: tiers)
        // 150,000 utility messages to Rest of Latin America: 100,000 × 0.0113 + 50,000 × 0.0107 = 1,130 + 535.
        #expect(card.cost(market: "Rest of Latin America", category: .utility, count: 150_000) == 1_665_000_000)
        // After 90,000 earlier in the month: 10,000 × 0.0113 + 10,000 × 0.0107.
        #expect(card.cost(market: "Rest of Latin America", category: .utility, count: 20_000, before: 90_000) == 220_000_000)
        // Marketing has no tiers: list rate.
        #expect(card.cost(market: "Rest of Latin America", category: .marketing, count: 10) == 740_000)
    }

    @Test("a card that is not one says why, with the line")
    func badCards() {
        #expect(throws: RateCardError.self) { try RateCard.parse("hello,world\n", source: "x") }
        // No effective date, neither in the notes nor given.
        #expect(throws: RateCardError.self) { try RateCard.parse("Market,Currency,Marketing,Utility\nSpain,USD,0.07,0.02\n", source: "x") }
        #expect(throws: RateCardError.self) {
            try RateCard.parse("Market,Currency,Marketing,Utility\nSpain,USD,cheap,0.02\n", source: "x", effective: "2026-01-01")
        }
        #expect(throws: RateCardError.self) {
            try RateCard.parse(
                "Market,Currency,Marketing,Utility\nSpain,USD,0.07,0.02\nChile,EUR,0.08,0.02\n", source: "x", effective: "2026-01-01")
        }
        #expect(throws: RateCardError.self) {
            try RateCard.parse("Market,Currency,Marketing,Utility\nSpain,USD,0.07,0.02\n", source: "x", effective: "2026-13-01")
        }
        // A rate is a plain decimal: a comma, an exponent or a sign is refused, never guessed.
        for bad in ["\"0,0250\"", "8.00E-04", "-0.01", "1234567.0"] {
            #expect(throws: RateCardError.self, "\(bad)") {
                try RateCard.parse("Market,Currency,Marketing,Utility\nSpain,USD,0.07,\(bad)\n", source: "x", effective: "2026-01-01")
            }
        }
        #expect(throws: RateCardError.self) {  // a quote never closed would swallow every market after it
            try RateCard.parse(
                "Market,Currency,Marketing,Utility\n\"Spain,USD,0.07,0.02\nChile,USD,0.08,0.02\n", source: "x", effective: "2026-01-01")
        }
        do {
            _ = try RateCard.parse(
                "Market,Currency,Marketing,Utility\nSpain,USD,0.07,0.02\nChile,USD,x,y\n", source: "x", effective: "2026-01-01")
            Issue.record("a rate 'x' was accepted")
        } catch let error as RateCardError {
            #expect(error.description.contains("line 3"))
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test("one file with the list rates, a note below, then the tiers; a partial card takes the rest from the card before it")
    func oneFileAndPartial() throws {
        let lines = Self.tiersExcerpt.split(separator: "\n", omittingEmptySubsequences: false).dropFirst(2).joined(separator: "\n")
        let file = """
            "Cost per message in USD on the WhatsApp Business Platform, effective April 1, 2026",,,,,,
            Market,Currency,Marketing,Utility,Authentication,"Authentication-
            International",Service
            Rest of Latin America,USD,0.0740,0.0113,0.0113,n/a,n/a
            Other,USD,0.0604,0.0077,0.0077,n/a,n/a
            Rates change quarterly; see Meta's page,,,,,,
            \(lines)
            """
        let card = try RateCard.parse(file, source: "both.csv")
        #expect(card.rates.count == 2)
        #expect(card.tiers["Rest of Latin America"]?[.utility]?.count == 6)
        // A January card giving one market: Spain still has its price, from October's.
        let partial = try RateCard.parse(
            "Market,Currency,Marketing,Utility\nRest of Latin America,USD,0.0750,0.0120\n", source: "mine.csv", effective: "2027-01-01")
        let january = try #require(RateCards.inForce(on: "2027-01-15", imported: [partial]))
        #expect(january.rates["Rest of Latin America"]?[.utility] == 12_000)
        #expect(january.rates["Spain"]?[.utility] == 20_000)
        var estimate = CostEstimate(
            card: try RateCard.parse("Market,Currency,Marketing,Utility\nSpain,USD,0.07,n/a\n", source: "m", effective: "2026-01-01"))
        let spain = estimate.key(organization: nil, landlord: nil, phone: "34600111222", category: .utility)
        estimate.add(spain)
        #expect(estimate.withoutRate == 1)
    }

    @Test("numbers find their market: the country's own when the card has one, else its group, else Other")
    func markets() {
        let map = MarketMap.builtIn
        let april = RateCards.builtIn[0], october = RateCards.builtIn[1]
        #expect(map.market(of: "18095550101", on: april) == "Rest of Latin America")  // Dominican Republic, +1 809
        #expect(map.market(of: "18495550103", on: april) == "Rest of Latin America")
        #expect(map.market(of: "12125550100", on: april) == "North America")
        #expect(map.market(of: "34600111222", on: april) == "Spain")
        #expect(map.market(of: "351912345678", on: april) == "Rest of Western Europe")  // Portugal
        #expect(map.market(of: "48501234567", on: april) == "Rest of Central & Eastern Europe")  // Poland, grouped in April
        #expect(map.market(of: "48501234567", on: october) == "Poland")  // its own market since
        #expect(map.market(of: "77011234567", on: october) == "Kazakhstan")  // +7 7…, not Russia
        #expect(map.market(of: "79161234567", on: october) == "Russia")
        #expect(map.market(of: "5350000000", on: april) == "Other")  // Cuba: in no group
        #expect(map.market(of: "8821234567", on: april) == "Other")  // not in the table at all
    }

    @Test("an estimate finds the market a number's start gives once, and the same as asking the map each time")
    func marketsRemembered() {
        let map = MarketMap.builtIn
        for card in RateCards.builtIn {
            var estimate = CostEstimate(card: card)
            var random = SystemRandomNumberGenerator()
            let starts = ["1809", "1829", "1212", "1", "34", "351", "48", "77", "79", "535", "882", "999", "44", "521", "57"]
            var phones = ["", "+", "1", "18", "+1809", "++18095550101", "+18095550101", "1809x550101", "+4420", "7", "07011234567"]
            for _ in 0..<2_000 {
                let start = starts.randomElement(using: &random)!
                let rest = String((0..<Int.random(in: 0...9, using: &random)).map { _ in "0123456789".randomElement(using: &random)! })
                phones.append((Bool.random(using: &random) ? "+" : "") + start + rest)
            }
            for phone in phones + phones.shuffled(using: &random) {
                let found = estimate.key(organization: nil, landlord: nil, phone: phone, category: .utility).market
                #expect(found == map.market(of: phone, on: card), "\(phone)")
            }
        }
    }

    @Test("an estimate adds up per landlord and market, and prints with the card's currency")
    func estimate() {
        var e = CostEstimate(card: RateCards.builtIn[1])
        let caribe = e.key(organization: nil, landlord: "Caribe", phone: "18095550101", category: .utility)
        let proceres = e.key(organization: nil, landlord: "Próceres", phone: "34600111222", category: .utility)
        for _ in 0..<13 { e.add(caribe) }
        for _ in 0..<2 { e.add(proceres) }
        let another = e.key(organization: nil, landlord: "Caribe", phone: "18295550102", category: .utility)
        e.remove(another)
        // 12 × 0.0113 + 2 × 0.0200 = 0.1356 + 0.0400.
        #expect(e.total == 175_600)
        #expect(e.messages == 14)
        #expect(CostEstimate.format(e.total, currency: "USD") == "US$0.1756")
        #expect(CostEstimate.decimal(e.total) == "0.175600")
        #expect(e.totals(by: { $0.landlord }).map(\.0) == ["Caribe", "Próceres"])
        #expect(e.totals(by: { $0.market }).map(\.cost) == [135_600, 40_000])
    }
}
