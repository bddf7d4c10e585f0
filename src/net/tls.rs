//! TLS on HTTP listeners, with rustls: the server's configuration from the
//! settings (gunicorn's --certfile, --keyfile, --ca-certs, --cert-reqs),
//! the handshake, and a connection's TLS session.
//!
//! A session is shared, behind a mutex, by everyone who reads or writes
//! the connection: its task (through `TlsStream`, the `Socket` the front
//! end serves) and, for the request in progress, the application's thread
//! (`wsgi.input` reads, the `write()` callable, a streamed response) and
//! the sender thread, through `exchange::wire::Wire`. The inline design
//! stays: the application still writes from its own thread, only through
//! the session. What a session holds is bounded: rustls keeps at most
//! `SEND_BUFFER` bytes of encrypted output and one record of input.
//!
//! Files are never sent with sendfile(2) over TLS (the bytes must be
//! encrypted in user space): `wsgi.file_wrapper` files and static files
//! are read and sent in pieces, as over FastCGI.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, RootCertStore, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::socket::Socket;

/// Encrypted output a session keeps before a write must wait for the
/// client (rustls's own default, named here).
const SEND_BUFFER: usize = 64 * 1024;

/// Whether and how clients present certificates (gunicorn's --cert-reqs,
/// Python's ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertReqs {
    /// No certificate is asked for (0).
    #[value(name = "none", alias = "0")]
    None,
    /// A certificate is asked for; a client without one is served, one
    /// with a certificate --ca-certs does not vouch for is refused (1).
    #[value(name = "optional", alias = "1")]
    Optional,
    /// A certificate --ca-certs vouches for is required (2).
    #[value(name = "required", alias = "2")]
    Required,
}

/// The oldest TLS version served (`--ssl-protocol-min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MinVersion {
    #[value(name = "tls1.2")]
    Tls12,
    #[value(name = "tls1.3")]
    Tls13,
}

/// What the TLS settings say.
pub struct TlsSettings<'a> {
    /// Each certificate chain's file and its key's, the first the default.
    pub certs: Vec<(&'a Path, &'a Path)>,
    /// The password of encrypted keys.
    pub key_password: Option<&'a str>,
    pub ca_certs: Option<&'a std::path::Path>,
    pub cert_reqs: CertReqs,
    pub min_version: MinVersion,
    /// The protocols offered by ALPN, in order of preference.
    pub alpn: Vec<&'static [u8]>,
}

/// The server's TLS configuration, or a message naming the setting and
/// file at fault.
pub fn server_config(settings: &TlsSettings<'_>) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let keys = settings
        .certs
        .iter()
        .map(|&(certfile, keyfile)| {
            certified_key(certfile, keyfile, settings.key_password, &provider)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (settings.cert_reqs, settings.ca_certs) {
        (CertReqs::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(
                "--cert-reqs optional or required needs --ca-certs, the CA certificates that vouch for clients"
                    .into(),
            )
        }
        (reqs, Some(ca_certs)) => {
            let mut roots = RootCertStore::empty();
            let found = CertificateDer::pem_file_iter(ca_certs)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--ca-certs {}: {e}", ca_certs.display()))?;
            let (added, _) = roots.add_parsable_certificates(found);
            if added == 0 {
                return Err(format!(
                    "--ca-certs {}: no usable PEM certificate in it",
                    ca_certs.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if reqs == CertReqs::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| {
                format!("--ca-certs {}: {e}", ca_certs.display())
            })?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByServerName { keys }));
    // RFC 7301 §3.2: the server's preference decides among what the
    // client offers; a client that offers none of these is refused.
    config.alpn_protocols = settings.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A certificate chain and its key, read from their files, checked to
/// belong together.
fn certified_key(
    certfile: &Path,
    keyfile: &Path,
    password: Option<&str>,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("--certfile {}: {e}", certfile.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--certfile {}: no PEM certificate in it",
            certfile.display()
        ));
    }
    let key = private_key(keyfile, password)?;
    CertifiedKey::from_der(certs, key, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "--certfile {} and --keyfile {}: {e}",
                certfile.display(),
                keyfile.display()
            )
        })
}

/// The private key in `keyfile`: PKCS#8 ("PRIVATE KEY"), PKCS#1 ("RSA
/// PRIVATE KEY") or SEC1 ("EC PRIVATE KEY"), the first in the file, or an
/// encrypted PKCS#8 one ("ENCRYPTED PRIVATE KEY", RFC 5958 §3) opened with
/// `password`.
fn private_key(keyfile: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let at = keyfile.display();
    let text = std::fs::read_to_string(keyfile).map_err(|e| format!("--keyfile {at}: {e}"))?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "--keyfile {at}: a key encrypted in OpenSSL's traditional format, which is not read; \
             convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -in KEY -out NEW` (it asks \
             for the password)"
        ));
    }
    let Some(begin) = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") else {
        return PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
            format!(
                "--keyfile {at}: {e} (expected a PEM private key: PKCS#8, PKCS#1, SEC1, or encrypted PKCS#8 with --ssl-keyfile-password)"
            )
        });
    };
    let Some(password) = password else {
        return Err(format!(
            "--keyfile {at} is encrypted: give its password with --ssl-keyfile-password \
             (or FERRULE_SSL_KEYFILE_PASSWORD)"
        ));
    };
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let end = text[begin..]
        .find(END)
        .map_or(text.len(), |at| begin + at + END.len());
    let (_, document) = pkcs8::der::Document::from_pem(&text[begin..end])
        .map_err(|e| format!("--keyfile {at}: {e}"))?;
    let decrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes())
        .and_then(|info| info.decrypt(password))
        .map_err(|e| {
            format!("--keyfile {at}: cannot be decrypted with --ssl-keyfile-password: {e}")
        })?;
    Ok(PrivateKeyDer::Pkcs8(decrypted.as_bytes().to_vec().into()))
}

/// The TLS configuration new connections are served with: replaced in a
/// running worker when the certificate files change
/// (`--reload-certs-every`), while connections already open keep theirs.
pub struct LiveConfig(std::sync::RwLock<Arc<ServerConfig>>);

impl LiveConfig {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        LiveConfig(std::sync::RwLock::new(config))
    }

    /// The configuration a connection accepted now is served with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// Chooses a connection's certificate by the server name its client asks
/// for (SNI, RFC 6066 §3): the first whose names (its subjectAltName) cover
/// it and whose key can sign with a scheme the client offers, else the
/// first.
#[derive(Debug)]
struct ByServerName {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let default = self.keys.first().cloned();
        let (Some(name), true) = (hello.server_name(), self.keys.len() > 1) else {
            return default;
        };
        let Ok(name) = ServerName::try_from(name) else {
            return default;
        };
        let schemes = hello.signature_schemes();
        self.keys
            .iter()
            .find(|key| {
                key.key.choose_scheme(schemes).is_some()
                    && key
                        .end_entity_cert()
                        .ok()
                        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
            .cloned()
            .or(default)
    }
}

/// A connection's TLS state, shared by the connection's task and the
/// application's side of its requests. It owns no descriptor: each caller
/// names the one it reads or writes, all of the same socket.
pub struct Session {
    conn: Mutex<ServerConnection>,
}

/// A raw descriptor as `Read`/`Write` for rustls: a non-blocking socket,
/// so either answers WouldBlock rather than wait.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: send reads at most `buf.len()` bytes from `buf`;
        // MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// rustls hands over its pending records together: one sendmsg(2)
    /// for all of them, not one send(2) each.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let msg = libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            // IoSlice is guaranteed ABI-compatible with iovec on Unix.
            msg_iov: bufs.as_ptr() as *mut libc::iovec,
            msg_iovlen: bufs.len().min(libc::UIO_MAXIOV as usize),
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        // SAFETY: the iovecs point into buffers borrowed for the call;
        // MSG_NOSIGNAL as above.
        let n = unsafe { libc::sendmsg(self.0, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Session {
    fn new(config: Arc<ServerConfig>) -> io::Result<Session> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Session {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decrypted bytes already received, without touching the socket:
    /// None when there are none (Some(0) at the end of the stream).
    fn take_plain(&self, dst: &mut [u8]) -> io::Result<Option<usize>> {
        read_plain_locked(&mut self.lock(), dst)
    }

    /// Reads decrypted bytes, receiving from `fd` as needed, without
    /// waiting: WouldBlock when the client has sent nothing more. Ok(0) is
    /// the end of the stream (with or without the client's close_notify:
    /// HTTP/1.1 frames its own messages, RFC 9112 §9.8).
    pub fn read_plain(&self, fd: RawFd, dst: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.lock();
        loop {
            if let Some(n) = read_plain_locked(&mut conn, dst)? {
                return Ok(n);
            }
            if !receive_locked(&mut conn, fd)? {
                // The peer closed: what rustls holds is read above, then
                // the end.
                return Ok(read_plain_locked(&mut conn, dst)?.unwrap_or(0));
            }
        }
    }

    /// Encrypts what of `bufs` the session takes and sends what the socket
    /// takes, without waiting. WouldBlock before taking anything when
    /// earlier output is still waiting for the client; an empty `bufs`
    /// only sends what waits.
    pub fn write_plain(&self, fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.lock();
        flush_locked(&mut conn, fd)?;
        let n = conn.writer().write_vectored(bufs)?;
        match flush_locked(&mut conn, fd) {
            Err(e) if !is_would_block(&e) => Err(e),
            _ => Ok(n),
        }
    }

    /// Whether encrypted output still waits for the client.
    pub fn has_pending_output(&self) -> bool {
        self.lock().wants_write()
    }

    /// Queues the close_notify alert (RFC 8446 §6.1), and sends what the
    /// socket takes of it now; the rest goes with the next flush.
    /// Not during a handshake, which a failure or timeout ends with its own
    /// alert or none.
    fn close_notify(&self, fd: RawFd) {
        let mut conn = self.lock();
        if conn.is_handshaking() {
            return;
        }
        conn.send_close_notify();
        let _ = flush_locked(&mut conn, fd);
    }

    /// What the environ tells of the session, once the handshake is done.
    fn facts(&self) -> TlsFacts {
        let conn = self.lock();
        let protocol = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        // IANA's names (which OpenSSL also uses for TLS 1.3 suites):
        // rustls calls the TLS 1.3 ones TLS13_*.
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| {
                let name = format!("{:?}", s.suite());
                match name.strip_prefix("TLS13_") {
                    Some(rest) => format!("TLS_{rest}"),
                    None => name,
                }
            })
            .unwrap_or_default();
        let client_cert = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| ClientCert::of(cert.as_ref()));
        TlsFacts {
            protocol,
            cipher,
            client_cert,
            http2: conn.alpn_protocol() == Some(b"h2"),
        }
    }
}

fn read_plain_locked(conn: &mut ServerConnection, dst: &mut [u8]) -> io::Result<Option<usize>> {
    match conn.reader().read(dst) {
        Ok(n) => Ok(Some(n)),
        Err(e) if is_would_block(&e) => Ok(None),
        // Closed without close_notify: the end, as above.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(0)),
        Err(e) => Err(e),
    }
}

/// Receives what the socket holds from `fd` and decrypts it: false when the
/// peer has closed; WouldBlock when nothing has come. A record rustls
/// refuses is an error, after one try to send the alert it queued.
fn receive_locked(conn: &mut ServerConnection, fd: RawFd) -> io::Result<bool> {
    if conn.read_tls(&mut Fd(fd))? == 0 {
        return Ok(false);
    }
    if let Err(e) = conn.process_new_packets() {
        let _ = conn.write_tls(&mut Fd(fd));
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    Ok(true)
}

/// Sends what waits; WouldBlock if the socket does not take all of it.
fn flush_locked(conn: &mut ServerConnection, fd: RawFd) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut Fd(fd))?;
    }
    Ok(())
}

/// What a TLS connection adds to its requests' environ, as mod_ssl and
/// nginx name them.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    /// SSL_PROTOCOL: TLSv1.2 or TLSv1.3.
    pub protocol: &'static str,
    /// SSL_CIPHER, by its IANA name.
    pub cipher: String,
    /// The client's certificate, when it sent one (and so --ca-certs
    /// vouched for it: SSL_CLIENT_VERIFY SUCCESS).
    pub client_cert: Option<ClientCert>,
    /// The client chose h2 by ALPN.
    pub http2: bool,
}

/// What the environ tells of a client's certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientCert {
    /// SSL_CLIENT_CERT: as PEM.
    pub pem: String,
    /// SSL_CLIENT_S_DN and SSL_CLIENT_I_DN: subject and issuer as RFC 4514
    /// strings (mod_ssl's and nginx's form: `CN=alice,O=Example`).
    pub subject: String,
    pub issuer: String,
    /// SSL_CLIENT_SERIAL (mod_ssl's SSL_CLIENT_M_SERIAL): upper-case hex.
    pub serial: String,
}

impl ClientCert {
    fn of(der: &[u8]) -> ClientCert {
        let mut cert = ClientCert {
            pem: pem_certificate(der),
            ..ClientCert::default()
        };
        // rustls verified the certificate, so it parses; if this parser
        // disagrees, the names stay empty rather than fail the request.
        if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der) {
            cert.subject = dn_text(parsed.subject());
            cert.issuer = dn_text(parsed.issuer());
            // Without the sign byte DER adds before a high bit, as mod_ssl
            // and nginx print it.
            let serial = match parsed.raw_serial() {
                [0, rest @ ..] if !rest.is_empty() => rest,
                all => all,
            };
            cert.serial = serial.iter().map(|b| format!("{b:02X}")).collect();
        }
        cert
    }
}

/// A distinguished name as RFC 4514 §2 writes it: the last RDN first,
/// RDNs joined by ',' and the values of one by '+', each value escaped.
fn dn_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let value = match dn_string(atv) {
                        Some(text) => escape_dn_value(&text),
                        // §2.4: a value of no string type, as '#' and hex
                        // (of its contents here, not of its whole BER).
                        None => {
                            let hex: String =
                                atv.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{}={value}", attribute_name(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// An attribute's value as text, for the string types names use
/// (RFC 5280 §4.1.2.4's DirectoryString and IA5String): UTF-8, printable,
/// IA5 and numeric strings as they are, BMPString as UTF-16, and
/// UniversalString as UTF-32 (both big-endian), TeletexString as Latin-1.
fn dn_string(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    if let Ok(text) = atv.as_str() {
        return Some(text.to_string());
    }
    let bytes = atv.as_slice();
    match atv.attr_value().tag() {
        Tag::BmpString => char::decode_utf16(
            bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString => bytes
            .chunks_exact(4)
            .map(|quad| char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])))
            .collect(),
        Tag::TeletexString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

/// RFC 4514 §3's short names and OpenSSL's for the other common ones; any
/// other attribute by its dotted OID.
fn attribute_name(oid: &str) -> &str {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GN",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.43" => "initials",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        "2.5.4.15" => "businessCategory",
        other => other,
    }
}

/// RFC 4514 §2.4: '"', '+', ',', ';', '<', '>' and '\\' anywhere, '#' or a
/// space first, a space last, and NUL are escaped.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            // NUL (§2.4) and the other control characters, so that a name
            // cannot put a line break into a log.
            c if c.is_ascii_control() => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A DER certificate as PEM (RFC 7468 §2: base64 in lines of 64).
fn pem_certificate(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A stream socket with TLS on it, served like any other (`Socket`).
pub struct TlsStream<S: Socket> {
    io: S,
    session: Arc<Session>,
    closing: bool,
}

impl<S: Socket> TlsStream<S> {
    /// The session, for the application's side of requests.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Receives and sends until the handshake is done.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.io.as_raw_fd();
        loop {
            let (handshaking, wants_write) = {
                let conn = self.session.lock();
                (conn.is_handshaking(), conn.wants_write())
            };
            if wants_write {
                ready!(self.poll_flush_output(cx))?;
                continue;
            }
            if !handshaking {
                return Poll::Ready(Ok(()));
            }
            ready!(self.io.poll_read_ready(cx))?;
            let session = &self.session;
            let received = self
                .io
                .try_read_io(|| match receive_locked(&mut session.lock(), fd)? {
                    true => Ok(()),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                });
            match received {
                Ok(()) => {}
                Err(e) if is_would_block(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends all waiting output.
    fn poll_flush_output(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.io.as_raw_fd();
        loop {
            if !self.session.has_pending_output() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.io.poll_write_ready(cx))?;
            let session = &self.session;
            match self
                .io
                .try_write_io(|| session.write_plain(fd, &[]).map(drop))
            {
                Ok(()) => {}
                Err(e) if is_would_block(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Whether a connection to a TLS listener starts with a plain HTTP request
/// (someone typed http:// for an https:// port): its first byte, already
/// received, is a method's letter, where a TLS client's is a record type
/// (22 for a handshake; RFC 8446 §5.1), never a letter.
pub fn starts_like_plain_http<S: Socket>(stream: &S) -> bool {
    let mut first = [0u8];
    matches!(stream.peek_now(&mut first), Ok(1)) && first[0].is_ascii_uppercase()
}

/// Performs the TLS handshake on an accepted connection.
pub async fn accept<S: Socket>(
    io: S,
    config: Arc<ServerConfig>,
) -> io::Result<(TlsStream<S>, TlsFacts)> {
    let session = Arc::new(Session::new(config)?);
    let mut stream = TlsStream {
        io,
        session,
        closing: false,
    };
    std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    let facts = stream.session.facts();
    Ok((stream, facts))
}

impl<S: Socket> Drop for TlsStream<S> {
    /// A connection closed without `shutdown` (idle past keep-alive, the
    /// client's request read whole) still tells the client it was not cut
    /// short (RFC 8446 §6.1): close_notify, if the socket takes it at once.
    fn drop(&mut self) {
        if !self.closing {
            self.session.close_notify(self.io.as_raw_fd());
        }
    }
}

/// Reads with `read` into `buf`'s spare capacity (at most `max` bytes),
/// zeroed first since `read` takes an initialised slice; the length then
/// covers what it read.
pub fn read_into_spare(
    buf: &mut Vec<u8>,
    max: usize,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let len = buf.len();
    let room = (buf.capacity() - len).min(max);
    buf.resize(len + room, 0);
    let result = read(&mut buf[len..]);
    let n = *result.as_ref().unwrap_or(&0);
    buf.truncate(len + n);
    result
}

impl<S: Socket> AsRawFd for TlsStream<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl<S: Socket> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.io.as_raw_fd();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let dst = buf.initialize_unfilled();
            // Decrypted bytes waiting need no readiness (a pipelined
            // request decrypted with the one before it).
            if let Some(n) = this.session.take_plain(dst)? {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            ready!(this.io.poll_read_ready(cx))?;
            let session = &this.session;
            let dst = buf.initialize_unfilled();
            match this.io.try_read_io(|| session.read_plain(fd, dst)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if is_would_block(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: Socket> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let fd = this.io.as_raw_fd();
        loop {
            ready!(this.io.poll_write_ready(cx))?;
            let session = &this.session;
            match this.io.try_write_io(|| session.write_plain(fd, bufs)) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if is_would_block(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_output(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.session.close_notify(this.io.as_raw_fd());
        }
        ready!(this.poll_flush_output(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<S: Socket> Socket for TlsStream<S> {
    fn read_now(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_into_spare(buf, usize::MAX, |dst| {
            self.session.read_plain(self.io.as_raw_fd(), dst)
        })
    }

    fn send_more(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored_now(&[IoSlice::new(buf)])
    }

    fn try_write_vectored_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = self.io.as_raw_fd();
        self.io.try_write_io(|| self.session.write_plain(fd, bufs))
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.io.try_write_io(f)
    }

    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.io.try_read_io(f)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_write_ready(cx)
    }

    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.io.wait_writable()
    }

    fn has_pending_output(&self) -> bool {
        self.session.has_pending_output()
    }

    fn carries_raw_bytes(&self) -> bool {
        false
    }

    fn tls_session(&self) -> Option<&Arc<Session>> {
        Some(&self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_dn_value, pem_certificate};

    #[test]
    fn dn_values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_dn_value("alice"), "alice");
        assert_eq!(escape_dn_value("Smith, John"), "Smith\\, John");
        assert_eq!(
            escape_dn_value("a+b=c;<d>\"e\\"),
            "a\\+b=c\\;\\<d\\>\\\"e\\\\"
        );
        assert_eq!(escape_dn_value("#1 "), "\\#1\\ ");
        assert_eq!(escape_dn_value(" x"), "\\ x");
        assert_eq!(escape_dn_value("a\0b"), "a\\00b");
        assert_eq!(escape_dn_value("a\nb"), "a\\0Ab");
        assert_eq!(escape_dn_value("é"), "é");
    }

    #[test]
    fn pem_is_base64_in_lines_of_64() {
        let pem = pem_certificate(b"Man");
        assert_eq!(
            pem,
            "-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n"
        );
        assert!(pem_certificate(b"Ma").contains("\nTWE=\n"));
        assert!(pem_certificate(b"M").contains("\nTQ==\n"));
        let long = pem_certificate(&[0u8; 49]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2], "AA==");
    }
}
