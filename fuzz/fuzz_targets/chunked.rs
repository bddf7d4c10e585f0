//! The chunked body decoder on any bytes: it never panics, never returns a
//! range outside its input, and decodes the same body fed whole or a few
//! bytes at a time.
#![no_main]

use _ferrule::proto::http1::chunked::{Chunk, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` in pieces of `step` bytes (0: whole); the body and
/// whether it ended, or the error's status.
fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), u16> {
    let mut decoder = ChunkedDecoder::new(1 << 20, 4096);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let pieces: Vec<&[u8]> = if step == 0 {
        vec![input]
    } else {
        input.chunks(step).collect()
    };
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            let (used, chunk) = decoder.decode(&pending).map_err(|e| e.status().0)?;
            assert!(used <= pending.len());
            let more = match chunk {
                Chunk::Data(range) => {
                    assert!(range.end <= used);
                    body.extend_from_slice(&pending[range]);
                    true
                }
                Chunk::Done => {
                    pending.drain(..used);
                    return Ok((body, true));
                }
                Chunk::NeedMore => false,
            };
            pending.drain(..used);
            if !more || pending.is_empty() {
                break;
            }
        }
    }
    Ok((body, false))
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, 0);
    for step in [1, 3, 7] {
        let pieces = decode(data, step);
        match (&whole, &pieces) {
            (Ok((a, true)), Ok((b, true))) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => {}
        }
    }
});
