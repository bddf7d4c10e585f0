//! Every setting, declared once. The clap declaration below is the single
//! source of each setting's command-line flag, its `FERRULE_*` environment
//! variable, its keyword in `ferrule.serve(...)` (the long flag with `_` for
//! `-`), and its row in the README's settings reference
//! (`ferrule --print-settings-reference`).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{
    Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches, Parser, ValueEnum,
};

use crate::access_log::AccessFormat;
use crate::net::allow::AllowedPeer;
use crate::net::listen::{Bind, BindAddress, ListenSpec, Protocol};
use crate::net::tls::{CertReqs, MinVersion, TlsSettings};
use crate::proto::forwarded::SchemeHeader;
use crate::proto::http2::Http2Limits;
use crate::proto::request::HeadLimits;
use crate::proto::static_file::StaticRoute;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    #[value(alias = "warn")]
    Warning,
    Error,
    Critical,
}

/// An HTTP version a listener serves (`--http-protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpProtocol {
    /// HTTP/1.1 (and 1.0).
    H1,
    /// HTTP/2.
    H2,
}

/// One entry of --http-protocols: gunicorn's config files write the list
/// with spaces after the commas ("h2, h1").
fn parse_http_protocol(s: &str) -> Result<HttpProtocol, String> {
    HttpProtocol::from_str(s.trim(), true).map_err(|_| format!("'{s}' is not h1 or h2"))
}

/// Whether HTTP/2 is served in the clear (`--http2-cleartext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Http2Cleartext {
    Off,
    /// A connection that opens with the HTTP/2 preface is HTTP/2.
    PriorKnowledge,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.0..=86400.0 * 365.0).contains(&secs) {
        return Err(format!("'{s}' is not between 0 and one year"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_worker_class(s: &str) -> Result<String, String> {
    let name = s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
    match name.as_str() {
        "sync" | "gthread" | "syncworker" | "threadworker" => Ok(s.to_string()),
        _ => Err(format!(
            "'{s}': ferrule runs WSGI applications in threads (gunicorn's sync and gthread \
             classes; set --threads); asynchronous worker classes (gevent, eventlet, tornado) \
             and ASGI workers are not supported"
        )),
    }
}

fn parse_secure_scheme_header(s: &str) -> Result<Option<SchemeHeader>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    crate::proto::forwarded::SecureSchemeHeaders::parse_entry(s).map(Some)
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// `PREFIX=DIR` for `--static` (`parse_prefix`).
fn parse_static_route(s: &str) -> Result<StaticRoute, String> {
    let Some((prefix, dir)) = s.split_once('=') else {
        return Err(format!(
            "'{s}' is not PREFIX=DIR (e.g. /static=/srv/app/static)"
        ));
    };
    let prefix = parse_prefix(prefix)?;
    if dir.is_empty() {
        return Err(format!("'{s}' names no directory after '='"));
    }
    Ok(StaticRoute {
        prefix,
        dir: PathBuf::from(dir),
    })
}

/// An application served under a URL prefix (`--mount`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// Starts with '/' and does not end with one; "" for the root.
    pub prefix: String,
    pub app: String,
}

/// `PREFIX=APP` (`parse_prefix`); `/` names the root application.
fn parse_mount(s: &str) -> Result<Mount, String> {
    let Some((prefix, app)) = s.split_once('=') else {
        return Err(format!(
            "'{s}' is not PREFIX=APP (e.g. /api=api.wsgi:application)"
        ));
    };
    let prefix = parse_prefix(prefix)?;
    if app.trim().is_empty() {
        return Err(format!("'{s}' names no application after '='"));
    }
    Ok(Mount {
        prefix,
        app: app.trim().to_string(),
    })
}

/// A URL prefix of `--mount` or `--static`: a plain absolute path, its
/// trailing '/' dropped (so `/api/` and `/api` are one), "" for `/`.
fn parse_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("the prefix '{prefix}' must start with '/'"));
    }
    if prefix.contains(['?', '#', '%']) || prefix.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!(
            "the prefix '{prefix}' must be a plain path: no '?', '#', '%', '.' or '..' segments"
        ));
    }
    Ok(prefix.trim_end_matches('/').to_string())
}

/// A file mode the way gunicorn reads one (its auto_int): `0o22` or `022`
/// octal, `0x12` hexadecimal, `18` decimal; a config file's Python
/// integer (`umask = 0o022`) arrives as its decimal digits.
fn parse_mode(s: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        u32::from_str_radix(hex, 16)
    } else if let Some(octal) = lower.strip_prefix("0o") {
        u32::from_str_radix(octal, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        u32::from_str_radix(&lower[1..], 8)
    } else {
        lower.parse()
    };
    parsed.ok().filter(|&m| m <= 0o777).ok_or_else(|| {
        format!("'{s}' is not a mode between 0 and 0o777 (0o22 or 022 octal, 0x12, or 18 decimal)")
    })
}

/// A file mode in octal digits, as uWSGI's chmod-socket takes it
/// (`660`, or `0o660`).
fn parse_octal_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.strip_prefix("0o").unwrap_or(s), 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal mode between 0 and 777 (660, 0o660)"))
}

/// A limit between `least` and `largest`, where 0 (gunicorn's
/// "unlimited") means `largest`: nothing is unbounded.
fn parse_limit(s: &str, least: u32, largest: u32) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Ok(largest),
        Ok(n) if (least..=largest).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not between {least} and {largest} (0 means {largest}, the largest)"
        )),
    }
}

/// A size limit in bytes, at most 1 MiB.
fn parse_size_limit(s: &str) -> Result<u32, String> {
    parse_limit(s, 16, 1_048_576)
}

/// A header-field count, at most 32768.
fn parse_field_count(s: &str) -> Result<u32, String> {
    parse_limit(s, 1, 32_768)
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferrule",
    version,
    disable_version_flag = true,
    // A setting given again (in a config file, then GUNICORN_CMD_ARGS, then
    // on the command line) takes its last value.
    args_override_self = true,
    about = "A WSGI (PEP 3333) server with a Rust core.",
    after_help = "APP is `module`, `module:name`, `pkg.module:obj.attr`, `module:factory()`, \
                  `module:factory('x', 2)` (literal arguments only) or a path to a .py/.wsgi file."
)]
pub struct Config {
    /// The WSGI application to serve.
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// Serve another application under a URL prefix: PREFIX=APP (/api=api.wsgi:app), repeatable (uWSGI's --mount, mod_wsgi's WSGIScriptAlias). Each is loaded once per worker; the longest prefix that ends at a path segment wins, and becomes part of SCRIPT_NAME. APP serves the rest; without APP the rest is 404.
    #[arg(
        help_heading = "Applications",
        long,
        value_name = "PREFIX=APP",
        env = "FERRULE_MOUNT",
        value_parser = parse_mount
    )]
    pub mount: Vec<Mount>,

    /// Serve files under a URL prefix from a directory, in Rust, without the application: PREFIX=DIR (/static=/srv/app/static), repeatable (uWSGI's static-map). GET and HEAD only; a name with no file, or a directory, goes to the application. Relative directories are under --chdir.
    #[arg(
        help_heading = "Applications",
        long = "static",
        value_name = "PREFIX=DIR",
        env = "FERRULE_STATIC",
        value_parser = parse_static_route
    )]
    pub static_routes: Vec<StaticRoute>,

    /// The Cache-Control value of --static responses (public, max-age=86400); none by default.
    #[arg(
        help_heading = "Applications",
        long,
        value_name = "VALUE",
        env = "FERRULE_STATIC_CACHE_CONTROL"
    )]
    pub static_cache_control: Option<String>,

    /// Serve Prometheus metrics for the whole server at http://ADDRESS/metrics (HOST:PORT, an IP address: 127.0.0.1:9101), from the master, on a listener of its own that is never an application's. Off by default; when on, every request is recorded.
    #[arg(
        help_heading = "Metrics",
        long,
        value_name = "ADDRESS",
        env = "FERRULE_METRICS_BIND"
    )]
    pub metrics_bind: Option<String>,

    /// The server's TLS certificate chain (PEM, the server's certificate first). With it, every TCP listener of HTTP whose --bind names no scheme serves HTTPS, as in gunicorn; https:// binds always do and need it; http:// binds never do. Repeat it (with --keyfile in the same order) for several certificates: a client gets the first whose names match the server name it asks for (SNI), else the first.
    #[arg(
        help_heading = "TLS",
        long,
        visible_alias = "ssl-certificate",
        value_name = "FILE",
        env = "FERRULE_CERTFILE"
    )]
    pub certfile: Vec<PathBuf>,

    /// The private key of --certfile (PEM: PKCS#8, PKCS#1, SEC1, or encrypted PKCS#8 with --ssl-keyfile-password), one for each --certfile, in the same order. Default: each key in its --certfile.
    #[arg(
        help_heading = "TLS",
        long,
        visible_alias = "ssl-keyfile",
        value_name = "FILE",
        env = "FERRULE_KEYFILE"
    )]
    pub keyfile: Vec<PathBuf>,

    /// The password of an encrypted --keyfile (PKCS#8, "BEGIN ENCRYPTED PRIVATE KEY"), for every --keyfile. Give it by the environment variable rather than on the command line, which other users can read; --print-config does not show it.
    #[arg(
        help_heading = "TLS",
        long,
        value_name = "PASSWORD",
        env = "FERRULE_SSL_KEYFILE_PASSWORD",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub ssl_keyfile_password: Option<String>,

    /// CA certificates (PEM) that vouch for clients' certificates, for --cert-reqs optional or required.
    #[arg(
        help_heading = "TLS",
        long,
        visible_alias = "ssl-ca",
        value_name = "FILE",
        env = "FERRULE_CA_CERTS"
    )]
    pub ca_certs: Option<PathBuf>,

    /// Whether clients present a certificate: none (0), optional (1: asked for; a client without one is served, one --ca-certs does not vouch for is refused) or required (2), as gunicorn takes Python's ssl.CERT_* values. The environ's SSL_CLIENT_VERIFY says which.
    #[arg(help_heading = "TLS", long, value_name = "WHICH", env = "FERRULE_CERT_REQS", value_enum, default_value_t = CertReqs::None)]
    pub cert_reqs: CertReqs,

    /// Every this many seconds, each worker looks at the --certfile, --keyfile and --ca-certs files, and when one has changed (a renewal) reads them again and serves new connections with them; connections already open, HTTP/2 ones with their streams, go on undisturbed. 0 (the default): only on HUP, which replaces the workers. A worker reads the files as its own user (--user).
    #[arg(help_heading = "TLS", long, value_name = "SECONDS", env = "FERRULE_RELOAD_CERTS_EVERY", default_value = "0", value_parser = parse_seconds)]
    pub reload_certs_every: Duration,

    /// The oldest TLS version served: tls1.2 or tls1.3.
    #[arg(help_heading = "TLS", long, value_name = "VERSION", env = "FERRULE_SSL_PROTOCOL_MIN", value_enum, default_value_t = MinVersion::Tls12)]
    pub ssl_protocol_min: MinVersion,

    /// HTTP versions served, in order of preference, as gunicorn's --http-protocols: h1 (HTTP/1.1) and h2 (HTTP/2). Over TLS, ALPN offers them in this order, and a client that does not choose h2 is served HTTP/1.1 either way, as in gunicorn. In the clear, h2 is served with --http2-cleartext.
    #[arg(help_heading = "HTTP/2", long, value_name = "LIST", env = "FERRULE_HTTP_PROTOCOLS", value_delimiter = ',', default_value = "h1", value_parser = parse_http_protocol)]
    pub http_protocols: Vec<HttpProtocol>,

    /// HTTP/2 in the clear (h2c), for a proxy that ends TLS and speaks HTTP/2 to ferrule: off, or prior-knowledge (a connection that opens with HTTP/2's preface, RFC 9113 §3.3, is served as HTTP/2; any other as HTTP/1.x). As in gunicorn, only from peers in --forwarded-allow-ips (and not on connections that start with a PROXY header), and it needs h2 in --http-protocols. The HTTP/1.1 Upgrade to h2c, which RFC 9113 deprecates, is not served
    #[arg(help_heading = "HTTP/2", long, value_name = "HOW", env = "FERRULE_HTTP2_CLEARTEXT", value_enum, default_value_t = Http2Cleartext::Off)]
    pub http2_cleartext: Http2Cleartext,

    /// Most streams (requests) open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS); at most --threads of them run the application at once.
    #[arg(help_heading = "HTTP/2", long, value_name = "N", env = "FERRULE_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub http2_max_concurrent_streams: u32,

    /// HTTP/2 flow-control window of each stream, in bytes (SETTINGS_INITIAL_WINDOW_SIZE): how much of a request body a client may send before ferrule has passed it on to the application. The connection's window is this times --http2-max-concurrent-streams.
    #[arg(help_heading = "HTTP/2", long, value_name = "BYTES", env = "FERRULE_HTTP2_INITIAL_WINDOW_SIZE", default_value_t = 65535, value_parser = clap::value_parser!(u32).range(1..=2_147_483_647))]
    pub http2_initial_window_size: u32,

    /// Largest HTTP/2 frame payload accepted, in bytes (SETTINGS_MAX_FRAME_SIZE): 16384 to 16777215.
    #[arg(help_heading = "HTTP/2", long, value_name = "BYTES", env = "FERRULE_HTTP2_MAX_FRAME_SIZE", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    pub http2_max_frame_size: u32,

    /// Largest request header list of an HTTP/2 request, decompressed, in bytes, counted as RFC 9113 §6.5.2 does (each field's name and value plus 32): a larger one is answered 431 before it reaches the application, and an HPACK bomb is stopped there. It is HTTP/2's --limit-request-head (16384 as in hyper and Granian; gunicorn's 0, unlimited, is not taken).
    #[arg(help_heading = "HTTP/2", long, value_name = "BYTES", env = "FERRULE_HTTP2_MAX_HEADER_LIST_SIZE", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub http2_max_header_list_size: u32,

    /// Most HTTP/2 streams a client may reset (RST_STREAM) before their response is whole, in any 10 seconds, before its connection is cut off with GOAWAY ENHANCE_YOUR_CALM (CVE-2023-44487, Rapid Reset). Whatever a client resets, the application calls its connection causes stay within --http2-max-concurrent-streams.
    #[arg(help_heading = "HTTP/2", long, value_name = "N", env = "FERRULE_HTTP2_MAX_RESET_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http2_max_reset_streams: u32,

    /// gunicorn's wsgi_app: the APP when the command line names none (set in a config file).
    #[arg(long, value_name = "APP", hide = true)]
    pub wsgi_app: Option<String>,

    /// Where to listen: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N, optionally after a protocol: http://, https://, uwsgi://, scgi:// or fastcgi:// (uwsgi://unix:/run/app.sock). Repeat for several listeners. Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.
    #[arg(
        help_heading = "Server socket",
        short = 'b',
        long = "bind",
        value_name = "ADDRESS",
        env = "FERRULE_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<Bind>,

    /// The protocol of listeners whose --bind names none (and of systemd's sockets).
    #[arg(help_heading = "Server socket", long, value_name = "PROTOCOL", env = "FERRULE_PROTOCOL", value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,

    /// Peers that may connect to uwsgi, SCGI and FastCGI listeners, which trust what the peer says of the client: IP addresses and networks (10.0.0.0/8), comma-separated, or '*' for any. Unix sockets are always allowed. Others are closed at once and logged.
    #[arg(
        help_heading = "Proxies and gateways",
        long,
        visible_alias = "uwsgi-allow-from",
        alias = "uwsgi-allow-ips",
        value_name = "ADDRESSES",
        env = "FERRULE_GATEWAY_ALLOW_FROM",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub gateway_allow_from: Vec<AllowedPeer>,

    /// Peers whose proxy headers are believed (gunicorn's forwarded_allow_ips): --secure-scheme-headers set wsgi.url_scheme to https, and with --forwarded-for and --forwarded-prefix the client's address and SCRIPT_NAME are taken too. IP addresses and networks, comma-separated, or '*' for any. Unix socket peers are always trusted. From other peers the headers change nothing.
    #[arg(
        help_heading = "Proxies and gateways",
        long,
        value_name = "ADDRESSES",
        env = "FERRULE_FORWARDED_ALLOW_IPS",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub forwarded_allow_ips: Vec<AllowedPeer>,

    /// Header fields from a --forwarded-allow-ips peer that set wsgi.url_scheme to https, as HEADER=VALUE, comma-separated (gunicorn's secure_scheme_headers; a config file's dict is taken as it is). 'none' for none. Forwarded=https means RFC 7239's Forwarded: proto=https in its last element (the nearest proxy's); like any entry, name it only if your proxy sets that field, since one that does not passes a client's on.
    #[arg(help_heading = "Proxies and gateways", long, value_name = "HEADER=VALUE", env = "FERRULE_SECURE_SCHEME_HEADERS", value_delimiter = ',', default_value = "X-Forwarded-Protocol=ssl,X-Forwarded-Proto=https,X-Forwarded-Ssl=on", value_parser = parse_secure_scheme_header)]
    pub secure_scheme_headers: Vec<Option<SchemeHeader>>,

    /// Take REMOTE_ADDR and REMOTE_PORT from a --forwarded-allow-ips peer's X-Forwarded-For (the field nginx, HAProxy and cloud balancers append to; a Forwarded field is not taken, as a proxy that does not set it passes a client's on): the nearest address that is not itself a trusted proxy, read from the right so a client cannot put its own in front. Off by default (gunicorn has no such setting). HTTP listeners; behind a gateway, REMOTE_ADDR is the gateway's word.
    #[arg(
        help_heading = "Proxies and gateways",
        long,
        env = "FERRULE_FORWARDED_FOR"
    )]
    pub forwarded_for: bool,

    /// Take SCRIPT_NAME from a --forwarded-allow-ips peer's X-Forwarded-Prefix (the path prefix the proxy took off; a plain absolute path, else ignored), before --script-name. Off by default.
    #[arg(
        help_heading = "Proxies and gateways",
        long,
        env = "FERRULE_FORWARDED_PREFIX"
    )]
    pub forwarded_prefix: bool,

    /// HTTP listeners take the PROXY protocol (HAProxy's, versions 1 and 2; AWS NLB, HAProxy send-proxy): a connection from a --proxy-allow-from peer must start with a PROXY header, whose client address becomes REMOTE_ADDR; a missing or malformed one closes the connection with a log line. Other peers are served as they are.
    #[arg(
        help_heading = "Proxies and gateways",
        long,
        env = "FERRULE_PROXY_PROTOCOL"
    )]
    pub proxy_protocol: bool,

    /// The load balancers whose PROXY header is taken (--proxy-protocol): IP addresses and networks, comma-separated, or '*' for any (gunicorn's proxy_allow_ips).
    #[arg(
        help_heading = "Proxies and gateways",
        long,
        alias = "proxy-allow-ips",
        value_name = "ADDRESSES",
        env = "FERRULE_PROXY_ALLOW_FROM",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub proxy_allow_from: Vec<AllowedPeer>,

    /// Largest block of variables a gateway may send for one request (uwsgi variables, an SCGI netstring, FastCGI params), in bytes; larger ones get 431. uWSGI's buffer-size, whose 4096 default is too small for real cookies.
    #[arg(help_heading = "Requests and limits", long, value_name = "BYTES", env = "FERRULE_BUFFER_SIZE", default_value_t = 65535, value_parser = clap::value_parser!(u32).range(64..=16_777_216))]
    pub buffer_size: u32,

    /// Worker processes. Default 1, or the WEB_CONCURRENCY environment variable when set.
    #[arg(help_heading = "Workers", short = 'w', long, value_name = "N", env = "FERRULE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Import the application in the master before forking workers (copy-on-write sharing; import errors found before any worker starts).
    #[arg(
        help_heading = "Workers",
        long,
        alias = "preload-app",
        env = "FERRULE_PRELOAD"
    )]
    pub preload: bool,

    /// A Python module whose functions are server hooks with gunicorn's names and signatures (on_starting(server), post_fork(server, worker), pre_request(worker, req), post_request(worker, req, environ, resp), ...; see Hooks). A config file's functions of those names are hooks too; this module's win.
    #[arg(
        help_heading = "Workers",
        long,
        value_name = "MODULE",
        env = "FERRULE_HOOKS"
    )]
    pub hooks: Option<String>,

    /// Seconds a request may run in the application (or a worker's event loop may stall) before the worker's Python stacks are logged and it is replaced; 0 disables.
    #[arg(help_heading = "Timeouts", short = 't', long, value_name = "SECONDS", env = "FERRULE_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub timeout: Duration,

    /// Overload protection: a request that has waited longer than this many seconds for an application thread (counted from when its last byte reached the server's socket) is answered 503 with Retry-After: 1 and never reaches the application; 0 disables (the default). Measured by the kernel, on TCP listeners only (a unix socket has no such count).
    #[arg(help_heading = "Timeouts", long, value_name = "SECONDS", env = "FERRULE_QUEUE_TIMEOUT", default_value = "0", value_parser = parse_seconds)]
    pub queue_timeout: Duration,

    /// Requests a worker serves before it is gracefully replaced; 0 disables.
    #[arg(
        help_heading = "Workers",
        long,
        value_name = "N",
        env = "FERRULE_MAX_REQUESTS",
        default_value_t = 0
    )]
    pub max_requests: u64,

    /// Each worker's own max_requests is drawn from [N, N + JITTER], so workers do not restart together.
    #[arg(
        help_heading = "Workers",
        long,
        value_name = "JITTER",
        env = "FERRULE_MAX_REQUESTS_JITTER",
        default_value_t = 0
    )]
    pub max_requests_jitter: u64,

    /// Resident memory (MiB) past which a worker is gracefully replaced after its current requests; 0 disables.
    #[arg(
        help_heading = "Workers",
        long,
        value_name = "MB",
        env = "FERRULE_MAX_WORKER_MEMORY",
        default_value_t = 0
    )]
    pub max_worker_memory: u64,

    /// Write the master's pid to this file (removed on exit).
    #[arg(
        help_heading = "Process",
        short = 'p',
        long,
        alias = "pidfile",
        value_name = "FILE",
        env = "FERRULE_PID"
    )]
    pub pid: Option<PathBuf>,

    /// Set SO_REUSEPORT on TCP listeners.
    #[arg(help_heading = "Server socket", long, env = "FERRULE_REUSE_PORT")]
    pub reuse_port: bool,

    /// Run workers as this user (name or uid) when started as root.
    #[arg(
        help_heading = "Process",
        short = 'u',
        long,
        value_name = "USER",
        env = "FERRULE_USER"
    )]
    pub user: Option<String>,

    /// Run workers as this group (name or gid) when started as root.
    #[arg(
        help_heading = "Process",
        short = 'g',
        long,
        value_name = "GROUP",
        env = "FERRULE_GROUP"
    )]
    pub group: Option<String>,

    /// Development: restart workers when a Python source file they loaded changes (inotify), modules imported after the start included; an application that then fails to load is logged and the worker waits for the next change instead of stopping the server.
    #[arg(help_heading = "Workers", long, env = "FERRULE_RELOAD")]
    pub reload: bool,

    /// With --reload, also restart workers when this file changes (a template, a settings file); repeatable.
    #[arg(
        alias = "reload-extra-files",
        help_heading = "Workers",
        long,
        value_name = "FILE",
        env = "FERRULE_RELOAD_EXTRA_FILE",
        value_delimiter = ','
    )]
    pub reload_extra_file: Vec<PathBuf>,

    /// How many requests may run the application at once (threads per process). Quick requests all run on one thread; one that takes over 0.5 ms lets the next run on another. Idle and slow connections do not hold one, except that above 1 a streamed (iterator) response more than --response-buffer ahead of its client waits for it on its thread.
    #[arg(help_heading = "Workers", long, value_name = "N", env = "FERRULE_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,

    /// Most simultaneous client connections; past it new connections wait in the listen backlog.
    #[arg(help_heading = "Workers", long, value_name = "N", env = "FERRULE_WORKER_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub worker_connections: u32,

    /// Listen backlog: connections the kernel queues before they are accepted.
    #[arg(help_heading = "Server socket", long, value_name = "N", env = "FERRULE_BACKLOG", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub backlog: u32,

    /// Change to this directory before loading the application.
    #[arg(
        help_heading = "Process",
        long,
        value_name = "DIR",
        env = "FERRULE_CHDIR"
    )]
    pub chdir: Option<PathBuf>,

    /// Directories to add to sys.path before loading the application, comma-separated.
    #[arg(
        help_heading = "Process",
        long,
        value_name = "DIR[,DIR]",
        env = "FERRULE_PYTHONPATH",
        value_delimiter = ','
    )]
    pub pythonpath: Vec<PathBuf>,

    /// Process umask, applied at start: 0o22 or 022 octal, 0x12 hexadecimal, 18 decimal (gunicorn's rules). A unix socket file's mode is 0777 without the umask's bits: 0777 by default (gunicorn's, so an nginx running as another user can connect), 0770 with --umask 007.
    #[arg(help_heading = "Server socket", short = 'm', long, value_name = "MODE", env = "FERRULE_UMASK", value_parser = parse_mode)]
    pub umask: Option<u32>,

    /// The mode of the unix socket files ferrule creates, in octal as uWSGI's chmod-socket writes it (660, 0o660); without it, 0777 without the --umask bits. Only the socket files: the process umask stays as it is.
    #[arg(help_heading = "Server socket", long, value_name = "MODE", env = "FERRULE_CHMOD_SOCKET", value_parser = parse_octal_mode)]
    pub chmod_socket: Option<u32>,

    /// SCRIPT_NAME: the URL prefix the application is mounted at (removed from PATH_INFO).
    #[arg(
        help_heading = "Requests and limits",
        long,
        value_name = "PATH",
        env = "FERRULE_SCRIPT_NAME",
        default_value = ""
    )]
    pub script_name: String,

    /// Longest request line in bytes; longer ones get 414. 0 (gunicorn's "unlimited") means the largest, 1048576.
    #[arg(help_heading = "Requests and limits", long, value_name = "BYTES", env = "FERRULE_LIMIT_REQUEST_LINE", default_value_t = 8190, value_parser = parse_size_limit)]
    pub limit_request_line: u32,

    /// Most header fields in a request; more get 431. 0 means the largest, 32768, as in gunicorn.
    #[arg(help_heading = "Requests and limits", long, value_name = "N", env = "FERRULE_LIMIT_REQUEST_FIELDS", default_value_t = 100, value_parser = parse_field_count)]
    pub limit_request_fields: u32,

    /// Longest header field (name and value) in bytes; longer ones get 431. 0 (gunicorn's "unlimited") means the largest, 1048576.
    #[arg(help_heading = "Requests and limits", long, alias = "limit-request-field_size", value_name = "BYTES", env = "FERRULE_LIMIT_REQUEST_FIELD_SIZE", default_value_t = 8190, value_parser = parse_size_limit)]
    pub limit_request_field_size: u32,

    /// Largest request head (request line and all fields) in bytes; larger ones get 431.
    #[arg(help_heading = "Requests and limits", long, value_name = "BYTES", env = "FERRULE_LIMIT_REQUEST_HEAD", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(64..=16_777_216))]
    pub limit_request_head: u32,

    /// Largest request body in bytes; larger ones get 413.
    #[arg(help_heading = "Requests and limits", long, value_name = "BYTES", env = "FERRULE_LIMIT_REQUEST_BODY", default_value_t = 1 << 30)]
    pub limit_request_body: u64,

    /// With --threads above 1, how many bytes of a streamed (iterator) response may wait in memory for a slow client while the application goes on producing: a response that ends within it frees its thread at once, and the rest is sent as the client reads; past it, the application's thread waits for the client.
    #[arg(help_heading = "Requests and limits", long, value_name = "BYTES", env = "FERRULE_RESPONSE_BUFFER", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(0..=1_073_741_824))]
    pub response_buffer: u64,

    /// Request bodies are received whole before the application is called, so an uploading client never holds an application thread: up to this many bytes in memory, the rest in an unnamed temporary file (in $TMPDIR, else /tmp). uWSGI's post-buffering.
    #[arg(help_heading = "Requests and limits", long, value_name = "BYTES", env = "FERRULE_POST_BUFFERING", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(0..=67_108_864))]
    pub post_buffering: u64,

    /// Let the application read bodies larger than --post-buffering (and chunked ones) from the connection as they arrive, and answer Expect: 100-continue on its first read of wsgi.input, instead of receiving them first; an uploading client then holds an application thread.
    #[arg(
        help_heading = "Requests and limits",
        long,
        env = "FERRULE_STREAM_UPLOADS"
    )]
    pub stream_uploads: bool,

    /// Seconds a client has to send a whole request head once it starts; past it, 408.
    #[arg(help_heading = "Timeouts", long, value_name = "SECONDS", env = "FERRULE_HEADER_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,

    /// Seconds an idle keep-alive connection is kept open for its next request; 0 closes after each response.
    #[arg(help_heading = "Timeouts", long, alias = "keepalive", value_name = "SECONDS", env = "FERRULE_KEEP_ALIVE", default_value = "5", value_parser = parse_seconds)]
    pub keep_alive: Duration,

    /// Seconds to wait for a client to send more of a body or accept more of a response before the connection is dropped.
    #[arg(help_heading = "Timeouts", long, value_name = "SECONDS", env = "FERRULE_SOCKET_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub socket_timeout: Duration,

    /// Seconds in-flight requests get to finish after SIGTERM (or a worker being retired) before they are cut.
    #[arg(help_heading = "Timeouts", long, value_name = "SECONDS", env = "FERRULE_GRACEFUL_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub graceful_timeout: Duration,

    /// Least severe message the error log shows.
    #[arg(help_heading = "Logging", long, alias = "loglevel", value_name = "LEVEL", env = "FERRULE_LOG_LEVEL", value_enum, ignore_case = true, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Error log file; '-' is stderr. gunicorn's --log-file is the same setting.
    #[arg(
        help_heading = "Logging",
        long,
        visible_alias = "log-file",
        alias = "errorlog",
        value_name = "FILE",
        env = "FERRULE_ERROR_LOGFILE",
        default_value = "-"
    )]
    pub error_logfile: String,

    /// Access log file; '-' is stdout (as in gunicorn). Off unless set.
    #[arg(
        help_heading = "Logging",
        long,
        alias = "accesslog",
        value_name = "FILE",
        env = "FERRULE_ACCESS_LOGFILE"
    )]
    pub access_logfile: Option<String>,

    /// The access log's line, with gunicorn's atoms written %(atom)s: h remote address, l '-', u user (Basic authorization), t [time], r request line, m method, U path, q query, H protocol, s status, B bytes, b bytes or '-', f referer, a user agent, T/M/D request time in s/ms/µs, L in decimal seconds, p the pid in angle brackets, {name}i request header, {name}o response header, {name}e WSGI environ variable; %% for %. Values a client sends are escaped. The default is gunicorn's, the combined log format. 'json' writes one JSON object a line (time, remote, method, path, query, protocol, status, bytes, duration_us, referer, user_agent, pid).
    #[arg(help_heading = "Logging", long, alias = "access-log-format", value_name = "FORMAT", env = "FERRULE_ACCESS_LOGFORMAT", default_value = crate::access_log::DEFAULT_FORMAT, value_parser = AccessFormat::parse)]
    pub access_logformat: AccessFormat,

    /// gunicorn's worker class: sync and gthread are accepted (ferrule runs the application in --threads threads); asynchronous classes (gevent, eventlet, tornado, uvicorn's ASGI workers) are refused.
    #[arg(help_heading = "Workers", short = 'k', long, value_name = "CLASS", env = "FERRULE_WORKER_CLASS", default_value = "gthread", value_parser = parse_worker_class)]
    pub worker_class: String,

    /// Load the configuration and the application, report what is wrong, and exit: 0 when both load, 1 when not (gunicorn's --check-config).
    #[arg(help_heading = "Configuration", long)]
    pub check_config: bool,

    /// Print every setting's effective value and where it came from (the command line, FERRULE_CMD_ARGS, GUNICORN_CMD_ARGS, the config file, a FERRULE_* variable, or the default), and exit.
    #[arg(help_heading = "Configuration", long)]
    pub print_config: bool,

    /// Set an environment variable for the application: KEY=VALUE, repeatable (gunicorn's -e/--env; raw_env in a config file).
    #[arg(help_heading = "Process", short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,

    /// A Python config file in gunicorn's format (module-level names are settings: bind, workers, threads, timeout, ...), or python:MODULE. Without it, ./ferrule.conf.py, else ./gunicorn.conf.py, is read if present. Precedence: FERRULE_* variables < the file < GUNICORN_CMD_ARGS < FERRULE_CMD_ARGS < the command line.
    #[arg(help_heading = "Configuration", short = 'c', long, value_name = "FILE")]
    pub config: Option<String>,

    /// A uWSGI ini file (FILE, or FILE:SECTION; the [uwsgi] section by default): its module, socket, http-socket, processes, threads, harakiri, env and the other options Python deployments use become these settings (docs/migrating.md has the table). In precedence below a config file and above the FERRULE_* variables.
    #[arg(help_heading = "Configuration", long, value_name = "FILE[:SECTION]")]
    pub ini: Option<String>,

    /// Run the application once as a CGI script (RFC 3875; PEP 3333's run_with_cgi): the request from the environment and stdin, the response on stdout, errors on stderr, exit status 0 even for a 500. For servers that can only run scripts (Apache mod_cgi, lighttpd mod_cgi).
    #[arg(help_heading = "Process", long, env = "FERRULE_CGI")]
    pub cgi: bool,

    /// The name in process titles (gunicorn's proc_name): 'ferrule: master [NAME]' and 'ferrule: worker [NAME]' with setproctitle installed. Default: the APP.
    #[arg(
        help_heading = "Process",
        short = 'n',
        long,
        alias = "proc-name",
        value_name = "NAME",
        env = "FERRULE_NAME"
    )]
    pub name: Option<String>,

    /// Send the application's stdout and stderr (print(), C extensions' output) to the error log file, reopened with it on USR1; with the error log on stderr, stdout goes to stderr.
    #[arg(help_heading = "Logging", long, env = "FERRULE_CAPTURE_OUTPUT")]
    pub capture_output: bool,

    /// Send wsgi.file_wrapper responses by reading the file instead of sendfile(2), gunicorn's --no-sendfile (for filesystems where sendfile misbehaves). A config file's `sendfile = False` is the same.
    #[arg(help_heading = "Process", long, env = "FERRULE_NO_SENDFILE")]
    pub no_sendfile: bool,

    /// gunicorn's --worker-tmp-dir: accepted and not needed (workers report liveness through shared memory, not a file).
    #[arg(help_heading = "Process", long, value_name = "DIR")]
    pub worker_tmp_dir: Option<PathBuf>,

    /// gunicorn's -D/--daemon: refused with what to do instead (run ferrule under systemd, supervisord or docker, which keep it in the foreground).
    #[arg(help_heading = "Process", short = 'D', long, env = "FERRULE_DAEMON")]
    pub daemon: bool,

    /// Print version.
    #[arg(short = 'v', long, visible_short_alias = 'V', action = clap::ArgAction::Version)]
    version: Option<bool>,

    /// Print the settings reference (Markdown) and exit.
    #[arg(long, hide = true)]
    pub print_settings_reference: bool,

    /// Print the metrics reference (Markdown) and exit.
    #[arg(long, hide = true)]
    pub print_metrics_reference: bool,
}

/// The command line as parsed: the declaration above, with every on/off
/// setting made a switch that also takes a value, as gunicorn users and
/// environment variables write them: `--preload`, `--preload=false` (and
/// `--preload true`, which `config_file::expand` joins into
/// `--preload=true`), `FERRULE_PRELOAD=1`, `true`/`false`, `yes`/`no`,
/// `on`/`off`, `1`/`0`.
pub fn command() -> Command {
    Config::command().mut_args(|arg| {
        if is_switch_setting(&arg) {
            arg.action(ArgAction::Set)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .default_value("false")
                .value_name(SWITCH_VALUE)
                .value_parser(BoolishValueParser::new())
        } else {
            arg
        }
    })
}

/// An on/off setting: a flag with an environment variable (the commands
/// --check-config and --print-config have none).
fn is_switch_setting(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue) && arg.get_env().is_some()
}

/// Whether `arg` is an on/off setting of `command()`.
pub fn is_switch(arg: &Arg) -> bool {
    arg.get_value_names()
        .is_some_and(|names| names.len() == 1 && names[0] == SWITCH_VALUE)
}

/// The value name that marks an on/off setting.
const SWITCH_VALUE: &str = "BOOL";

/// Parses the words of a command line (without the program name).
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Config, clap::Error> {
    let matches: ArgMatches =
        command().try_get_matches_from(std::iter::once("ferrule".to_string()).chain(argv))?;
    Config::from_arg_matches(&matches)
}

impl Config {
    /// Worker processes: --workers, else WEB_CONCURRENCY, else 1.
    pub fn worker_count(&self) -> Result<usize, String> {
        if let Some(n) = self.workers {
            return Ok(usize::from(n));
        }
        match std::env::var("WEB_CONCURRENCY") {
            Ok(v) if !v.is_empty() => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| format!("invalid value '{v}' for '--workers' (from WEB_CONCURRENCY): expected 1 to 1024")),
            _ => Ok(1),
        }
    }

    /// The application that serves what no --mount does: APP, else a
    /// config file's wsgi_app, else a mount of `/`.
    pub fn root_app(&self) -> Option<&str> {
        self.app
            .as_deref()
            .or(self.wsgi_app.as_deref())
            .or_else(|| {
                self.mount
                    .iter()
                    .find(|m| m.prefix.is_empty())
                    .map(|m| m.app.as_str())
            })
    }

    /// What the server serves, for its process titles and messages: the
    /// root application, else the mounts.
    pub fn app_label(&self) -> Option<String> {
        if let Some(root) = self.root_app() {
            return Some(root.to_string());
        }
        (!self.mount.is_empty()).then(|| {
            let mounts: Vec<String> = self
                .mount
                .iter()
                .map(|m| format!("{}={}", m.prefix, m.app))
                .collect();
            mounts.join(" ")
        })
    }

    /// --metrics-bind, checked not to be an application listener's address.
    pub fn metrics_address(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(text) = &self.metrics_bind else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            format!("invalid value '{text}' for '--metrics-bind': not HOST:PORT with an IP address (127.0.0.1:9101, [::1]:9101)")
        })?;
        for bind in &self.bind {
            let BindAddress::Tcp { host, port } = &bind.address else {
                continue;
            };
            let host_ip = host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .ok();
            let same_host = match host_ip {
                Some(ip) => ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified(),
                None => true,
            };
            if *port != 0 && *port == addr.port() && same_host {
                return Err(format!(
                    "invalid value '{text}' for '--metrics-bind': it is the application listener {}; metrics need a port of their own",
                    bind.address
                ));
            }
        }
        Ok(Some(addr))
    }

    /// The mounts under a prefix other than the root, checked: two
    /// applications for one prefix are refused.
    pub fn prefix_mounts(&self) -> Result<Vec<&Mount>, String> {
        let mut seen: Vec<&str> = Vec::new();
        let given_root = self.app.is_some() || self.wsgi_app.is_some();
        for mount in &self.mount {
            if seen.contains(&mount.prefix.as_str()) || (mount.prefix.is_empty() && given_root) {
                let prefix = if mount.prefix.is_empty() {
                    "/"
                } else {
                    &mount.prefix
                };
                return Err(format!(
                    "invalid value for '--mount': two applications for the prefix '{prefix}'"
                ));
            }
            seen.push(&mount.prefix);
        }
        Ok(self.mount.iter().filter(|m| !m.prefix.is_empty()).collect())
    }

    /// The --static routes, their directories under --chdir when
    /// relative; the error names a directory that is not one.
    pub fn static_routes(&self) -> Result<Vec<StaticRoute>, String> {
        let base = match &self.chdir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| format!("--static: {e}"))?,
        };
        self.static_routes
            .iter()
            .map(|route| {
                let dir = base.join(&route.dir);
                if !dir.is_dir() {
                    let prefix = if route.prefix.is_empty() {
                        "/"
                    } else {
                        &route.prefix
                    };
                    return Err(format!(
                        "invalid value '{prefix}={}' for '--static': {} is not a directory",
                        route.dir.display(),
                        dir.display()
                    ));
                }
                Ok(StaticRoute {
                    prefix: route.prefix.clone(),
                    dir,
                })
            })
            .collect()
    }

    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_request_line: self.limit_request_line as usize,
            max_fields: self.limit_request_fields as usize,
            max_field_size: self.limit_request_field_size as usize,
            max_head_size: self.limit_request_head as usize,
        }
    }

    /// The HTTP/2 settings; an error names a setting given without what it
    /// needs.
    pub fn http2_limits(&self) -> Result<Http2Limits, String> {
        let h2 = self.http_protocols.contains(&HttpProtocol::H2);
        if self.http2_cleartext != Http2Cleartext::Off && !h2 {
            return Err(
                "--http2-cleartext needs h2 in --http-protocols (--http-protocols h2,h1)".into(),
            );
        }
        Ok(Http2Limits {
            max_concurrent_streams: self.http2_max_concurrent_streams,
            initial_window_size: self.http2_initial_window_size,
            max_frame_size: self.http2_max_frame_size,
            max_header_list_size: self.http2_max_header_list_size,
            max_reset_streams: self.http2_max_reset_streams,
        })
    }

    /// Whether HTTP/2 is served (h2 in --http-protocols).
    pub fn serves_http2(&self) -> bool {
        self.http_protocols.contains(&HttpProtocol::H2)
    }

    /// The protocols TLS listeners offer by ALPN (RFC 7301), in order of
    /// preference: --http-protocols, then http/1.1 whether listed or not,
    /// as gunicorn does (a client that does not choose h2 is served
    /// HTTP/1.1, never refused).
    fn alpn_protocols(&self) -> Vec<&'static [u8]> {
        self.http_protocols
            .iter()
            .map(|p| match p {
                HttpProtocol::H1 => &b"http/1.1"[..],
                HttpProtocol::H2 => &b"h2"[..],
            })
            .chain([&b"http/1.1"[..]])
            .fold(Vec::new(), |mut seen, p| {
                if !seen.contains(&p) {
                    seen.push(p);
                }
                seen
            })
    }

    /// The TLS settings, when a certificate is given; an error names a
    /// setting given without the others it needs.
    pub fn tls_settings(&self) -> Result<Option<TlsSettings<'_>>, String> {
        let https_bind = self
            .bind
            .iter()
            .any(|b| b.scheme.is_some_and(|(_, tls)| tls));
        if self.certfile.is_empty() {
            if https_bind {
                return Err("an https:// --bind needs --certfile (and --keyfile, unless the key is in the certificate's file)".into());
            }
            if !self.keyfile.is_empty()
                || self.ca_certs.is_some()
                || self.cert_reqs != CertReqs::None
                || self.ssl_keyfile_password.is_some()
                || !self.reload_certs_every.is_zero()
            {
                return Err(
                    "--keyfile, --ssl-keyfile-password, --ca-certs, --cert-reqs and --reload-certs-every need --certfile"
                        .into(),
                );
            }
            return Ok(None);
        }
        let keys = if self.keyfile.is_empty() {
            &self.certfile
        } else if self.keyfile.len() == self.certfile.len() {
            &self.keyfile
        } else {
            return Err(format!(
                "{} --certfile and {} --keyfile: give one --keyfile for each --certfile, in the same order (or none, with each key in its certificate's file)",
                self.certfile.len(),
                self.keyfile.len()
            ));
        };
        Ok(Some(TlsSettings {
            certs: self
                .certfile
                .iter()
                .zip(keys)
                .map(|(cert, key)| (cert.as_path(), key.as_path()))
                .collect(),
            key_password: self.ssl_keyfile_password.as_deref(),
            ca_certs: self.ca_certs.as_deref(),
            cert_reqs: self.cert_reqs,
            min_version: self.ssl_protocol_min,
            alpn: self.alpn_protocols(),
        }))
    }

    /// The TLS server configuration, when a certificate is given.
    pub fn tls_config(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
        self.tls_settings()?
            .map(|settings| crate::net::tls::server_config(&settings))
            .transpose()
    }

    /// The listeners to open: as given, else 0.0.0.0:$PORT when PORT is set
    /// (Heroku, containers), else 127.0.0.1:8000.
    /// Each with its protocol: the one it names, else --protocol.
    pub fn bind_addresses(&self) -> Result<Vec<ListenSpec>, String> {
        if !self.bind.is_empty() {
            return Ok(self
                .bind
                .iter()
                .map(|b| ListenSpec {
                    protocol: b.scheme.map_or(self.protocol, |(protocol, _)| protocol),
                    tls: b.scheme.map(|(_, tls)| tls),
                    address: b.address.clone(),
                })
                .collect());
        }
        let default = match std::env::var("PORT") {
            Ok(port) if !port.is_empty() => format!("0.0.0.0:{port}"),
            _ => "127.0.0.1:8000".to_string(),
        };
        default
            .parse()
            .map_err(|e| format!("invalid value '{default}' for '--bind' (from PORT): {e}"))
            .map(|address| {
                vec![ListenSpec {
                    protocol: self.protocol,
                    tls: None,
                    address,
                }]
            })
    }
}

/// The settings reference as a Markdown table, generated from the
/// declaration above so the README cannot drift from the code.
pub fn settings_reference() -> String {
    let cmd = command();
    let listed: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| {
            !a.is_hide_set()
                && a.get_long().is_some()
                && !matches!(a.get_action(), ArgAction::Version)
        })
        .collect();
    // One table per heading, as `ferrule --help` groups them.
    let mut headings: Vec<&str> = Vec::new();
    for arg in &listed {
        let heading = arg.get_help_heading().unwrap_or("Other");
        if !headings.contains(&heading) {
            headings.push(heading);
        }
    }
    let mut out = String::new();
    for heading in headings {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "**{heading}**\n\n| flag | environment | default | meaning |\n|---|---|---|---|\n"
        ));
        for arg in listed
            .iter()
            .filter(|a| a.get_help_heading().unwrap_or("Other") == heading)
        {
            out.push_str(&reference_row(arg));
        }
    }
    out
}

fn reference_row(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    let value = if is_switch(arg) {
        "[=BOOL]".to_string()
    } else {
        value
    };
    let flag = match arg.get_short() {
        Some(s) => format!("`-{s}`, `--{long}{value}`"),
        None => format!("`--{long}{value}`"),
    };
    let env = arg
        .get_env()
        .map(|e| format!("`{}`", e.to_string_lossy()))
        .unwrap_or_default();
    let default = arg
        .get_default_values()
        .iter()
        .map(|d| match d.to_string_lossy() {
            v if v.is_empty() => "(empty)".to_string(),
            v => format!("`{v}`"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    if !help.is_empty() && !help.ends_with('.') {
        help.push('.');
    }
    let values: Vec<String> = if is_switch(arg) {
        Vec::new()
    } else {
        arg.get_possible_values()
            .iter()
            .map(|v| format!("`{}`", v.get_name()))
            .collect()
    };
    if !values.is_empty() {
        help.push_str(&format!(" One of {}.", values.join(", ")));
    }
    format!("| {flag} | {env} | {default} | {help} |\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(
            [
                "app:application",
                "--threads",
                "4",
                "-b",
                "unix:/tmp/x.sock",
            ]
            .map(String::from),
        )
        .unwrap();
        assert_eq!(c.threads, 4);
        assert_eq!(c.limit_request_fields, 100);
        assert_eq!(c.keep_alive, Duration::from_secs(5));
        assert_eq!(c.bind.len(), 1);
    }

    #[test]
    fn switches_take_a_value_or_none() {
        let words = |w: &[&str]| parse(w.iter().map(|s| s.to_string()));
        assert!(words(&["app", "--preload"]).unwrap().preload);
        assert!(!words(&["app"]).unwrap().preload);
        assert!(!words(&["app", "--preload=false"]).unwrap().preload);
        assert!(words(&["app", "--preload-app=yes"]).unwrap().preload);
        // The APP after a bare switch stays the APP.
        let c = words(&["--reload", "app"]).unwrap();
        assert!(c.reload && c.app.as_deref() == Some("app"));
        let err = words(&["app", "--preload=maybe"]).unwrap_err().to_string();
        assert!(err.contains("--preload"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(["app", "--threads", "0"].map(String::from))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--threads"), "{err}");
        let err = parse(["app", "--log-level", "loud"].map(String::from))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--log-level") && err.contains("warning"),
            "{err}"
        );
    }

    #[test]
    fn reference_lists_every_setting() {
        let text = settings_reference();
        assert!(text.contains("`-b`, `--bind ADDRESS`"));
        assert!(text.contains("`FERRULE_THREADS`"));
        assert!(!text.contains("print-settings-reference"));
    }
}
