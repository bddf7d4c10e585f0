//! Listening sockets: parsing `--bind` values and opening them. Sockets are
//! opened with std and socket2 (no runtime), so a future master process can
//! bind before it forks.

use std::fmt;
use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// The protocol a listener's connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0), from clients or from a proxy.
    Http,
    /// uWSGI's binary protocol (nginx `uwsgi_pass`, Apache mod_proxy_uwsgi).
    Uwsgi,
    /// SCGI (nginx `scgi_pass`, Apache mod_proxy_scgi, lighttpd mod_scgi).
    Scgi,
    /// FastCGI, responder role (nginx `fastcgi_pass`, Apache
    /// mod_proxy_fcgi, lighttpd mod_fastcgi).
    Fastcgi,
}

impl Protocol {
    /// The scheme that names it in a `--bind` value and in the log.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Uwsgi => "uwsgi",
            Protocol::Scgi => "scgi",
            Protocol::Fastcgi => "fastcgi",
        }
    }

    /// The protocol a name (its scheme) stands for.
    pub fn named(name: &str) -> Option<Protocol> {
        [
            Protocol::Http,
            Protocol::Uwsgi,
            Protocol::Scgi,
            Protocol::Fastcgi,
        ]
        .into_iter()
        .find(|p| p.scheme() == name)
    }

    /// Whether its peer is a gateway that vouches for the client's address,
    /// scheme and headers, and so must be an allowed one.
    pub fn is_gateway(self) -> bool {
        self != Protocol::Http
    }
}

/// A listener's protocol, and whether TLS is on.
pub type Scheme = (Protocol, bool);

/// What a scheme names: a protocol, over TLS or not (`https` is HTTP over
/// TLS). The names of `--bind` schemes and of LISTEN_FDNAMES.
pub fn scheme_named(name: &str) -> Option<Scheme> {
    if name == "https" {
        return Some((Protocol::Http, true));
    }
    Protocol::named(name).map(|protocol| (protocol, false))
}

/// A `--bind` value: an address, and the protocol if it names one
/// (`uwsgi://127.0.0.1:3031`, `scgi://unix:/run/app.sock`,
/// `https://0.0.0.0:443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The protocol and whether TLS is on, when the value names a scheme.
    pub scheme: Option<Scheme>,
    pub address: BindAddress,
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((name, rest)) = s.split_once("://") {
            if let Some(scheme) = scheme_named(name) {
                return Ok(Bind {
                    scheme: Some(scheme),
                    address: rest.parse()?,
                });
            }
        }
        Ok(Bind {
            scheme: None,
            address: s.parse()?,
        })
    }
}

/// A listener to open: its protocol, whether TLS is on (None when no
/// scheme said: then by `ListenOptions::tls_by_default`), and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub protocol: Protocol,
    pub tls: Option<bool>,
    pub address: BindAddress,
}

/// The port of a `--bind` that names none (`-b localhost`), as in gunicorn.
const DEFAULT_PORT: &str = "8000";

/// A `--bind` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddress {
    /// `HOST:PORT` or `[IPV6]:PORT`; the host may be a name to resolve.
    Tcp { host: String, port: u16 },
    /// `unix:PATH`
    Unix(PathBuf),
    /// `fd://N`: a descriptor inherited already listening.
    Fd(RawFd),
}

impl fmt::Display for BindAddress {
    /// As a `--bind` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            BindAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            BindAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            BindAddress::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

impl FromStr for BindAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const FORMS: &str = "expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N, \
                             optionally after http://, uwsgi://, scgi:// or fastcgi://";
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("'{s}': empty socket path; {FORMS}"));
            }
            return Ok(BindAddress::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            return fd
                .parse::<RawFd>()
                .ok()
                .filter(|&fd| fd >= 0)
                .map(BindAddress::Fd)
                .ok_or_else(|| format!("'{s}': not a descriptor number; {FORMS}"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}': unclosed '['; {FORMS}"))?;
            let port = match after {
                "" => DEFAULT_PORT,
                _ => after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("'{s}': ']' not followed by :PORT; {FORMS}"))?,
            };
            (host.to_string(), port)
        } else {
            if s.is_empty() {
                return Err(format!("empty address; {FORMS}"));
            }
            // gunicorn's habit: a host alone listens on port 8000.
            let (host, port) = s.rsplit_once(':').unwrap_or((s, DEFAULT_PORT));
            if host.contains(':') {
                return Err(format!("'{s}': IPv6 addresses go in brackets; {FORMS}"));
            }
            (
                if host.is_empty() {
                    "0.0.0.0".to_string()
                } else {
                    host.to_string()
                },
                port,
            )
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("'{s}': port is not a number from 0 to 65535; {FORMS}"))?;
        Ok(BindAddress::Tcp { host, port })
    }
}

/// An open listening socket and the protocol its connections speak.
#[derive(Debug)]
pub struct Listener {
    pub socket: ListenSocket,
    pub protocol: Protocol,
    /// Connections start with a TLS handshake.
    pub tls: bool,
}

/// An open listening socket.
#[derive(Debug)]
pub enum ListenSocket {
    Tcp(TcpListener),
    /// The path is kept so the socket file can be removed on exit; `None`
    /// for an inherited socket, whose file is not ours to remove.
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// `socket_mode` is a unix socket file's permissions.
    pub fn bind(
        addr: &BindAddress,
        protocol: Protocol,
        backlog: u32,
        reuse_port: bool,
        socket_mode: u32,
    ) -> io::Result<Listener> {
        Ok(Listener {
            socket: ListenSocket::bind(addr, backlog, reuse_port, socket_mode)?,
            protocol,
            tls: false,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.raw_fd()
    }

    /// The scheme that names it (`https` for HTTP over TLS).
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            self.protocol.scheme()
        }
    }

    /// The socket file to remove on exit: that of a unix listener this
    /// process created (not of an inherited one).
    pub fn socket_file(&self) -> Option<PathBuf> {
        match &self.socket {
            ListenSocket::Unix(_, path) => path.clone(),
            ListenSocket::Tcp(_) => None,
        }
    }
}

impl ListenSocket {
    fn bind(
        addr: &BindAddress,
        backlog: u32,
        reuse_port: bool,
        socket_mode: u32,
    ) -> io::Result<ListenSocket> {
        let listener = match addr {
            BindAddress::Tcp { host, port } => {
                let sockaddr = (host.as_str(), *port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{host} resolves to no address"),
                        )
                    })?;
                let socket = Socket::new(Domain::for_address(sockaddr), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                if sockaddr.is_ipv6() {
                    socket.set_only_v6(true)?;
                }
                socket.bind(&sockaddr.into())?;
                socket.listen(backlog.min(i32::MAX as u32) as i32)?;
                ListenSocket::Tcp(socket.into())
            }
            BindAddress::Unix(path) => {
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&socket2::SockAddr::unix(path)?)?;
                // Connecting takes write permission on the file: its mode is
                // set, not left to the process umask (0755 under the usual
                // 022 shuts out an nginx running as another user).
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))?;
                socket.listen(backlog.min(i32::MAX as u32) as i32)?;
                ListenSocket::Unix(socket.into(), Some(path.clone()))
            }
            BindAddress::Fd(fd) => {
                // SAFETY: the user handed us this descriptor to listen on.
                let socket = unsafe { Socket::from_raw_fd(*fd) };
                // Handed over open across exec; not to be handed on to
                // programs the application runs.
                socket.set_cloexec(true)?;
                let local = socket.local_addr()?;
                if local.is_unix() {
                    ListenSocket::Unix(socket.into(), None)
                } else {
                    ListenSocket::Tcp(socket.into())
                }
            }
        };
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.set_nonblocking(on),
            ListenSocket::Unix(l, _) => l.set_nonblocking(on),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            ListenSocket::Tcp(l) => l.as_raw_fd(),
            ListenSocket::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

impl fmt::Display for Listener {
    /// `http://127.0.0.1:8000`, `http://[::1]:8000` or `unix:/path` for
    /// HTTP; `uwsgi://127.0.0.1:3031` or `uwsgi://unix:/path` for the others.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme();
        match &self.socket {
            ListenSocket::Tcp(l) => match l.local_addr() {
                Ok(addr) => write!(f, "{scheme}://{addr}"),
                Err(_) => write!(f, "{scheme}://?"),
            },
            ListenSocket::Unix(l, _) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
                let path = path.unwrap_or_default();
                match scheme {
                    "http" => write!(f, "unix:{path}"),
                    _ => write!(f, "{scheme}://unix:{path}"),
                }
            }
        }
    }
}

/// Descriptors handed over by systemd socket activation (sd_listen_fds):
/// LISTEN_FDS descriptors from 3, when LISTEN_PID names this process, each
/// with its protocol when its name in LISTEN_FDNAMES is one (systemd's
/// FileDescriptorName=uwsgi; a USR2 upgrade names them so). The variables
/// are removed so that child processes do not take them as theirs.
pub fn systemd_fds() -> Option<Vec<(RawFd, Option<Scheme>)>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let count: RawFd = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    if pid != std::process::id() || count <= 0 {
        return None;
    }
    let mut names = names.split(':');
    Some(
        (3..3 + count)
            .map(|fd| (fd, names.next().and_then(scheme_named)))
            .collect(),
    )
}

/// The environment variable by which a USR2 upgrade names the socket files
/// of the listeners it hands over (`process::upgrade`).
pub const UPGRADE_SOCKET_FILES: &str = "FERRULE_UPGRADE_SOCKET_FILES";

/// The way listeners are opened (`open_all`).
pub struct ListenOptions {
    /// The protocol of systemd's descriptors (`--protocol`).
    pub default_protocol: Protocol,
    pub backlog: u32,
    pub reuse_port: bool,
    /// TCP listeners hand over a connection only once its client has sent
    /// data, or this has passed (see `defer_accept`).
    pub defer: Duration,
    /// The permissions of unix socket files ferrule creates.
    pub socket_mode: u32,
    /// Whether TCP listeners whose scheme says nothing of TLS serve HTTPS
    /// when their protocol is HTTP (gunicorn's rule with --certfile).
    pub tls_by_default: bool,
}

/// Opens every listener: systemd's when socket-activated, else each --bind.
pub fn open_all(binds: &[ListenSpec], options: &ListenOptions) -> Result<Vec<Listener>, String> {
    // A USR2 upgrade also names the socket files of the listeners it hands
    // over (one a line, empty for TCP): the new master removes them on exit.
    let upgraded_files: Vec<String> = std::env::var(UPGRADE_SOCKET_FILES)
        .map(|v| v.split('\n').map(String::from).collect())
        .unwrap_or_default();
    std::env::remove_var(UPGRADE_SOCKET_FILES);
    let activated: Vec<ListenSpec> = systemd_fds()
        .unwrap_or_default()
        .into_iter()
        .map(|(fd, scheme)| ListenSpec {
            protocol: scheme.map_or(options.default_protocol, |(protocol, _)| protocol),
            tls: scheme.map(|(_, tls)| tls),
            address: BindAddress::Fd(fd),
        })
        .collect();
    let binds = if activated.is_empty() {
        binds
    } else {
        &activated[..]
    };
    binds
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let addr = &spec.address;
            let mut listener = Listener::bind(
                addr,
                spec.protocol,
                options.backlog,
                options.reuse_port,
                options.socket_mode,
            )
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            // gunicorn's rule: with a certificate, TCP listeners of HTTP
            // that name no scheme serve HTTPS; a scheme decides for itself.
            listener.tls = spec.tls.unwrap_or(
                options.tls_by_default
                    && spec.protocol == Protocol::Http
                    && matches!(listener.socket, ListenSocket::Tcp(_)),
            );
            if let ListenSocket::Tcp(l) = &listener.socket {
                defer_accept(l.as_raw_fd(), options.defer);
            }
            if let ListenSocket::Unix(_, file @ None) = &mut listener.socket {
                let named = upgraded_files.get(index).filter(|p| !p.is_empty());
                if !activated.is_empty() {
                    *file = named.map(PathBuf::from);
                }
            }
            Ok(listener)
        })
        .collect()
}

/// TCP_DEFER_ACCEPT (tcp(7)): the kernel completes a connection for
/// accept(2) only once the client has sent data, for up to `wait` (nginx's
/// `listen ... deferred`, with its header timeout too). A worker then reads
/// a whole request as soon as it accepts, and connections that send nothing
/// never reach the accept loop, where they would compete with real ones.
/// Where the option is not supported, accepting works as without it.
fn defer_accept(fd: RawFd, wait: Duration) {
    let secs = wait.as_secs_f64().ceil().clamp(1.0, i32::MAX as f64) as libc::c_int;
    // SAFETY: setsockopt on a listening socket we own, with an int value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A socket file left by a process that died is removed; one that a live
/// server still accepts on is an error, not something to steal.
fn remove_stale_socket(path: &PathBuf) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another server", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_forms() {
        assert_eq!(
            "127.0.0.1:80".parse(),
            Ok(BindAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 80
            })
        );
        assert_eq!(
            "[::1]:0".parse(),
            Ok(BindAddress::Tcp {
                host: "::1".into(),
                port: 0
            })
        );
        assert_eq!(
            ":8000".parse(),
            Ok(BindAddress::Tcp {
                host: "0.0.0.0".into(),
                port: 8000
            })
        );
        assert_eq!(
            "localhost:1".parse(),
            Ok(BindAddress::Tcp {
                host: "localhost".into(),
                port: 1
            })
        );
        assert_eq!("unix:/a/b".parse(), Ok(BindAddress::Unix("/a/b".into())));
        assert_eq!(
            "uwsgi://unix:/a/b".parse(),
            Ok(Bind {
                scheme: Some((Protocol::Uwsgi, false)),
                address: BindAddress::Unix("/a/b".into())
            })
        );
        assert_eq!(
            "scgi://127.0.0.1:4000".parse::<Bind>().map(|b| b.scheme),
            Ok(Some((Protocol::Scgi, false)))
        );
        assert_eq!(
            "http://[::1]:80".parse::<Bind>().map(|b| b.scheme),
            Ok(Some((Protocol::Http, false)))
        );
        assert_eq!(
            "https://[::1]:443".parse::<Bind>().map(|b| b.scheme),
            Ok(Some((Protocol::Http, true)))
        );
        assert_eq!("127.0.0.1:80".parse::<Bind>().map(|b| b.scheme), Ok(None));
        assert!("gopher://127.0.0.1:70".parse::<Bind>().is_err());
        assert_eq!("fd://3".parse(), Ok(BindAddress::Fd(3)));
        assert_eq!(
            "localhost".parse(),
            Ok(BindAddress::Tcp {
                host: "localhost".into(),
                port: 8000
            })
        );
        assert_eq!(
            "[::1]".parse(),
            Ok(BindAddress::Tcp {
                host: "::1".into(),
                port: 8000
            })
        );
        for shown in ["127.0.0.1:80", "[::1]:8000", "unix:/a/b", "fd://3"] {
            assert_eq!(shown.parse::<BindAddress>().unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "host:http",
            "host:70000",
            "::1:80",
            "[::1]x",
            "unix:",
            "fd://x",
            "fd://-1",
        ] {
            let err = bad.parse::<BindAddress>().unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
