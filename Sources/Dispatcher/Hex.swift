// Hex text for digests: message ids, signatures.

/// Bytes as lowercase hex, two digits each, after `prefix` (signatures, message ids), written
/// straight into the string's own storage.
public func lowercaseHex(_ bytes: some Collection<UInt8>, prefix: StaticString = "") -> String {
    let count = prefix.utf8CodeUnitCount + 2 * bytes.count
    return String(unsafeUninitializedCapacity: count) { out in
        let digits: StaticString = "0123456789abcdef"
        var i = 0
        for k in 0..<prefix.utf8CodeUnitCount {
            out[i] = prefix.utf8Start[k]
            i += 1
        }
        for byte in bytes {
            out[i] = digits.utf8Start[Int(byte >> 4)]
            out[i + 1] = digits.utf8Start[Int(byte & 0x0F)]
            i += 2
        }
        return count
    }
}

/// Hex digits (either case) as bytes; nil for an odd count or a non-hex digit.
public func hexBytes(_ text: Substring) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
        guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
        bytes.append(hi << 4 | lo)
        i += 2
    }
    return bytes
}

private func nibble(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
}

/// Compares two secrets in time that depends only on their lengths.
public func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var difference = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return difference == 0
}

/// The same, for digests and other sequences that are not collections.
public func lowercaseHex(_ bytes: some Sequence<UInt8>, prefix: StaticString = "") -> String {
    lowercaseHex(Array(bytes), prefix: prefix)
}
