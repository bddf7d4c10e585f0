//! The SCGI parser on any bytes: it never panics, and a prefix of a
//! request it accepts never succeeds on its own.
#![no_main]

use _ferrule::proto::scgi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, used))) = scgi::parse(data, 65535) {
        assert!(used <= data.len());
        let _ = head.cgi_vars().count();
        for n in [used / 2, used.saturating_sub(1)] {
            if n < used {
                assert!(!matches!(scgi::parse(&data[..n], 65535), Ok(Some(_))));
            }
        }
    }
});
