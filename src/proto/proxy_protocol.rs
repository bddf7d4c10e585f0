//! The PROXY protocol (HAProxy's "The PROXY protocol", versions 1 and 2):
//! the header a load balancer sends first on a connection to say which
//! client it carries. Pure: bytes in, the client's address or a reason out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 1's longest header, CRLF included (spec §2.1: 107 bytes).
pub const V1_MAX: usize = 107;
/// Version 2's signature (spec §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 2 header accepted: the fixed 16 bytes, the largest
/// address block (216, unix sockets) and room for TLVs.
pub const V2_MAX: usize = 16 + 216 + 1024;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The client's address (and the one it connected to).
    Client {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// A connection of the proxy's own (v2 LOCAL, a health check) or of a
    /// family it does not name (v1 UNKNOWN, v2 UNSPEC or unix): the
    /// connection's own peer stays the client (spec §2.1, §2.2).
    Local,
}

/// Parses a PROXY header at the start of `buf`: the header and its length,
/// None while more bytes are needed, or why it is not one.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, &'static str> {
    if buf.len() < V2_SIGNATURE.len() && V2_SIGNATURE.starts_with(buf) {
        return Ok(None);
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    if buf.len() < v1.len() {
        return if v1.starts_with(buf) {
            Ok(None)
        } else {
            Err("the connection does not start with a PROXY header")
        };
    }
    if !buf.starts_with(v1) {
        return Err("the connection does not start with a PROXY header");
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, &'static str> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("PROXY v1 header longer than 107 bytes")
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[6..cr]).map_err(|_| "PROXY v1 header is not ASCII")?;
    let used = cr + 2;
    let mut words = line.split(' ');
    let family = words.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Some((ProxyHeader::Local, used)));
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err("PROXY v1 header needs source, destination and two ports");
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| "PROXY v1 source is not IPv4")?),
            IpAddr::V4(
                dst.parse()
                    .map_err(|_| "PROXY v1 destination is not IPv4")?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| "PROXY v1 source is not IPv6")?),
            IpAddr::V6(
                dst.parse()
                    .map_err(|_| "PROXY v1 destination is not IPv6")?,
            ),
        ),
        _ => return Err("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let port = |p: &str| -> Result<u16, &'static str> {
        // Decimal, no leading zero (spec §2.1).
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("PROXY v1 port is not a decimal number");
        }
        p.parse().map_err(|_| "PROXY v1 port is out of range")
    };
    Ok(Some((
        ProxyHeader::Client {
            source: SocketAddr::new(src, port(sport)?),
            destination: SocketAddr::new(dst, port(dport)?),
        },
        used,
    )))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, &'static str> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err("PROXY v2 header has an unknown version");
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err("PROXY v2 header longer than ferrule accepts");
    }
    if buf.len() < total {
        return Ok(None);
    }
    let block = &buf[16..total];
    let header = match version_command & 0x0f {
        0 => ProxyHeader::Local,
        1 => match family {
            // TCP or UDP over IPv4.
            0x11 | 0x12 => {
                if block.len() < 12 {
                    return Err("PROXY v2 IPv4 address block is short");
                }
                let ip = |at: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        block[at],
                        block[at + 1],
                        block[at + 2],
                        block[at + 3],
                    ))
                };
                let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
                ProxyHeader::Client {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            0x21 | 0x22 => {
                if block.len() < 36 {
                    return Err("PROXY v2 IPv6 address block is short");
                }
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&block[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
                ProxyHeader::Client {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            _ => ProxyHeader::Local,
        },
        _ => return Err("PROXY v2 header has an unknown command"),
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Client {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn version_1() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Ok(Some((client("192.0.2.1:56324", "198.51.100.2:443"), 45)))
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(v6),
            Ok(Some((
                client("[2001:db8::1]:1", "[2001:db8::2]:2"),
                v6.len()
            )))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Local, 15)))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ff::1 ff::2 1 2\r\n")
                .unwrap()
                .unwrap()
                .0,
            ProxyHeader::Local
        );
        // Every prefix waits for more.
        for n in 0..line.len() - 17 {
            assert_eq!(parse(&line[..n]), Ok(None), "{n}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // At the limit and one past, without CRLF.
        let long = [b"PROXY ".as_slice(), &[b'x'; V1_MAX - 6]].concat();
        assert!(parse(&long).is_err());
        assert_eq!(parse(&long[..V1_MAX - 1]), Ok(None));
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn version_2() {
        let mut block = vec![192, 0, 2, 1, 198, 51, 100, 2];
        block.extend_from_slice(&56324u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        block.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV
        let header = v2(1, 0x11, &block);
        assert_eq!(
            parse(&header),
            Ok(Some((
                client("192.0.2.1:56324", "198.51.100.2:443"),
                header.len()
            )))
        );
        for n in 0..header.len() {
            assert_eq!(parse(&header[..n]), Ok(None), "{n}");
        }
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[31] = 2;
        six[32..34].copy_from_slice(&7u16.to_be_bytes());
        six[34..36].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &six)).unwrap().unwrap().0,
            client("[::1]:7", "[::2]:8")
        );
        assert_eq!(parse(&v2(0, 0x00, &[])), Ok(Some((ProxyHeader::Local, 16))));
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])).unwrap().unwrap().0,
            ProxyHeader::Local
        );
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err());
        assert!(parse(&v2(2, 0x11, &block)).is_err());
        let mut bad_version = header.clone();
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        // At the length limit and one past.
        assert!(parse(&v2(0, 0, &vec![0; V2_MAX - 16])).unwrap().is_some());
        assert!(parse(&v2(0, 0, &vec![0; V2_MAX - 15])).is_err());
    }
}
