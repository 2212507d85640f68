/// What the fuzzers (`scripts/fuzz`, libFuzzer) and the corpus replay test run: each entry point
/// takes any bytes and must not crash, hang or leak; where a property must hold whatever the
/// input (an amount that parses formats back to itself, a number that normalises is E.164), a
/// violation stops the process, which the fuzzer reports as a finding.
public enum FuzzTargets {
    /// A manifest through the whole import: reader, validator and, when given, the renderer.
    public static func manifest(_ bytes: [UInt8], format: ManifestFormat, renderer: MessageRenderer?) {
        let reader: any ManifestReader = format == .csv ? CSVManifestReader(bytes: bytes) : XMLManifestReader(bytes: bytes, chunkSize: 64)
        let importer = ManifestImporter(options: ValidationOptions(defaultCountryCode: "1"))
        let summary = try? importer.importManifest(from: reader, format: format) { invoice in
            check(invoice.amount.minorUnits.magnitude <= UInt64(Money.maximumMinorUnits), "amount past 15 digits: \(invoice.amount)")
            for phone in invoice.phones { checkE164(phone) }
            if let renderer, case .success(let messages) = renderer.render(invoice) {
                for message in messages { checkE164(message.phone) }
            }
        }
        check(summary != nil, "the importer threw although no callback did")
        if let summary {
            check(summary.records >= summary.valid + summary.invalidRecords, "records miscounted: \(summary)")
            check(summary.issueCount >= summary.issues.count, "issues miscounted")
        }
    }

    /// Amounts and phone numbers as the validator parses them.
    public static func amountsAndPhones(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { raw in
            for digits in [0, 2, 3, 4] {
                guard case .success(let minor) = parseAmount(raw, digits: digits) else { continue }
                check(minor.magnitude <= UInt64(Money.maximumMinorUnits), "amount past 15 digits: \(minor)")
                // What parses formats back to the same amount.
                let text = plain(minor, digits: digits)
                var copy = Array(text.utf8)
                let again = copy.withUnsafeMutableBufferPointer { parseAmount(UnsafeBufferPointer($0), digits: digits) }
                check(
                    (try? again.get()) == minor,
                    "\(String(decoding: bytes, as: UTF8.self)) parsed as \(minor), its text \(text) as \(again)")
            }
            for code in [nil, "1", "34", "52"] {
                guard case .success(let number) = PhoneNormalizer(defaultCountryCode: code).normalize(raw) else { continue }
                checkE164(number)
                // A normalised number is a fixed point.
                check(
                    (try? PhoneNormalizer(defaultCountryCode: code).normalize("+" + number).get()) == number,
                    "+\(number) does not normalise to itself")
            }
        }
    }

    static func plain(_ minor: Int64, digits: Int) -> String {
        let magnitude = String(minor.magnitude)
        guard digits > 0 else { return (minor < 0 ? "-" : "") + magnitude }
        let padded = String(repeating: "0", count: max(0, digits + 1 - magnitude.count)) + magnitude
        return (minor < 0 ? "-" : "") + padded.dropLast(digits) + "." + padded.suffix(digits)
    }

    static func checkE164(_ number: String) {
        check(
            (8...15).contains(number.utf8.count) && number.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } && !number.hasPrefix("0"),
            "not E.164 digits: \(number)")
    }

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz property violated: \(message())") }
    }
}
