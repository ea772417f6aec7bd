//! Compressed streams written bit by bit, to make files no encoder would: a DEFLATE
//! stream that inflates far beyond its size, and lossless WebP frames whose streams
//! declare many groups of prefix codes.

/// Bits written least significant first, as DEFLATE and VP8L pack them.
pub struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    /// Bits to follow `bytes`.
    pub fn after(bytes: Vec<u8>) -> Self {
        let used = u32::try_from(bytes.len() * 8).expect("a short prefix");
        Self { bytes, used }
    }

    /// `count` bits of `value`, least significant first.
    pub fn put(&mut self, value: u32, count: u32) {
        for i in 0..count {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            *self.bytes.last_mut().unwrap() |= bit << (self.used % 8);
            self.used += 1;
        }
    }

    /// A prefix code, most significant bit first.
    pub fn code(&mut self, code: u32, count: u32) {
        let reversed = (0..count).fold(0, |acc, i| acc | (((code >> i) & 1) << (count - 1 - i)));
        self.put(reversed, count);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The colour of every pixel of a [`lossless_webp`] frame.
pub const LOSSLESS_RGB: [u8; 3] = [3, 1, 2];

/// The bytes one group of prefix codes takes once built: each of its five codes has a
/// longest code of 10 bits, and the decoder looks codes up in a table of 2^10 entries
/// of 4 bytes.
pub const GROUP_BYTES: usize = 5 * 4096;

/// A lossless WebP of `width`×`height` pixels of [`LOSSLESS_RGB`], whose stream
/// declares `groups` groups of prefix codes (about 70 bytes each) and draws every
/// pixel with the last of them.
pub fn lossless_webp(width: u32, height: u32, groups: u32) -> Vec<u8> {
    assert!((1..=65_536).contains(&groups));
    let mut bits = Bits::after(Vec::new());
    bits.put(0x2f, 8); // signature
    bits.put(width - 1, 14);
    bits.put(height - 1, 14);
    bits.put(0, 1); // no alpha
    bits.put(0, 3); // version
    bits.put(0, 1); // no transform
    bits.put(0, 1); // no colour cache
    let last = groups - 1;
    if groups > 1 {
        bits.put(1, 1); // an entropy image follows
        bits.put(0, 3); // of one pixel for each 4×4 block
        bits.put(0, 1); // no colour cache
        // Its codes each have one symbol, which takes no bits in its pixels: every
        // pixel names group `last` in its red (high byte) and green (low byte).
        for symbol in [last & 0xff, last >> 8, 0, 0, 0] {
            single_symbol(&mut bits, symbol);
        }
    } else {
        bits.put(0, 1); // no entropy image: one group for the whole frame
    }
    for _ in 0..groups * 5 {
        ten_bit_code(&mut bits);
    }
    // Every pixel: its green, red, blue and alpha (0) symbols.
    let [red, green, blue] = LOSSLESS_RGB.map(u32::from);
    for _ in 0..width * height {
        for symbol in [green, red, blue, 0] {
            // Symbol s (below 10) has the code of s ones and a zero.
            bits.code((1 << (symbol + 1)) - 2, symbol + 1);
        }
    }
    let mut frame = vec![b'V', b'P', b'8', b'L'];
    let mut payload = bits.into_bytes();
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    if payload.len() % 2 == 1 {
        payload.push(0);
    }
    frame.extend(payload);
    [&b"RIFF"[..], &u32::try_from(4 + frame.len()).unwrap().to_le_bytes(), b"WEBP", &frame].concat()
}

/// A "simple" code of the one symbol `symbol`.
fn single_symbol(bits: &mut Bits, symbol: u32) {
    bits.put(1, 1); // simple
    bits.put(0, 1); // one symbol
    if symbol < 2 {
        bits.put(0, 1);
        bits.put(symbol, 1);
    } else {
        bits.put(1, 1);
        bits.put(symbol, 8);
    }
}

/// A normal code over symbols 0..=10 of lengths 1, 2, …, 9, 10 and 10: complete, and
/// its longest code 10 bits.
fn ten_bit_code(bits: &mut Bits) {
    bits.put(0, 1); // normal
    // The code of the code lengths: lengths 1–6 in 3 bits, 7–10 in 4, given in the
    // format's order (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10): 14 of them.
    bits.put(14 - 4, 4);
    for length in [0, 0, 0, 3, 3, 3, 3, 3, 0, 3, 4, 4, 4, 4] {
        bits.put(length, 3);
    }
    // 11 symbols are given (max_symbol = 2 + 9, in 2 + 2·1 bits); the rest have none.
    bits.put(1, 1);
    bits.put(1, 3);
    bits.put(9, 4);
    // Canonical codes of the code lengths: 1–6 are 0–5 in 3 bits, 7–10 are 12–15 in 4.
    for length in (1..=10).chain([10]) {
        if length <= 6 {
            bits.code(length - 1, 3);
        } else {
            bits.code(12 + length - 7, 4);
        }
    }
}
