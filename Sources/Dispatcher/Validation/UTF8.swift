/// True when the bytes are well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
///
/// Our own, rather than `String(validating:as:)`: that generic initializer is not specialised
/// across modules here and instantiates type metadata on every call, which cost a fifth of the
/// whole import. ASCII, by far the common case, is a single comparison per byte.
func isValidUTF8(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
    var i = 0
    let n = b.count
    while i < n {
        let c = b[i]
        if c < 0x80 { i += 1; continue }
        func continuation(_ k: Int) -> Bool { i + k < n && b[i + k] & 0xC0 == 0x80 }
        if c < 0xC2 { return false }
        if c < 0xE0 {
            guard continuation(1) else { return false }
            i += 2
        } else if c < 0xF0 {
            guard continuation(1), continuation(2) else { return false }
            if c == 0xE0 && b[i + 1] < 0xA0 { return false }  // overlong
            if c == 0xED && b[i + 1] >= 0xA0 { return false }  // UTF-16 surrogate
            i += 3
        } else if c < 0xF5 {
            guard continuation(1), continuation(2), continuation(3) else { return false }
            if c == 0xF0 && b[i + 1] < 0x90 { return false }  // overlong
            if c == 0xF4 && b[i + 1] >= 0x90 { return false }  // past U+10FFFF
            i += 4
        } else {
            return false
        }
    }
    return true
}

/// The first control character in valid UTF-8 bytes that no manifest field may hold: C0 controls
/// other than tab, line feed and carriage return (which the formats allow inside a field), DEL,
/// the C1 controls U+0080–U+009F, and the bidirectional embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069), which make a name or an amount display as other than it is
/// (the marks U+200E and U+200F, which right-to-left text needs, are fine). Nil when there is none.
func forbiddenControl(_ b: UnsafeBufferPointer<UInt8>) -> UInt32? {
    var i = 0
    let n = b.count
    while i < n {
        let c = b[i]
        if c < 0x20 {
            if c != 0x09 && c != 0x0A && c != 0x0D { return UInt32(c) }
        } else if c == 0x7F {
            return 0x7F
        } else if c == 0xC2 && i + 1 < n && b[i + 1] >= 0x80 && b[i + 1] <= 0x9F {
            return UInt32(b[i + 1])
        } else if c == 0xE2 && i + 2 < n {
            let scalar = 0x2000 | UInt32(b[i + 1] & 0x3F) << 6 | UInt32(b[i + 2] & 0x3F)
            if (0x202A...0x202E).contains(scalar) || (0x2066...0x2069).contains(scalar) { return scalar }
        }
        i += 1
    }
    return nil
}

/// What a field with a control character is told.
func controlMessage(_ scalar: UInt32) -> String {
    let digits = String(scalar, radix: 16, uppercase: true)
    if scalar >= 0x2000 {
        return "contains the bidirectional control U+\(digits), which makes the text display as other than it is: remove it"
    }
    return
        "contains the control character U+\(String(repeating: "0", count: max(0, 4 - digits.count)) + digits), which cannot be sent or shown: remove it"
}

/// A String from UTF-8 bytes, or nil when they are not valid UTF-8.
@inline(__always) func validatedString(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
    isValidUTF8(bytes) ? String(decoding: bytes, as: UTF8.self) : nil
}

/// Remembers which invoice ids were seen, on which line: an open-addressing table of 96-bit
/// hashes of each id's bytes. A million ids take 32 MB at most and no String is kept.
struct SeenIDs {
    private var slots: [Slot]
    private var count = 0

    /// 16 bytes (a million ids: 32 MB of slots, not 48): 96 bits of two independent hashes, so
    /// that two ids are taken for one another in about one million-row manifest in 10^17.
    private struct Slot {
        var a: UInt64 = 0  // 0: empty (a real hash has its low bit set)
        var b: UInt32 = 0
        var line: Int32 = 0
    }

    init(capacity: Int = 1 << 14) {
        slots = Array(repeating: Slot(), count: capacity)
    }

    /// Records the id as seen on `line`; returns the earlier line if it was seen before.
    mutating func insert(_ id: UnsafeBufferPointer<UInt8>, line: Int) -> Int? {
        var h1 = Hasher(), h2 = Hasher()
        h1.combine(0x5EED_0001 as UInt64)
        h2.combine(0x5EED_0002 as UInt64)
        h1.combine(bytes: UnsafeRawBufferPointer(id))
        h2.combine(bytes: UnsafeRawBufferPointer(id))
        let a = UInt64(UInt(bitPattern: h1.finalize())) | 1
        let b = UInt32(truncatingIfNeeded: h2.finalize())
        if (count + 1) * 10 > slots.count * 7 { grow() }
        return slots.withUnsafeMutableBufferPointer { slots in
            let mask = slots.count - 1
            var i = Int(truncatingIfNeeded: a >> 7) & mask
            while slots[i].a != 0 {
                if slots[i].a == a && slots[i].b == b { return Int(slots[i].line) }
                i = (i + 1) & mask
            }
            slots[i] = Slot(a: a, b: b, line: Int32(clamping: line))
            count += 1
            return nil
        }
    }

    private mutating func grow() {
        let old = slots
        slots = Array(repeating: Slot(), count: old.count * 2)
        let mask = slots.count - 1
        for slot in old where slot.a != 0 {
            var i = Int(truncatingIfNeeded: slot.a >> 7) & mask
            while slots[i].a != 0 { i = (i + 1) & mask }
            slots[i] = slot
        }
    }
}
