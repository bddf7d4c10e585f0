//! The PROXY protocol parser on any bytes: it never panics, never claims
//! more than it was given or more than a header may be, and a prefix of a
//! header it accepts is never a header of its own.
#![no_main]

use _ferrule::proto::proxy_protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = proxy_protocol::parse(data) {
        assert!(used <= data.len() && used <= proxy_protocol::V2_MAX);
        for n in [used / 2, used.saturating_sub(1)] {
            if n < used {
                assert!(!matches!(proxy_protocol::parse(&data[..n]), Ok(Some(_))));
            }
        }
    }
});
