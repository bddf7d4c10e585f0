//! The HTTP/1 head parser on any bytes: it never panics, and a head fed in
//! two pieces (split where the input's first byte says) parses exactly as
//! when fed whole, since a connection's reads can split it anywhere.
#![no_main]

use _ferrule::proto::http1::head::HeadParser;
use _ferrule::proto::request::HeadLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits::default();
    let whole = HeadParser::new().parse(input, &limits);
    let mut parser = HeadParser::new();
    let cut = usize::from(split).min(input.len());
    let first = parser.parse(&input[..cut], &limits);
    let pieces = match first {
        Ok(None) => parser.parse(input, &limits),
        other => other,
    };
    match (&whole, &pieces) {
        (Ok(Some((a, used_a))), Ok(Some((b, used_b)))) => {
            assert_eq!(used_a, used_b);
            assert_eq!(a.method(), b.method());
            assert_eq!(a.target(), b.target());
            assert_eq!(a.framing, b.framing);
            assert_eq!(a.fields().count(), b.fields().count());
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a.status(), b.status()),
        // A prefix can complete a head of its own (a shorter one that
        // ends within it) or fail where the whole would; neither is a bug.
        _ => {}
    }
});
