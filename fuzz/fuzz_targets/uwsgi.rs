//! The uwsgi parser on any bytes: it never panics, and every prefix of a
//! packet it accepts asks for more rather than failing or succeeding.
#![no_main]

use _ferrule::proto::uwsgi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, used))) = uwsgi::parse(data, 65535) {
        assert!(used <= data.len());
        let _ = head.method();
        let _ = head.cgi_vars().count();
        for n in [0, used / 2, used.saturating_sub(1)] {
            if n < used {
                assert!(matches!(uwsgi::parse(&data[..n], 65535), Ok(None)));
            }
        }
    }
});
