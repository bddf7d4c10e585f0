//! Which peers may connect to a gateway listener (uwsgi, SCGI): a gateway
//! vouches for the client's address, scheme and every header, so only the
//! front end's own address may speak to it (gunicorn's
//! `--uwsgi-allow-from`, nginx's `allow`). Unix sockets are always allowed:
//! their file permissions decide who connects.

use std::net::IpAddr;
use std::str::FromStr;

/// One entry of the allow list: `*`, an address, or a network in CIDR
/// notation (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedPeer {
    Any,
    Network { addr: IpAddr, prefix: u8 },
}

impl FromStr for AllowedPeer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const FORMS: &str = "expected '*', an IP address or a network such as 10.0.0.0/8";
        let s = s.trim();
        if s == "*" {
            return Ok(AllowedPeer::Any);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("'{s}': {FORMS}"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("'{s}': prefix length past {bits}; {FORMS}"))?,
        };
        // An IPv4-mapped entry (::ffff:10.0.0.0/104) matches as the IPv4
        // network it names, as peers are compared.
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(AllowedPeer::Network {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(AllowedPeer::Network { addr, prefix })
    }
}

impl AllowedPeer {
    pub fn allows(&self, peer: IpAddr) -> bool {
        let AllowedPeer::Network { addr, prefix } = self else {
            return true;
        };
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        match (addr, peer) {
            (IpAddr::V4(a), IpAddr::V4(p)) => {
                masked(u32::from(*a).into(), u32::from(p).into(), 32, *prefix)
            }
            (IpAddr::V6(a), IpAddr::V6(p)) => masked(u128::from(*a), u128::from(p), 128, *prefix),
            _ => false,
        }
    }
}

/// Whether `a` and `b`, numbers of `bits` bits, share their first `prefix`.
fn masked(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    a >> shift == b >> shift
}

/// Whether any entry of `list` allows `peer`.
pub fn allowed(list: &[AllowedPeer], peer: IpAddr) -> bool {
    list.iter().any(|entry| entry.allows(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<AllowedPeer> {
        s.split(',').map(|e| e.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_and_networks() {
        let l = list("127.0.0.1,::1,10.1.0.0/16");
        assert!(allowed(&l, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&l, "::1".parse().unwrap()));
        assert!(allowed(&l, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(allowed(&l, "10.1.200.3".parse().unwrap()));
        assert!(!allowed(&l, "10.2.0.1".parse().unwrap()));
        assert!(!allowed(&l, "127.0.0.2".parse().unwrap()));
        assert!(allowed(&list("*"), "192.0.2.1".parse().unwrap()));
        assert!(allowed(&list("0.0.0.0/0"), "192.0.2.1".parse().unwrap()));
        assert!(!allowed(&list("0.0.0.0/0"), "2001:db8::1".parse().unwrap()));
        let mapped = list("::ffff:10.0.0.0/104");
        assert!(allowed(&mapped, "10.9.8.7".parse().unwrap()));
        assert!(allowed(&mapped, "::ffff:10.9.8.7".parse().unwrap()));
        assert!(!allowed(&mapped, "11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_entries_say_what_is_accepted() {
        for bad in ["localhost", "10.0.0.0/33", "::1/129", "1.2.3"] {
            let err = bad.parse::<AllowedPeer>().unwrap_err();
            assert!(err.contains("IP address"), "{bad}: {err}");
        }
    }
}
