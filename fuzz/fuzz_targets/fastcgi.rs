//! FastCGI records on any bytes: the connection parser and the STDIN
//! decoder never panic, and the parser consumes whole records only.
#![no_main]

use _ferrule::proto::fastcgi::{Capacity, ConnParser, StdinDecoder};
use _ferrule::proto::http1::chunked::Chunk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let capacity = Capacity {
        max_conns: 8,
        max_reqs: 8,
    };
    let mut parser = ConnParser::new();
    let mut at = 0;
    while at < data.len() {
        match parser.parse(&data[at..], 4096, capacity) {
            Ok((Some(request), used)) => {
                at += used;
                let mut decoder = StdinDecoder::new(request.request_id, 1 << 20);
                while at < data.len() {
                    match decoder.decode(&data[at..]) {
                        Ok((used, Chunk::Data(range))) => {
                            assert!(range.end <= used);
                            at += used;
                        }
                        Ok((used, _)) => {
                            at += used;
                            break;
                        }
                        Err(_) => return,
                    }
                }
            }
            Ok((None, 0)) | Err(_) => return,
            Ok((None, used)) => at += used,
        }
        parser.replies.clear();
    }
});
