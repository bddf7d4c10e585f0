//! Character classes of the HTTP grammar, as 256-entry tables so that the
//! per-byte checks on every head cost one load each.

/// A set of bytes, built at compile time.
struct ByteSet([bool; 256]);

impl ByteSet {
    const fn new(ranges: &[(u8, u8)], singles: &[u8]) -> ByteSet {
        let mut set = [false; 256];
        let mut i = 0;
        while i < ranges.len() {
            let (lo, hi) = ranges[i];
            let mut b = lo as usize;
            while b <= hi as usize {
                set[b] = true;
                b += 1;
            }
            i += 1;
        }
        let mut i = 0;
        while i < singles.len() {
            set[singles[i] as usize] = true;
            i += 1;
        }
        ByteSet(set)
    }

    fn contains(&self, b: u8) -> bool {
        self.0[b as usize]
    }
}

const ALNUM: [(u8, u8); 3] = [(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')];

/// `tchar` (RFC 9110 §5.6.2): the characters of a token such as a field name.
static TCHAR: ByteSet = ByteSet::new(&ALNUM, b"!#$%&'*+-.^_`|~");

/// The characters of a reg-name host and port (RFC 3986 §3.2.2: unreserved,
/// pct-encoded, sub-delims).
static REG_NAME: ByteSet = ByteSet::new(&ALNUM, b"-._~!$&'()*+,;=%");

/// Field-value and reason-phrase characters: visible ASCII, space, HTAB and
/// obs-text; no other control characters (RFC 9110 §5.5), which rules out
/// CR, LF and NUL.
static TEXT: ByteSet = ByteSet::new(&[(b' ', b'~'), (0x80, 0xff)], b"\t");

pub fn is_tchar(b: u8) -> bool {
    TCHAR.contains(b)
}

pub fn is_reg_name_char(b: u8) -> bool {
    REG_NAME.contains(b)
}

pub fn is_text_byte(b: u8) -> bool {
    TEXT.contains(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_grammar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b}");
            let reg = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            assert_eq!(is_reg_name_char(b), reg, "{b}");
            let text = b == b'\t' || (b' '..0x7f).contains(&b) || b >= 0x80;
            assert_eq!(is_text_byte(b), text, "{b}");
        }
    }
}
