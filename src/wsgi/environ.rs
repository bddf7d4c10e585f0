//! The one environ builder (PEP 3333, "environ Variables"). Every front-end
//! produces a `RequestHead`; this turns it into the environ dict. The
//! string rules live here and nowhere else: every value is a native string
//! decoded as latin-1, PATH_INFO is percent-decoded first, QUERY_STRING and
//! RAW_URI stay as sent.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{ffi, intern};

use crate::net::tls::TlsFacts;
use crate::proto::forwarded::{self, SecureSchemeHeaders};
use crate::proto::request::split_host_port;
use crate::proto::request::RequestHead;
use crate::wsgi::streams::{ErrorStream, FileWrapper};

/// What the environ needs to know about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// REMOTE_ADDR / REMOTE_PORT; empty for unix sockets.
    pub remote_addr: String,
    pub remote_port: String,
    /// SERVER_NAME / SERVER_PORT when the request names no host: the
    /// listener's, shared by its connections.
    pub server_name: Arc<str>,
    pub server_port: Arc<str>,
    pub url_scheme: &'static str,
    /// The peer is a proxy whose word on the client's scheme is taken
    /// (`--forwarded-allow-ips`; unix sockets always).
    pub trusted_proxy: bool,
    /// The peer is a load balancer that must start the connection with a
    /// PROXY header (`--proxy-protocol`, `--proxy-allow-from`).
    pub proxy_header_required: bool,
    /// Python strings made for this connection's requests, reused by the
    /// next ones.
    pub strings: Mutex<ConnStrings>,
    /// What the TLS handshake settled, on an https listener.
    pub tls: Option<Arc<TlsFacts>>,
}

impl ConnInfo {
    /// A connection with no peer address (a unix socket, a CGI script's
    /// stdin): the environ falls back to localhost:80 only when the request
    /// names no host.
    pub fn without_address(trusted_proxy: bool) -> ConnInfo {
        ConnInfo {
            remote_addr: String::new(),
            remote_port: String::new(),
            server_name: "localhost".into(),
            server_port: "80".into(),
            url_scheme: "http",
            trusted_proxy,
            proxy_header_required: false,
            strings: Default::default(),
            tls: None,
        }
    }
}

/// Environ values that stay the same across a connection's requests:
/// REMOTE_ADDR and REMOTE_PORT, SERVER_NAME and SERVER_PORT as long as
/// the Host header does not change, and the header fields of the last
/// request, which a client usually sends again (Host, User-Agent, Accept,
/// Cookie...).
#[derive(Debug, Default)]
pub struct ConnStrings {
    remote: Option<(Py<PyString>, Py<PyString>)>,
    host: Option<(Vec<u8>, Py<PyString>, Py<PyString>)>,
    /// The last request's header fields.
    fields: FieldCache,
}

/// The last request's fields (header fields, or a gateway's variables) by
/// position, with their environ keys and values, for a next request that
/// sends the same bytes; `bytes` is the sum of their names' and values'
/// lengths.
#[derive(Debug, Default)]
struct FieldCache {
    fields: Vec<CachedField>,
    bytes: usize,
}

/// A header field as sent, and its environ key and value.
#[derive(Debug)]
struct CachedField {
    name: Vec<u8>,
    value: Vec<u8>,
    key: Py<PyString>,
    value_string: Py<PyString>,
}

/// At most this many header fields, of at most `CACHED_FIELD_BYTES` in
/// all, are kept per connection for its next request: a typical browser
/// request fits, and an idle connection holds at most about twice this
/// (the bytes and their Python strings).
const CACHED_FIELDS: usize = 32;
const CACHED_FIELD_BYTES: usize = 4096;

impl FieldCache {
    /// The environ key (`make_key` of the name) and value for field number
    /// `index` of a request: the last request's strings for what it sent
    /// the same. They are kept for the next request only if there can be
    /// one (`keep`).
    fn field<'py>(
        &mut self,
        py: Python<'py>,
        index: usize,
        (name, value): (&[u8], &[u8]),
        keep: bool,
        make_key: fn(Python<'py>, &[u8]) -> Bound<'py, PyString>,
    ) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        let cached = self.fields.get(index);
        let key = match cached {
            Some(c) if c.name == name => c.key.bind(py).clone(),
            _ => make_key(py, name),
        };
        let value_string = match cached {
            Some(c) if c.value == value => {
                if c.name == name {
                    return (key, c.value_string.bind(py).clone());
                }
                c.value_string.bind(py).clone()
            }
            _ => latin1(py, value),
        };
        if !keep {
            return (key, value_string);
        }
        let size = name.len() + value.len();
        let field = || CachedField {
            name: name.to_vec(),
            value: value.to_vec(),
            key: key.clone().unbind(),
            value_string: value_string.clone().unbind(),
        };
        if let Some(old) = self.fields.get(index) {
            let old = old.name.len() + old.value.len();
            if self.bytes - old + size <= CACHED_FIELD_BYTES {
                self.bytes = self.bytes - old + size;
                self.fields[index] = field();
            } else {
                for gone in self.fields.drain(index..) {
                    self.bytes -= gone.name.len() + gone.value.len();
                }
            }
        } else if index == self.fields.len()
            && index < CACHED_FIELDS
            && self.bytes + size <= CACHED_FIELD_BYTES
        {
            self.bytes += size;
            self.fields.push(field());
        }
        (key, value_string)
    }
}

/// Settings that shape every environ.
pub struct EnvironSettings {
    pub script_name: String,
    pub multithread: bool,
    pub multiprocess: bool,
    /// A CGI script's one request (`--cgi`).
    pub run_once: bool,
    /// What a trusted proxy's header fields may change.
    pub proxy: ProxyHeaders,
}

/// What the header fields of a trusted proxy (`ConnInfo::trusted_proxy`)
/// may change in the environ; a peer that is not trusted changes nothing.
pub struct ProxyHeaders {
    /// Fields that set wsgi.url_scheme to https (`--secure-scheme-headers`).
    pub secure_scheme_headers: SecureSchemeHeaders,
    /// A configured name is one the parser does not mark: every request
    /// from a trusted peer is looked at.
    pub look_always: bool,
    /// REMOTE_ADDR and REMOTE_PORT from Forwarded for= or X-Forwarded-For
    /// (`--forwarded-for`).
    pub forwarded_for: bool,
    /// SCRIPT_NAME from X-Forwarded-Prefix (`--forwarded-prefix`).
    pub forwarded_prefix: bool,
    /// Whether an address is a trusted proxy's, for walking a chain of
    /// them (`--forwarded-allow-ips`).
    pub trusted: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl ProxyHeaders {
    /// The scheme fields only, gunicorn's defaults (ferrule.serve(), CGI).
    pub fn new(secure_scheme_headers: SecureSchemeHeaders) -> ProxyHeaders {
        ProxyHeaders {
            look_always: !secure_scheme_headers.all_marked(),
            secure_scheme_headers,
            forwarded_for: false,
            forwarded_prefix: false,
            trusted: Arc::new(|_| false),
        }
    }
}

/// The client's address as a trusted proxy gives it, with --forwarded-for:
/// REMOTE_ADDR and REMOTE_PORT ("0" when the proxy gives no port).
pub fn forwarded_client(
    settings: &EnvironSettings,
    head: &RequestHead,
    conn: &ConnInfo,
) -> Option<(String, String)> {
    let proxy = &settings.proxy;
    if !(proxy.forwarded_for && conn.trusted_proxy && head.proxy_fields) {
        return None;
    }
    let (ip, port) = forwarded::client_address(head, |ip| (proxy.trusted)(ip))?;
    Some((ip.to_string(), port.unwrap_or(0).to_string()))
}

/// A native string from bytes, each byte one code point (latin-1).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: the pointer and length describe a valid slice; latin-1 decoding
    // cannot fail except on allocation failure, which is a fatal error here.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// RFC 3986 §2.1 percent-decoding. A '%' not followed by two hex digits is
/// kept as it is, as other WSGI servers do.
pub fn percent_decode(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !input.contains(&b'%') {
        return input.into();
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out.into()
}

/// Room in every environ for keys beyond the base: with the base's 21
/// keys, 21 header fields fit before the dict has to grow.
const ENVIRON_ROOM: isize = 42;

/// An empty dict with room for `n` items. CPython's `_PyDict_NewPresized`
/// (what the `BUILD_MAP` opcode uses) is not public API, so it is looked up
/// once at run time, with a plain dict as the fallback.
fn presized_dict(py: Python<'_>, n: isize) -> Bound<'_, PyDict> {
    type NewPresized = unsafe extern "C" fn(ffi::Py_ssize_t) -> *mut ffi::PyObject;
    static NEW_PRESIZED: OnceLock<Option<NewPresized>> = OnceLock::new();
    let new_presized = NEW_PRESIZED.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; the symbol, when
        // present, has the signature CPython declares for it.
        unsafe {
            let sym = libc::dlsym(libc::RTLD_DEFAULT, c"_PyDict_NewPresized".as_ptr());
            (!sym.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, NewPresized>(sym))
        }
    });
    match new_presized {
        // SAFETY: called with the GIL held; returns a new reference or NULL.
        Some(f) => unsafe {
            Bound::from_owned_ptr_or_opt(py, f(n))
                .map(|d| d.cast_into_unchecked())
                .unwrap_or_else(|| PyDict::new(py))
        },
        None => PyDict::new(py),
    }
}

/// The part of the environ that is the same for every request, built once
/// and copied per request. It also holds a placeholder for every key each
/// request sets, and room for header fields, so that filling in a copy
/// replaces values instead of growing the dict.
pub fn base_environ<'py>(
    py: Python<'py>,
    settings: &EnvironSettings,
) -> PyResult<Bound<'py, PyDict>> {
    let env = presized_dict(py, ENVIRON_ROOM);
    env.set_item("wsgi.version", (1, 0))?;
    env.set_item("wsgi.errors", Py::new(py, ErrorStream)?)?;
    env.set_item("wsgi.multithread", settings.multithread)?;
    env.set_item("wsgi.multiprocess", settings.multiprocess)?;
    env.set_item("wsgi.run_once", settings.run_once)?;
    env.set_item("wsgi.input_terminated", true)?;
    env.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
    env.set_item("SCRIPT_NAME", &settings.script_name)?;
    env.set_item(
        "SERVER_SOFTWARE",
        concat!("ferrule/", env!("CARGO_PKG_VERSION")),
    )?;
    for (key, usual) in PER_REQUEST_KEYS {
        env.set_item(PyString::intern(py, key), PyString::intern(py, usual))?;
    }
    Ok(env)
}

/// The keys `build` sets for a request, with the base environ's value: a
/// placeholder, or the usual value, which `build` leaves when the request
/// has it (saving a dict store apiece for a plain GET over HTTP/1.1).
const PER_REQUEST_KEYS: [(&str, &str); 12] = [
    ("REQUEST_METHOD", "GET"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("RAW_URI", ""),
    ("REQUEST_URI", ""),
    ("QUERY_STRING", ""),
    ("PATH_INFO", ""),
    ("SERVER_NAME", ""),
    ("SERVER_PORT", ""),
    ("REMOTE_ADDR", ""),
    ("REMOTE_PORT", ""),
    ("wsgi.url_scheme", "http"),
    ("wsgi.input", ""),
];

/// FNV-1a, for the header key cache: its keys are short header names, for
/// which SipHash costs more than the lookup it serves.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// REQUEST_METHOD: the common methods as interned strings.
fn method_string<'py>(py: Python<'py>, method: &[u8]) -> Bound<'py, PyString> {
    let known = match method {
        b"GET" => intern!(py, "GET"),
        b"POST" => intern!(py, "POST"),
        b"HEAD" => intern!(py, "HEAD"),
        b"PUT" => intern!(py, "PUT"),
        b"DELETE" => intern!(py, "DELETE"),
        b"PATCH" => intern!(py, "PATCH"),
        b"OPTIONS" => intern!(py, "OPTIONS"),
        _ => return latin1(py, method),
    };
    known.clone()
}

/// Most header names repeat across requests; their `HTTP_*` keys are made
/// once per thread. The cache is bounded so odd names cannot grow it.
const HEADER_KEY_CACHE_SIZE: usize = 512;

thread_local! {
    static HEADER_KEYS: RefCell<HashMap<Vec<u8>, Py<PyString>, BuildHasherDefault<Fnv>>> =
        RefCell::new(HashMap::default());
}

/// The environ key of a header field (PEP 3333: CONTENT_TYPE,
/// CONTENT_LENGTH, else HTTP_ and the name in capitals, '-' as '_').
fn field_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    if name.eq_ignore_ascii_case(b"content-type") {
        intern!(py, "CONTENT_TYPE").clone()
    } else if name.eq_ignore_ascii_case(b"content-length") {
        intern!(py, "CONTENT_LENGTH").clone()
    } else {
        header_key(py, name)
    }
}

fn header_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    HEADER_KEYS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(key) = cache.get(name) {
            return key.bind(py).clone();
        }
        let mut key = Vec::with_capacity(name.len() + 5);
        key.extend_from_slice(b"HTTP_");
        key.extend(name.iter().map(|&b| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_uppercase()
            }
        }));
        let key = PyString::intern(py, std::str::from_utf8(&key).unwrap_or("HTTP_"));
        if cache.len() < HEADER_KEY_CACHE_SIZE {
            cache.insert(name.to_vec(), key.clone().unbind());
        }
        key
    })
}

/// SERVER_NAME and SERVER_PORT: from the Host header (or the authority of
/// an absolute-form target) when there is one, else the listening address.
fn server_name_port<'py>(
    py: Python<'py>,
    host: &[u8],
    conn: &ConnInfo,
) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
    let default_port = if conn.url_scheme == "https" {
        "443"
    } else {
        "80"
    };
    match Some(host)
        .filter(|h| !h.is_empty())
        .and_then(split_host_port)
    {
        Some((name, Some(port))) => (latin1(py, name), latin1(py, port)),
        Some((name, None)) => (latin1(py, name), PyString::new(py, default_port)),
        None => (
            PyString::new(py, &conn.server_name),
            PyString::new(py, &conn.server_port),
        ),
    }
}

/// Builds the environ for one request.
pub fn build<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyDict>,
    settings: &EnvironSettings,
    head: &RequestHead,
    conn: &ConnInfo,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    if !head.cgi.is_empty() {
        return build_from_cgi(py, base, settings, head, conn, input);
    }
    let env = base.copy()?;
    // The base holds the usual GET, HTTP/1.1, empty query and http scheme.
    if head.method() != b"GET" {
        env.set_item(
            intern!(py, "REQUEST_METHOD"),
            method_string(py, head.method()),
        )?;
    }
    if head.major_version == 2 {
        env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/2"))?;
    } else if head.minor_version == 0 {
        env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.0"))?;
    }
    let raw_uri = latin1(py, head.target());
    env.set_item(intern!(py, "RAW_URI"), &raw_uri)?;
    env.set_item(intern!(py, "REQUEST_URI"), raw_uri)?;
    if let Some(query) = head.query().filter(|q| !q.is_empty()) {
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, query))?;
    }

    let path = percent_decode(head.path());
    let path_info = strip_script_name(&path, settings.script_name.as_bytes());
    env.set_item(intern!(py, "PATH_INFO"), latin1(py, path_info))?;

    let mut strings = conn.strings.lock().unwrap_or_else(|e| e.into_inner());
    // The connection keeps these strings for its next request, if it can
    // have one; otherwise they go with the environ (freed with the GIL,
    // not queued for it).
    let keep = head.keep_alive;
    let host = head.host().unwrap_or_default();
    let (server_name, server_port) = match &strings.host {
        Some((h, name, port)) if h == host => (name.bind(py).clone(), port.bind(py).clone()),
        _ => {
            let (name, port) = server_name_port(py, host, conn);
            if keep {
                strings.host = Some((host.to_vec(), name.clone().unbind(), port.clone().unbind()));
            }
            (name, port)
        }
    };
    env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
    env.set_item(intern!(py, "SERVER_PORT"), server_port)?;
    let (remote_addr, remote_port) = match &strings.remote {
        Some((addr, port)) => (addr.bind(py).clone(), port.bind(py).clone()),
        None => {
            let addr = PyString::new(py, &conn.remote_addr);
            let port = PyString::new(py, &conn.remote_port);
            if keep {
                strings.remote = Some((addr.clone().unbind(), port.clone().unbind()));
            }
            (addr, port)
        }
    };
    env.set_item(intern!(py, "REMOTE_ADDR"), remote_addr)?;
    env.set_item(intern!(py, "REMOTE_PORT"), remote_port)?;
    let proxy = &settings.proxy;
    if conn.trusted_proxy && head.proxy_fields {
        if let Some((addr, port)) = forwarded_client(settings, head, conn) {
            env.set_item(intern!(py, "REMOTE_ADDR"), addr)?;
            env.set_item(intern!(py, "REMOTE_PORT"), port)?;
        }
        if proxy.forwarded_prefix {
            if let Some(prefix) = forwarded::prefix(head) {
                let mut script_name = prefix.to_vec();
                script_name.extend_from_slice(settings.script_name.as_bytes());
                env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, &script_name))?;
            }
        }
    }
    if conn.url_scheme != "http" {
        env.set_item(
            intern!(py, "wsgi.url_scheme"),
            PyString::intern(py, conn.url_scheme),
        )?;
        if let Some(tls) = &conn.tls {
            tls_variables(py, &env, tls)?;
        }
    } else if conn.trusted_proxy
        && (head.proxy_fields || proxy.look_always)
        && forwarded::says_https(head, &proxy.secure_scheme_headers)
    {
        // A trusted proxy in front terminated TLS (gunicorn's
        // forwarded_allow_ips and secure_scheme_headers); a Host without a
        // port then means 443.
        env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
        if split_host_port(host).is_some_and(|(_, port)| port.is_none()) {
            env.set_item(intern!(py, "SERVER_PORT"), intern!(py, "443"))?;
        }
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;

    for (index, (name, value)) in head.fields().enumerate() {
        // Underscores and dashes both become '_' in the key, so a header
        // with '_' could impersonate one with '-' (X_Forwarded_For vs
        // X-Forwarded-For): such headers are dropped.
        if name.contains(&b'_') {
            continue;
        }
        let (key, value) = strings
            .fields
            .field(py, index, (name, value), keep, field_key);
        // SAFETY: GIL held; `env`, `key` and `value` are valid objects.
        // PyDict_SetDefault inserts `value` unless the key is present, and
        // returns a borrowed reference to the value now in the dict. The
        // dict grows only if it inserted: equal values may be one object
        // (CPython shares one-character strings), so identity cannot tell.
        let (inserted, present) = unsafe {
            let before = ffi::PyDict_Size(env.as_ptr());
            let ptr = ffi::PyDict_SetDefault(env.as_ptr(), key.as_ptr(), value.as_ptr());
            let present = Bound::from_borrowed_ptr_or_err(py, ptr)?;
            (ffi::PyDict_Size(env.as_ptr()) > before, present)
        };
        if !inserted {
            // A repeated field: its values are joined (RFC 9110 §5.3).
            let sep = if name.eq_ignore_ascii_case(b"cookie") {
                "; "
            } else {
                ", "
            };
            let joined = format!(
                "{}{sep}{}",
                present.cast::<PyString>()?.to_cow()?,
                value.to_cow()?
            );
            env.set_item(key, joined)?;
        }
    }
    Ok(env)
}

/// PATH_INFO once SCRIPT_NAME is taken off its front: only when it starts
/// with it and a path segment ends there.
fn strip_script_name<'a>(path: &'a [u8], script: &[u8]) -> &'a [u8] {
    match path.strip_prefix(script) {
        Some(rest) if !script.is_empty() && (rest.is_empty() || rest[0] == b'/') => rest,
        _ => path,
    }
}

/// The variables mod_ssl and nginx's fastcgi_params give an application
/// about a TLS connection: HTTPS, SSL_PROTOCOL, SSL_CIPHER,
/// SSL_CLIENT_VERIFY (SUCCESS with a client certificate, which the server
/// then checked against --ca-certs; else NONE), and with a certificate
/// SSL_CLIENT_CERT (PEM), SSL_CLIENT_S_DN, SSL_CLIENT_I_DN and the serial
/// as SSL_CLIENT_SERIAL and mod_ssl's SSL_CLIENT_M_SERIAL.
fn tls_variables(py: Python<'_>, env: &Bound<'_, PyDict>, tls: &TlsFacts) -> PyResult<()> {
    env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
    env.set_item(intern!(py, "SSL_PROTOCOL"), tls.protocol)?;
    env.set_item(intern!(py, "SSL_CIPHER"), &tls.cipher)?;
    match &tls.client_cert {
        Some(cert) => {
            env.set_item(intern!(py, "SSL_CLIENT_VERIFY"), intern!(py, "SUCCESS"))?;
            env.set_item(intern!(py, "SSL_CLIENT_CERT"), &cert.pem)?;
            env.set_item(intern!(py, "SSL_CLIENT_S_DN"), &cert.subject)?;
            env.set_item(intern!(py, "SSL_CLIENT_I_DN"), &cert.issuer)?;
            env.set_item(intern!(py, "SSL_CLIENT_SERIAL"), &cert.serial)?;
            env.set_item(intern!(py, "SSL_CLIENT_M_SERIAL"), &cert.serial)?;
        }
        None => env.set_item(intern!(py, "SSL_CLIENT_VERIFY"), intern!(py, "NONE"))?,
    }
    Ok(())
}

/// Whether a gateway's HTTPS variable says the client used TLS (RFC 3875
/// leaves the values open; servers send "on", "1" or "yes").
fn is_on(value: &[u8]) -> bool {
    [&b"on"[..], b"1", b"yes"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}

thread_local! {
    /// Variable names a gateway sends are the environ's keys as they are;
    /// made once per thread, as the `HTTP_*` keys are.
    static CGI_KEYS: RefCell<HashMap<Vec<u8>, Py<PyString>, BuildHasherDefault<Fnv>>> =
        RefCell::new(HashMap::default());
    /// The last gateway request's variables on this thread, with their
    /// strings. A gateway opens a connection per request (uwsgi, SCGI) and
    /// sends mostly the same variables each time (the server's name, port
    /// and protocol, the document root, the client's address and headers),
    /// so the cache lives with the thread, not the connection.
    static CGI_FIELDS: RefCell<FieldCache> = RefCell::new(FieldCache::default());
}

fn cgi_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    CGI_KEYS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(key) = cache.get(name) {
            return key.bind(py).clone();
        }
        let key = latin1(py, name);
        // SAFETY: GIL held; interning replaces the reference in place with
        // the interned string's (a new reference to the same text).
        let key = unsafe {
            let mut ptr = key.into_ptr();
            ffi::PyUnicode_InternInPlace(&mut ptr);
            Bound::from_owned_ptr(py, ptr).cast_into_unchecked::<PyString>()
        };
        if cache.len() < HEADER_KEY_CACHE_SIZE {
            cache.insert(name.to_vec(), key.clone().unbind());
        }
        key
    })
}

/// Builds the environ from the CGI variables a gateway sent (uwsgi,
/// FastCGI, SCGI, CGI). Every variable goes into the environ as sent, but:
///
/// - empty CONTENT_TYPE and CONTENT_LENGTH are left out, as for HTTP, and
///   so are HTTP_CONTENT_TYPE and HTTP_CONTENT_LENGTH (CGI has them only
///   without the prefix);
/// - `UWSGI_*` variables are dropped: ferrule never loads code or changes
///   directory because a request says so (uWSGI's UWSGI_FILE,
///   UWSGI_SCRIPT, UWSGI_CHDIR... make an exposed socket remote code
///   execution);
/// - SCRIPT_NAME and PATH_INFO: with PATH_INFO sent, SCRIPT_NAME is the
///   gateway's (else `--script-name`), and is taken off the front of
///   PATH_INFO when PATH_INFO repeats it (nginx's `uwsgi_modifier1 30`,
///   uWSGI's manage-script-name, always on). With no PATH_INFO (nginx's
///   stock fastcgi_params and scgi_params send none), the request's path
///   is DOCUMENT_URI, else SCRIPT_NAME (which the stock fastcgi_params
///   sets to the whole path), else REQUEST_URI's path percent-decoded, and
///   `--script-name` is taken off its front as for HTTP;
/// - wsgi.url_scheme is https when HTTPS is on, 1 or yes, or
///   REQUEST_SCHEME or UWSGI_SCHEME is https;
/// - what the gateway did not send (SERVER_NAME, SERVER_PORT, REMOTE_ADDR,
///   REMOTE_PORT) comes from the Host header and the connection, as for
///   HTTP.
fn build_from_cgi<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyDict>,
    settings: &EnvironSettings,
    head: &RequestHead,
    conn: &ConnInfo,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = base.copy()?;
    let mut script_name = None;
    let mut path_info = None;
    let mut document_uri = None;
    let mut https = conn.url_scheme == "https";
    let (mut server_name, mut remote_addr, mut remote_port) = (false, false, false);
    let mut cache = CGI_FIELDS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    // The position in the cache of the next variable that goes into the
    // environ (those left out take none).
    let mut slot = 0;
    for (name, value) in head.cgi_vars() {
        match name {
            b"SCRIPT_NAME" => {
                script_name = Some(value);
                continue;
            }
            b"PATH_INFO" => {
                path_info = Some(value);
                continue;
            }
            b"CONTENT_TYPE" | b"CONTENT_LENGTH" if value.is_empty() => continue,
            // nginx passes every request header as HTTP_*, these two too;
            // PEP 3333 (after CGI) has them only as CONTENT_*.
            b"HTTP_CONTENT_TYPE" | b"HTTP_CONTENT_LENGTH" => continue,
            b"DOCUMENT_URI" => document_uri = Some(value),
            b"HTTPS" => https |= is_on(value),
            b"REQUEST_SCHEME" => https |= value.eq_ignore_ascii_case(b"https"),
            b"SERVER_NAME" => server_name = true,
            b"REMOTE_ADDR" => remote_addr = true,
            b"REMOTE_PORT" => remote_port = true,
            b"REQUEST_URI" => {
                let (key, value) = cache.field(py, slot, (name, value), true, cgi_key);
                slot += 1;
                env.set_item(intern!(py, "RAW_URI"), &value)?;
                env.set_item(key, value)?;
                continue;
            }
            // The server's own keys are not a gateway's to set.
            _ if name.starts_with(b"wsgi.") => continue,
            _ if name.starts_with(b"UWSGI_") => {
                if name == b"UWSGI_SCHEME" {
                    https |= value.eq_ignore_ascii_case(b"https");
                }
                continue;
            }
            _ => {}
        }
        let (key, value) = cache.field(py, slot, (name, value), true, cgi_key);
        slot += 1;
        env.set_item(key, value)?;
    }
    CGI_FIELDS.with(|c| *c.borrow_mut() = cache);

    let own_script = settings.script_name.as_bytes();
    let (script, path): (&[u8], std::borrow::Cow<'_, [u8]>) = match path_info {
        Some(path) => {
            let script = script_name.unwrap_or(own_script);
            (script, strip_script_name(path, script).into())
        }
        None => {
            let whole = match document_uri.or(script_name) {
                Some(path) => path.into(),
                None => {
                    let uri = head.target();
                    let path = &uri[..memchr::memchr(b'?', uri).unwrap_or(uri.len())];
                    percent_decode(path)
                }
            };
            let path = strip_script_name(&whole, own_script).to_vec();
            (own_script, path.into())
        }
    };
    if script != own_script {
        env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, script))?;
    }
    env.set_item(intern!(py, "PATH_INFO"), latin1(py, &path))?;

    if !server_name {
        let (name, port) = server_name_port(py, head.host().unwrap_or_default(), conn);
        env.set_item(intern!(py, "SERVER_NAME"), name)?;
        env.set_item(intern!(py, "SERVER_PORT"), port)?;
    }
    if !remote_addr {
        env.set_item(intern!(py, "REMOTE_ADDR"), &conn.remote_addr)?;
    }
    if !remote_port {
        env.set_item(intern!(py, "REMOTE_PORT"), &conn.remote_port)?;
    }
    if https {
        env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::{is_on, percent_decode, strip_script_name};

    #[test]
    fn script_name_comes_off_at_a_segment_boundary() {
        assert_eq!(strip_script_name(b"/app/x", b"/app"), b"/x");
        assert_eq!(strip_script_name(b"/app", b"/app"), b"");
        assert_eq!(strip_script_name(b"/apple", b"/app"), b"/apple");
        assert_eq!(strip_script_name(b"/x", b""), b"/x");
        assert!(is_on(b"ON") && is_on(b"1") && is_on(b"yes") && !is_on(b"off"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/%e9%E9"), b"/\xe9\xe9");
        assert_eq!(&*percent_decode(b"/%zz%2"), b"/%zz%2");
        assert_eq!(&*percent_decode(b"/%2F"), b"//");
        assert_eq!(&*percent_decode(b"%41"), b"A");
        assert_eq!(&*percent_decode(b"/plain"), b"/plain");
    }
}
