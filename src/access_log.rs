//! The access log's line: gunicorn's `access_log_format`, with its atoms
//! (`%(h)s`, `%({x-real-ip}i)s`, ...), parsed once at start and rendered per
//! request. Pure: a record in, a line out. Every value a client or an
//! application controls is escaped (quotes, backslashes, control bytes), so
//! no header can forge a field or a line.

use std::fmt::Write as _;
use std::time::Duration;

/// gunicorn's default format, which is also the combined log format.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// The atoms, as `--access-logformat` documents them.
pub const ATOMS: &str = "h (remote address), l ('-'), u (user name from Basic authorization), \
     t (date and time, in brackets), r (request line), m (method), U (URL path), q (query string), \
     H (protocol), s (status), B (response length), b (response length or '-'), f (referer), \
     a (user agent), T (request time, seconds), M (milliseconds), D (microseconds), \
     L (decimal seconds), p (<pid>), {header}i (request header), {header}o (response header), \
     {variable}e (WSGI environ variable)";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Remote,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    Length,
    LengthOrDash,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    /// A request header: its lower-case name, and its CGI name
    /// (`HTTP_X_REAL_IP`) for requests that came through a gateway.
    RequestHeader(Vec<u8>, Vec<u8>),
    /// A response header, by its lower-case name.
    ResponseHeader(Vec<u8>),
    /// A WSGI environ variable, by its index in `environ_names`.
    Environ(usize),
}

/// A parsed `--access-logformat`.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
    /// `json`: one JSON object a line, with fixed keys (`render_json`).
    json: bool,
    /// The environ variables `{name}e` atoms read, in order.
    environ_names: Vec<String>,
}

/// Looks up a request header by its lower-case name and its CGI name.
pub type HeaderLookup<'a> = &'a dyn Fn(&[u8], &[u8]) -> Option<&'a [u8]>;

/// What the log line is made of, for one request.
pub struct AccessRecord<'a> {
    pub remote: &'a str,
    /// Empty for a request refused before its head was read whole.
    pub method: &'a [u8],
    /// The request target as sent (path and query).
    pub target: &'a [u8],
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub elapsed: Duration,
    /// A request header by lower-case name and CGI name.
    pub request_header: HeaderLookup<'a>,
    /// The response's header fields as sent (`Name: value\r\n` lines).
    pub response_fields: &'a [u8],
    /// The values of `environ_names()`, in order, when the format has any.
    pub environ: &'a [Option<String>],
    /// `[27/Nov/2026:18:00:00 +0000]`, or empty when the format has no `t`.
    pub time: &'a str,
}

impl AccessFormat {
    /// Parses a format; the error names the atom it does not know and
    /// lists the ones it does.
    pub fn parse(format: &str) -> Result<AccessFormat, String> {
        if format == "json" {
            return Ok(AccessFormat {
                pieces: Vec::new(),
                json: true,
                environ_names: Vec::new(),
            });
        }
        let mut pieces = Vec::new();
        let mut environ_names = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(open) = rest.strip_prefix("%(") else {
                return Err(format!(
                    "'{format}': a '%' must start an atom such as %(h)s (or be written %%)"
                ));
            };
            let Some(close) = open.find(")s") else {
                return Err(format!("'{format}': an atom is not closed with ')s'"));
            };
            let name = &open[..close];
            rest = &open[close + 2..];
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(atom(name, &mut environ_names).ok_or_else(|| {
                format!("'{format}': unknown atom %({name})s; the atoms are {ATOMS}")
            })?);
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(AccessFormat {
            pieces,
            json: false,
            environ_names,
        })
    }

    /// The environ variables the format reads (`{name}e`); empty for most.
    pub fn environ_names(&self) -> &[String] {
        &self.environ_names
    }

    /// Whether the line has a `t` atom (the clock is read only then).
    pub fn wants_time(&self) -> bool {
        self.json || self.pieces.contains(&Piece::Time)
    }

    /// Whether lines are JSON, whose time is ISO 8601 (`AccessRecord::time`).
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Appends the record's line (with its newline) to `out`.
    pub fn render(&self, r: &AccessRecord<'_>, out: &mut String) {
        if self.json {
            return render_json(r, out);
        }
        let query_at = r.target.iter().position(|&b| b == b'?');
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Remote => out.push_str(if r.remote.is_empty() { "-" } else { r.remote }),
                Piece::Dash => out.push('-'),
                Piece::User => match basic_user(r) {
                    Some(user) => escape_into(&user, out),
                    None => out.push('-'),
                },
                Piece::Time => out.push_str(r.time),
                // A request refused before its head was read has none.
                Piece::RequestLine if r.method.is_empty() => out.push('-'),
                Piece::Method | Piece::Path if r.method.is_empty() => out.push('-'),
                Piece::RequestLine => {
                    escape_into(r.method, out);
                    out.push(' ');
                    escape_into(r.target, out);
                    out.push(' ');
                    out.push_str(r.protocol);
                }
                Piece::Method => escape_into(r.method, out),
                Piece::Path => escape_into(&r.target[..query_at.unwrap_or(r.target.len())], out),
                Piece::Query => {
                    if let Some(at) = query_at {
                        escape_into(&r.target[at + 1..], out);
                    }
                }
                Piece::Protocol => out.push_str(r.protocol),
                Piece::Status => {
                    let _ = write!(out, "{}", r.status);
                }
                Piece::Length => {
                    let _ = write!(out, "{}", r.bytes);
                }
                Piece::LengthOrDash => match r.bytes {
                    0 => out.push('-'),
                    n => {
                        let _ = write!(out, "{n}");
                    }
                },
                Piece::Referer => {
                    header_or_dash((r.request_header)(b"referer", b"HTTP_REFERER"), out)
                }
                Piece::UserAgent => {
                    header_or_dash((r.request_header)(b"user-agent", b"HTTP_USER_AGENT"), out)
                }
                Piece::Seconds => {
                    let _ = write!(out, "{}", r.elapsed.as_secs());
                }
                Piece::Millis => {
                    let _ = write!(out, "{}", r.elapsed.as_millis());
                }
                Piece::Micros => {
                    let _ = write!(out, "{}", r.elapsed.as_micros());
                }
                Piece::DecimalSeconds => {
                    let _ = write!(
                        out,
                        "{}.{:06}",
                        r.elapsed.as_secs(),
                        r.elapsed.subsec_micros()
                    );
                }
                Piece::Pid => {
                    let _ = write!(out, "<{}>", std::process::id());
                }
                Piece::RequestHeader(name, cgi) => {
                    header_or_dash((r.request_header)(name, cgi), out)
                }
                Piece::ResponseHeader(name) => {
                    header_or_dash(response_field(r.response_fields, name), out)
                }
                Piece::Environ(i) => match r.environ.get(*i).and_then(Option::as_deref) {
                    Some(v) => escape_into(v.as_bytes(), out),
                    None => out.push('-'),
                },
            }
        }
        out.push('\n');
    }
}

/// `--access-logformat json`: one object a line, keys fixed, strings JSON
/// escaped (bytes above 0x7e as the latin-1 code points they are in the
/// environ), a missing header as null.
fn render_json(r: &AccessRecord<'_>, out: &mut String) {
    let query_at = r.target.iter().position(|&b| b == b'?');
    let path = &r.target[..query_at.unwrap_or(r.target.len())];
    let query = query_at.map_or(&b""[..], |at| &r.target[at + 1..]);
    let string = |out: &mut String, key: &str, value: Option<&[u8]>| {
        let _ = write!(out, "\"{key}\":");
        match value {
            Some(v) => {
                out.push('"');
                escape_as(v, out, Escape::Json);
                out.push('"');
            }
            None => out.push_str("null"),
        }
        out.push(',');
    };
    out.push('{');
    string(out, "time", Some(r.time.as_bytes()));
    string(
        out,
        "remote",
        (!r.remote.is_empty()).then_some(r.remote.as_bytes()),
    );
    let head = !r.method.is_empty();
    string(out, "method", head.then_some(r.method));
    string(out, "path", head.then_some(path));
    string(out, "query", head.then_some(query));
    string(out, "protocol", head.then_some(r.protocol.as_bytes()));
    let _ = write!(
        out,
        "\"status\":{},\"bytes\":{},\"duration_us\":{},",
        r.status,
        r.bytes,
        r.elapsed.as_micros()
    );
    string(
        out,
        "referer",
        (r.request_header)(b"referer", b"HTTP_REFERER"),
    );
    string(
        out,
        "user_agent",
        (r.request_header)(b"user-agent", b"HTTP_USER_AGENT"),
    );
    let _ = write!(out, "\"pid\":{}}}", std::process::id());
    out.push('\n');
}

fn atom(name: &str, environ_names: &mut Vec<String>) -> Option<Piece> {
    if let Some(inner) = name.strip_prefix('{') {
        let (key, kind) = inner.rsplit_once('}')?;
        if key.is_empty() {
            return None;
        }
        return match kind {
            "i" => {
                let lower = key.to_ascii_lowercase().into_bytes();
                let cgi = format!("HTTP_{}", key.to_ascii_uppercase().replace('-', "_"));
                Some(Piece::RequestHeader(lower, cgi.into_bytes()))
            }
            "o" => Some(Piece::ResponseHeader(key.to_ascii_lowercase().into_bytes())),
            "e" => {
                environ_names.push(key.to_string());
                Some(Piece::Environ(environ_names.len() - 1))
            }
            _ => None,
        };
    }
    Some(match name {
        "h" => Piece::Remote,
        "l" => Piece::Dash,
        "u" => Piece::User,
        "t" => Piece::Time,
        "r" => Piece::RequestLine,
        "m" => Piece::Method,
        "U" => Piece::Path,
        "q" => Piece::Query,
        "H" => Piece::Protocol,
        "s" => Piece::Status,
        "B" => Piece::Length,
        "b" => Piece::LengthOrDash,
        "f" => Piece::Referer,
        "a" => Piece::UserAgent,
        "T" => Piece::Seconds,
        "M" => Piece::Millis,
        "D" => Piece::Micros,
        "L" => Piece::DecimalSeconds,
        "p" => Piece::Pid,
        _ => return None,
    })
}

fn header_or_dash(value: Option<&[u8]>, out: &mut String) {
    match value {
        Some(v) => escape_into(v, out),
        None => out.push('-'),
    }
}

/// The value of the response field `name` (lower-case) in `fields`
/// (`Name: value\r\n` lines, as the response head was sent).
fn response_field<'a>(fields: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    fields.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// The user name of a Basic Authorization header (RFC 7617), as gunicorn
/// logs it.
fn basic_user(r: &AccessRecord<'_>) -> Option<Vec<u8>> {
    let value = (r.request_header)(b"authorization", b"HTTP_AUTHORIZATION")?;
    let value = value.trim_ascii();
    let (scheme, credentials) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64_decode(credentials.trim_ascii())?;
    let end = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[..end].to_vec())
}

/// Standard base64 (RFC 4648 §4), padding optional; None if malformed.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let text = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Appends `bytes` with quotes, backslashes and non-printable bytes
/// escaped, so that a client cannot forge fields or lines.
pub fn escape_into(bytes: &[u8], out: &mut String) {
    escape_as(bytes, out, Escape::Log);
}

/// How a byte that is not printable ASCII is written.
#[derive(Clone, Copy)]
enum Escape {
    /// `\xNN`, as gunicorn's and nginx's logs write it.
    Log,
    /// `\u00NN`, a JSON string's escape (RFC 8259 §7) of the byte's latin-1
    /// code point, as the environ decodes it.
    Json,
}

fn escape_as(bytes: &[u8], out: &mut String, style: Escape) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = match style {
                    Escape::Log => write!(out, "\\x{b:02x}"),
                    Escape::Json => write!(out, "\\u{b:04x}"),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: &str, headers: &'static [(&'static str, &'static str)]) -> String {
        let f = AccessFormat::parse(format).unwrap();
        let lookup = move |name: &[u8], _cgi: &[u8]| {
            headers
                .iter()
                .find(|(n, _)| n.as_bytes() == name)
                .map(|(_, v)| v.as_bytes())
        };
        let environ = vec![Some("/app".to_string()), None];
        let record = AccessRecord {
            remote: "10.0.0.1",
            method: b"GET",
            target: b"/a/b?x=1&y=\"2\"",
            protocol: "HTTP/1.1",
            status: 201,
            bytes: 0,
            elapsed: Duration::from_micros(1_234_567),
            request_header: &lookup,
            response_fields: b"Content-Type: text/plain\r\nX-Id: 7\r\n",
            environ: &environ,
            time: "[27/Nov/2026:18:00:00 +0000]",
        };
        let mut out = String::new();
        f.render(&record, &mut out);
        out
    }

    #[test]
    fn default_is_the_combined_format() {
        let line = render(
            DEFAULT_FORMAT,
            &[("user-agent", "curl/8"), ("referer", "http://r/")],
        );
        assert_eq!(
            line,
            "10.0.0.1 - - [27/Nov/2026:18:00:00 +0000] \"GET /a/b?x=1&y=\\\"2\\\" HTTP/1.1\" 201 - \"http://r/\" \"curl/8\"\n"
        );
    }

    #[test]
    fn every_atom() {
        let line = render(
            "%(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(T)s %(M)s %(D)s %(L)s %({x-real-ip}i)s %({X-ID}o)s %({content-type}o)s %({missing}o)s %({SCRIPT_NAME}e)s %({NOPE}e)s 100%%",
            &[("x-real-ip", "1.2.3.4")],
        );
        assert_eq!(
            line,
            "GET /a/b x=1&y=\\\"2\\\" HTTP/1.1 201 0 1 1234 1234567 1.234567 1.2.3.4 7 text/plain - /app - 100%\n"
        );
        assert!(render("%(p)s", &[]).starts_with('<'));
    }

    #[test]
    fn basic_user_and_forged_fields() {
        // "alice:secret"
        let line = render("%(u)s", &[("authorization", "Basic YWxpY2U6c2VjcmV0")]);
        assert_eq!(line, "alice\n");
        assert_eq!(render("%(u)s", &[("authorization", "Bearer x")]), "-\n");
        assert_eq!(render("%(u)s", &[("authorization", "Basic !!")]), "-\n");
        let line = render("%(a)s", &[("user-agent", "x\" 200 0 \"\n1.1.1.1 - -")]);
        assert_eq!(line, "x\\\" 200 0 \\\"\\x0a1.1.1.1 - -\n");
    }

    #[test]
    fn json_lines() {
        let line = render("json", &[("user-agent", "ua \"x\"\u{e9}")]);
        assert!(line.starts_with("{\"time\":\"[27/Nov/2026:18:00:00 +0000]\",\"remote\":\"10.0.0.1\",\"method\":\"GET\",\"path\":\"/a/b\",\"query\":\"x=1&y=\\\"2\\\"\",\"protocol\":\"HTTP/1.1\",\"status\":201,\"bytes\":0,\"duration_us\":1234567,\"referer\":null,\"user_agent\":\"ua \\\"x\\\"\\u00c3\\u00a9\",\"pid\":"), "{line}");
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn bad_formats_are_named() {
        let err = AccessFormat::parse("%(h)s %(zz)s").unwrap_err();
        assert!(
            err.contains("unknown atom %(zz)s") && err.contains("{header}i"),
            "{err}"
        );
        assert!(AccessFormat::parse("%(h)s %d").unwrap_err().contains("%%"));
        assert!(AccessFormat::parse("%(h").unwrap_err().contains(")s"));
        assert!(AccessFormat::parse("%({}i)s").is_err());
        assert_eq!(
            AccessFormat::parse("%({SCRIPT_NAME}e)s %({X}e)s")
                .unwrap()
                .environ_names(),
            ["SCRIPT_NAME", "X"]
        );
    }
}
