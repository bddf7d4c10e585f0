//! Static files (`--static /prefix=DIR`), the pure part: which file a
//! request path names, and what a request for a file gets by the rules of
//! HTTP semantics (RFC 9110): conditional requests (§13), ranges (§14),
//! validators (§8.8), content coding (§8.4, §12.5.3). Opening and sending
//! the file is the driver's (`driver::static_files`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::app_head::AppHead;
use crate::proto::http1::response::push_decimal;

/// A URL prefix served from a directory.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticRoute {
    /// Starts with '/', does not end with one (the root is "").
    pub prefix: String,
    pub dir: std::path::PathBuf,
}

/// What a request path is to the static routes.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    /// No route's prefix: the application's.
    NotStatic,
    /// A file to look for: the route, and the path under its directory
    /// (relative; no `.` or `..` segment, NUL or backslash; empty segments,
    /// as in `/static//app.css`, merged away as nginx does).
    File(&'a StaticRoute, Cow<'a, [u8]>),
    /// Under a route but not a file name (the prefix itself, a directory
    /// with a trailing '/'): the application's, since no directory is
    /// listed.
    Directory,
    /// Under a route, and a name that could leave its directory or means
    /// something else on another system: refused with 400.
    Refused(&'static str),
}

/// The route for `path` (percent-decoded), the longest prefix that ends at
/// a segment boundary.
pub fn lookup<'a>(routes: &'a [StaticRoute], path: &'a [u8]) -> Lookup<'a> {
    let Some((route, rest)) = routes
        .iter()
        .filter_map(|route| {
            let rest = path.strip_prefix(route.prefix.as_bytes())?;
            (rest.first() == Some(&b'/')).then_some((route, rest))
        })
        .max_by_key(|(route, _)| route.prefix.len())
    else {
        return Lookup::NotStatic;
    };
    let relative = &rest[1..];
    if relative.is_empty() || relative.ends_with(b"/") {
        return Lookup::Directory;
    }
    if relative.contains(&0) {
        return Lookup::Refused("a NUL byte in a static file path");
    }
    if relative.contains(&b'\\') {
        return Lookup::Refused("a backslash in a static file path");
    }
    // Clients remove dot segments before sending (RFC 3986 §5.2.4); one
    // that arrives, perhaps percent-encoded, is an attempt to leave the
    // directory.
    if relative
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
    {
        return Lookup::Refused("a '.' or '..' segment in a static file path");
    }
    let relative = if relative.starts_with(b"/") || memchr::memmem::find(relative, b"//").is_some()
    {
        let segments: Vec<&[u8]> = relative
            .split(|&b| b == b'/')
            .filter(|s| !s.is_empty())
            .collect();
        Cow::Owned(segments.join(&b'/'))
    } else {
        Cow::Borrowed(relative)
    };
    Lookup::File(route, relative)
}

/// The MIME type for a file name, by its extension; text types say UTF-8.
pub fn content_type(name: &[u8]) -> &'static str {
    let ext = match memchr::memrchr(b'.', name) {
        Some(dot) if !name[dot + 1..].contains(&b'/') => &name[dot + 1..],
        _ => return "application/octet-stream",
    };
    let mut lower = [0u8; 16];
    if ext.len() > lower.len() {
        return "application/octet-stream";
    }
    for (l, c) in lower.iter_mut().zip(ext) {
        *l = c.to_ascii_lowercase();
    }
    match &lower[..ext.len()] {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"webmanifest" => "application/manifest+json",
        b"txt" => "text/plain; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "application/xml",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/vnd.microsoft.icon",
        b"bmp" => "image/bmp",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"eot" => "application/vnd.ms-fontobject",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"tar" => "application/x-tar",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"ogg" => "audio/ogg",
        b"wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// A content coding of a file stored beside it, compressed ahead of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precompressed {
    Brotli,
    Gzip,
}

impl Precompressed {
    /// The sibling's suffix, and the Content-Encoding value.
    pub fn suffix(self) -> &'static str {
        match self {
            Precompressed::Brotli => ".br",
            Precompressed::Gzip => ".gz",
        }
    }

    pub fn coding(self) -> &'static str {
        match self {
            Precompressed::Brotli => "br",
            Precompressed::Gzip => "gzip",
        }
    }
}

/// The precompressed codings the client accepts, best first (br, then
/// gzip): those Accept-Encoding lists with a q-value above 0, `*`
/// covering those not listed (RFC 9110 §12.5.3).
pub fn accepted_codings(accept_encoding: Option<&[u8]>) -> Vec<Precompressed> {
    let Some(value) = accept_encoding else {
        return Vec::new();
    };
    let mut br = None;
    let mut gzip = None;
    let mut any = None;
    for item in value.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let coding = trim(parts.next().unwrap_or_default());
        let q_zero = parts.any(|p| {
            let p = trim(p);
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && trim(&p[2..]).iter().all(|&c| c == b'0' || c == b'.')
        });
        let slot = if coding.eq_ignore_ascii_case(b"br") {
            &mut br
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            &mut gzip
        } else if coding == b"*" {
            &mut any
        } else {
            continue;
        };
        *slot = Some(!q_zero);
    }
    let mut codings = Vec::new();
    if br.or(any) == Some(true) {
        codings.push(Precompressed::Brotli);
    }
    if gzip.or(any) == Some(true) {
        codings.push(Precompressed::Gzip);
    }
    codings
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// What is known of the file to send.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts {
    pub size: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: u64,
    /// Stored precompressed: its coding.
    pub coding: Option<Precompressed>,
}

impl FileFacts {
    /// The entity tag: modification time and size in hex (as nginx makes
    /// them), with the coding, since each coding is its own representation
    /// (RFC 9110 §8.8.3.3).
    pub fn etag(&self) -> String {
        match self.coding {
            Some(coding) => format!("\"{:x}-{:x}-{}\"", self.mtime, self.size, coding.coding()),
            None => format!("\"{:x}-{:x}\"", self.mtime, self.size),
        }
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(self.mtime))
    }
}

/// The request fields that decide the answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Preconditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
}

/// What a GET or HEAD of the file gets.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// 200, the whole file.
    Whole,
    /// 206, bytes `start..end` of it.
    Part { start: u64, end: u64 },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
    /// 416 Range Not Satisfiable.
    RangeNotSatisfiable,
}

/// Evaluates the preconditions in the order of RFC 9110 §13.2.2, then the
/// range (§14.2). Several ranges get the whole file (200), which §14.2
/// allows: a multipart body costs more than it saves for the files a web
/// application ships.
pub fn answer(file: &FileFacts, etag: &str, pre: &Preconditions<'_>) -> Answer {
    let etag = etag.as_bytes();
    if let Some(list) = pre.if_match {
        if !etag_listed(list, etag, true) {
            return Answer::PreconditionFailed;
        }
    } else if let Some(date) = pre.if_unmodified_since.and_then(parse_date) {
        if file.mtime > date {
            return Answer::PreconditionFailed;
        }
    }
    if let Some(list) = pre.if_none_match {
        if etag_listed(list, etag, false) {
            return Answer::NotModified;
        }
    } else if let Some(date) = pre.if_modified_since.and_then(parse_date) {
        if file.mtime <= date {
            return Answer::NotModified;
        }
    }
    let Some(range) = pre.range else {
        return Answer::Whole;
    };
    // If-Range: the range only if the representation is still the one the
    // client has part of (a strong tag, or exactly its date; §13.1.5).
    if let Some(validator) = pre.if_range.map(trim) {
        let current = if validator.starts_with(b"\"") || validator.starts_with(b"W/") {
            validator == etag
        } else {
            parse_date(validator) == Some(file.mtime)
        };
        if !current {
            return Answer::Whole;
        }
    }
    match parse_range(range, file.size) {
        RangeSpec::Ignore => Answer::Whole,
        RangeSpec::Unsatisfiable => Answer::RangeNotSatisfiable,
        RangeSpec::One(start, end) => Answer::Part { start, end },
    }
}

/// Whether `etag` is in an If-Match / If-None-Match list, or the list is
/// `*`: strong comparison for If-Match, weak for If-None-Match (§8.8.3.2).
fn etag_listed(list: &[u8], etag: &[u8], strong: bool) -> bool {
    let list = trim(list);
    if list == b"*" {
        return true;
    }
    list.split(|&b| b == b',').any(|item| {
        let item = trim(item);
        match item.strip_prefix(b"W/") {
            Some(weak) => !strong && weak == etag,
            None => item == etag,
        }
    })
}

fn parse_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(value)).ok()?;
    let when: SystemTime = httpdate::parse_http_date(text).ok()?;
    when.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[derive(Debug, PartialEq)]
enum RangeSpec {
    /// Not a single byte range this server acts on (another unit, bad
    /// syntax, several ranges): the whole file, as §14.2 allows.
    Ignore,
    /// No byte of the range is in the file.
    Unsatisfiable,
    /// Bytes `start..end`.
    One(u64, u64),
}

/// A Range field for a file of `size` bytes (§14.1.2: first-last,
/// first-, -suffix).
fn parse_range(value: &[u8], size: u64) -> RangeSpec {
    let value = trim(value);
    let Some(set) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .map(|_| trim(&value[6..]))
    else {
        return RangeSpec::Ignore;
    };
    if set.contains(&b',') {
        return RangeSpec::Ignore;
    }
    let Some(dash) = memchr::memchr(b'-', set) else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (trim(&set[..dash]), trim(&set[dash + 1..]));
    let number = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if first.is_empty() {
        // The last N bytes.
        return match number(last) {
            None => RangeSpec::Ignore,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::One(size - n.min(size), size),
        };
    }
    let Some(start) = number(first) else {
        return RangeSpec::Ignore;
    };
    let end = if last.is_empty() {
        size
    } else {
        match number(last) {
            Some(last) if last >= start => last.saturating_add(1).min(size),
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::One(start, end)
}

/// The head of the response for `answer`: status line and fields, with
/// the body's length (none for 304, 412 and 416 bodies, which the framer
/// leaves empty or sizes). `vary` when the file has precompressed
/// siblings; `cache_control` from `--static-cache-control`.
pub fn response_head(
    file: &FileFacts,
    etag: &str,
    answer: &Answer,
    content_type: &str,
    vary: bool,
    cache_control: Option<&str>,
) -> AppHead {
    let mut bytes = Vec::with_capacity(256);
    let (status, line): (u16, &[u8]) = match answer {
        Answer::Whole => (200, b"200 OK"),
        Answer::Part { .. } => (206, b"206 Partial Content"),
        Answer::NotModified => (304, b"304 Not Modified"),
        Answer::PreconditionFailed => (412, b"412 Precondition Failed"),
        Answer::RangeNotSatisfiable => (416, b"416 Range Not Satisfiable"),
    };
    bytes.extend_from_slice(line);
    let status_len = bytes.len();
    let mut field = |name: &str, value: &[u8]| {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    };
    let length = match answer {
        Answer::Whole => Some(file.size),
        Answer::Part { start, end } => Some(end - start),
        Answer::PreconditionFailed | Answer::RangeNotSatisfiable => Some(0),
        Answer::NotModified => None,
    };
    // A 304 carries the fields a 200 would have had that describe the
    // representation (§15.4.5); a 412 or 416 none of them but its range.
    if matches!(
        answer,
        Answer::Whole | Answer::Part { .. } | Answer::NotModified
    ) {
        if !matches!(answer, Answer::NotModified) {
            field("Content-Type", content_type.as_bytes());
            if let Some(coding) = file.coding {
                field("Content-Encoding", coding.coding().as_bytes());
            }
        }
        field("ETag", etag.as_bytes());
        field("Last-Modified", file.last_modified().as_bytes());
        if let Some(value) = cache_control {
            field("Cache-Control", value.as_bytes());
        }
        if vary {
            field("Vary", b"Accept-Encoding");
        }
        if !matches!(answer, Answer::NotModified) {
            field("Accept-Ranges", b"bytes");
        }
    }
    let mut range = Vec::new();
    match answer {
        Answer::Part { start, end } => {
            range.extend_from_slice(b"bytes ");
            push_decimal(&mut range, *start);
            range.push(b'-');
            push_decimal(&mut range, end - 1);
            range.push(b'/');
            push_decimal(&mut range, file.size);
        }
        Answer::RangeNotSatisfiable => {
            range.extend_from_slice(b"bytes */");
            push_decimal(&mut range, file.size);
        }
        _ => {}
    }
    if !range.is_empty() {
        field("Content-Range", &range);
    }
    if let Some(n) = length {
        let mut digits = Vec::new();
        push_decimal(&mut digits, n);
        field("Content-Length", &digits);
    }
    AppHead {
        status,
        bytes,
        status_len,
        declared_length: length,
        has_date: false,
        has_server: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<StaticRoute> {
        vec![
            StaticRoute {
                prefix: "/static".into(),
                dir: "/srv/static".into(),
            },
            StaticRoute {
                prefix: "/static/admin".into(),
                dir: "/srv/admin".into(),
            },
        ]
    }

    #[test]
    fn paths_find_their_route_or_are_refused() {
        let routes = routes();
        let file = |path: &'static [u8]| match lookup(&routes, path) {
            Lookup::File(route, rel) => {
                Some((route.dir.to_str().unwrap().to_string(), rel.to_vec()))
            }
            _ => None,
        };
        assert_eq!(
            file(b"/static/a.css"),
            Some(("/srv/static".into(), b"a.css".to_vec()))
        );
        assert_eq!(
            file(b"/static/admin/b.js"),
            Some(("/srv/admin".into(), b"b.js".to_vec()))
        );
        assert_eq!(
            file(b"/static/adminx/b.js"),
            Some(("/srv/static".into(), b"adminx/b.js".to_vec()))
        );
        assert_eq!(
            file(b"/static//css//a.css"),
            Some(("/srv/static".into(), b"css/a.css".to_vec()))
        );
        assert_eq!(lookup(&routes, b"/staticx/a.css"), Lookup::NotStatic);
        assert_eq!(lookup(&routes, b"/static"), Lookup::NotStatic);
        assert_eq!(lookup(&routes, b"/other"), Lookup::NotStatic);
        assert_eq!(lookup(&routes, b"/static/"), Lookup::Directory);
        assert_eq!(lookup(&routes, b"/static/css/"), Lookup::Directory);
        for bad in [
            &b"/static/../etc/passwd"[..],
            b"/static/a/../../x",
            b"/static/./a.css",
            b"/static/..",
            b"/static/a\\..\\b",
            b"/static/a\0.css",
        ] {
            assert!(
                matches!(lookup(&routes, bad), Lookup::Refused(_)),
                "{bad:?}"
            );
        }
        let root = [StaticRoute {
            prefix: String::new(),
            dir: "/srv".into(),
        }];
        assert!(matches!(lookup(&root, b"/x.txt"), Lookup::File(_, rel) if &rel[..] == b"x.txt"));
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(content_type(b"a/b.CSS"), "text/css; charset=utf-8");
        assert_eq!(
            content_type(b"app.min.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(b"x.woff2"), "font/woff2");
        assert_eq!(content_type(b"README"), "application/octet-stream");
        assert_eq!(content_type(b"dir.d/README"), "application/octet-stream");
        assert_eq!(
            content_type(b"x.averyveryverylongextension"),
            "application/octet-stream"
        );
    }

    #[test]
    fn codings_by_accept_encoding() {
        use Precompressed::*;
        assert_eq!(accepted_codings(None), vec![]);
        assert_eq!(
            accepted_codings(Some(b"gzip, deflate, br")),
            vec![Brotli, Gzip]
        );
        assert_eq!(accepted_codings(Some(b"gzip")), vec![Gzip]);
        assert_eq!(accepted_codings(Some(b"br;q=0, gzip;q=0.5")), vec![Gzip]);
        assert_eq!(accepted_codings(Some(b"*")), vec![Brotli, Gzip]);
        assert_eq!(accepted_codings(Some(b"*, gzip;q=0")), vec![Brotli]);
        assert_eq!(accepted_codings(Some(b"identity")), vec![]);
        assert_eq!(accepted_codings(Some(b"br;q=0.000")), vec![]);
    }

    const FILE: FileFacts = FileFacts {
        size: 1000,
        mtime: 1_700_000_000,
        coding: None,
    };

    fn answer_for(pre: Preconditions<'_>) -> Answer {
        answer(&FILE, &FILE.etag(), &pre)
    }

    #[test]
    fn conditional_requests() {
        let etag = FILE.etag();
        assert_eq!(etag, "\"6553f100-3e8\"");
        let date = FILE.last_modified();
        let earlier = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(FILE.mtime - 1));
        let inm = |v: &'static str| Preconditions {
            if_none_match: Some(v.as_bytes()),
            ..Default::default()
        };
        assert_eq!(answer_for(inm("\"6553f100-3e8\"")), Answer::NotModified);
        assert_eq!(answer_for(inm("W/\"6553f100-3e8\"")), Answer::NotModified);
        assert_eq!(
            answer_for(inm("\"x\", \"6553f100-3e8\"")),
            Answer::NotModified
        );
        assert_eq!(answer_for(inm("*")), Answer::NotModified);
        assert_eq!(answer_for(inm("\"other\"")), Answer::Whole);
        let ims = |v: &str| {
            answer(
                &FILE,
                &etag,
                &Preconditions {
                    if_modified_since: Some(v.as_bytes()),
                    ..Default::default()
                },
            )
        };
        assert_eq!(ims(&date), Answer::NotModified);
        assert_eq!(ims(&earlier), Answer::Whole);
        assert_eq!(ims("not a date"), Answer::Whole);
        // If-None-Match wins over If-Modified-Since (§13.2.2).
        let both = Preconditions {
            if_none_match: Some(b"\"other\""),
            if_modified_since: Some(date.as_bytes()),
            ..Default::default()
        };
        assert_eq!(answer(&FILE, &etag, &both), Answer::Whole);
        let im = |v: &'static str| Preconditions {
            if_match: Some(v.as_bytes()),
            ..Default::default()
        };
        assert_eq!(answer_for(im("\"6553f100-3e8\"")), Answer::Whole);
        assert_eq!(
            answer_for(im("W/\"6553f100-3e8\"")),
            Answer::PreconditionFailed
        );
        assert_eq!(answer_for(im("\"other\"")), Answer::PreconditionFailed);
        let ius = Preconditions {
            if_unmodified_since: Some(earlier.as_bytes()),
            ..Default::default()
        };
        assert_eq!(answer(&FILE, &etag, &ius), Answer::PreconditionFailed);
    }

    #[test]
    fn ranges() {
        let range = |v: &'static str| {
            answer_for(Preconditions {
                range: Some(v.as_bytes()),
                ..Default::default()
            })
        };
        assert_eq!(range("bytes=0-99"), Answer::Part { start: 0, end: 100 });
        assert_eq!(
            range("bytes=900-"),
            Answer::Part {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            range("bytes=-100"),
            Answer::Part {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            range("bytes=-5000"),
            Answer::Part {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            range("bytes=990-5000"),
            Answer::Part {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(range("bytes=1000-"), Answer::RangeNotSatisfiable);
        assert_eq!(range("bytes=-0"), Answer::RangeNotSatisfiable);
        assert_eq!(range("bytes=0-1,5-6"), Answer::Whole);
        assert_eq!(range("bytes=5-1"), Answer::Whole);
        assert_eq!(range("items=0-1"), Answer::Whole);
        assert_eq!(range("bytes=a-b"), Answer::Whole);
        assert_eq!(range("bytes=99999999999999999999-"), Answer::Whole);
        let if_range = |v: String| {
            answer(
                &FILE,
                &FILE.etag(),
                &Preconditions {
                    range: Some(b"bytes=0-9"),
                    if_range: Some(Box::leak(v.into_boxed_str()).as_bytes()),
                    ..Default::default()
                },
            )
        };
        assert_eq!(if_range(FILE.etag()), Answer::Part { start: 0, end: 10 });
        assert_eq!(
            if_range(FILE.last_modified()),
            Answer::Part { start: 0, end: 10 }
        );
        assert_eq!(if_range("\"old\"".into()), Answer::Whole);
        assert_eq!(if_range(format!("W/{}", FILE.etag())), Answer::Whole);
    }

    #[test]
    fn heads() {
        let head = response_head(
            &FILE,
            &FILE.etag(),
            &Answer::Part { start: 10, end: 20 },
            "text/css",
            true,
            Some("max-age=60"),
        );
        let text = String::from_utf8(head.bytes.clone()).unwrap();
        assert_eq!(head.status, 206);
        assert!(text.starts_with("206 Partial Content"));
        assert!(text.contains("Content-Range: bytes 10-19/1000\r\n"));
        assert!(text.contains("Content-Length: 10\r\n"));
        assert!(text.contains("Vary: Accept-Encoding\r\n"));
        assert!(text.contains("Cache-Control: max-age=60\r\n"));
        let head = response_head(
            &FILE,
            &FILE.etag(),
            &Answer::RangeNotSatisfiable,
            "text/css",
            false,
            None,
        );
        let text = String::from_utf8(head.bytes).unwrap();
        assert!(text.contains("Content-Range: bytes */1000\r\n"));
        assert!(!text.contains("ETag"));
        let head = response_head(
            &FILE,
            &FILE.etag(),
            &Answer::NotModified,
            "text/css",
            false,
            None,
        );
        let text = String::from_utf8(head.bytes).unwrap();
        assert!(text.contains("ETag: \"6553f100-3e8\"\r\n") && !text.contains("Content-Length"));
    }
}
