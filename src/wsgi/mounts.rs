//! Several applications under URL prefixes (`--mount`, uWSGI's mount,
//! mod_wsgi's several WSGIScriptAlias). The dispatcher is itself a WSGI
//! application, so every front end, the CGI mode and the hooks see one
//! callable; a server with no mounts calls the application directly and
//! pays nothing.
//!
//! PEP 3333 ("URL Reconstruction"): SCRIPT_NAME is the part of the path
//! that leads to the application, PATH_INFO the rest. A mount moves its
//! prefix from the front of PATH_INFO to the end of SCRIPT_NAME, the way
//! `wsgiref.util.shift_path_info` moves a segment, and only at a segment
//! boundary: `/app1` and `/app1/x` are the mount `/app1` (PATH_INFO "" and
//! "/x"), `/app10` is not.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

/// A WSGI application that hands each request to the application mounted
/// at the longest prefix of its PATH_INFO, else to the root application.
#[pyclass(frozen, module = "ferrule._ferrule")]
pub struct Mounts {
    /// Longest prefix first, so the first match is the longest. A prefix
    /// is as the environ holds paths: its UTF-8 bytes read as latin-1.
    mounts: Vec<(String, Py<PyAny>)>,
    /// Serves every path no mount takes; without one those are 404.
    root: Option<Py<PyAny>>,
}

impl Mounts {
    /// `mounts` are (prefix, application): prefixes start with '/', do not
    /// end with one, and differ.
    pub fn new(mounts: Vec<(String, Py<PyAny>)>, root: Option<Py<PyAny>>) -> Mounts {
        Mounts {
            mounts: by_longest_prefix(mounts),
            root,
        }
    }
}

/// Prefixes as the environ holds paths (their UTF-8 bytes read as
/// latin-1), longest first.
fn by_longest_prefix<T>(mounts: Vec<(String, T)>) -> Vec<(String, T)> {
    let mut mounts: Vec<(String, T)> = mounts
        .into_iter()
        .map(|(prefix, app)| (prefix.bytes().map(char::from).collect(), app))
        .collect();
    mounts.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    mounts
}

/// The mount for `path` (the first, so the longest, whose prefix ends at a
/// segment boundary of it), with what remains of the path.
fn select<'a, 'p, T>(
    mounts: &'a [(String, T)],
    path: &'p str,
) -> Option<(&'a str, &'a T, &'p str)> {
    mounts.iter().find_map(|(prefix, app)| {
        let rest = path.strip_prefix(prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some((prefix.as_str(), app, rest))
    })
}

#[pymethods]
impl Mounts {
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        environ: &Bound<'py, PyDict>,
        start_response: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let path = match environ.get_item(intern!(py, "PATH_INFO"))? {
            Some(path) => path.cast_into::<PyString>()?,
            None => PyString::new(py, ""),
        };
        let path = path.to_cow()?;
        if let Some((prefix, app, rest)) = select(&self.mounts, &path) {
            let script_name = match environ.get_item(intern!(py, "SCRIPT_NAME"))? {
                Some(script) => format!("{}{prefix}", script.cast_into::<PyString>()?.to_cow()?),
                None => prefix.to_string(),
            };
            environ.set_item(intern!(py, "SCRIPT_NAME"), script_name)?;
            environ.set_item(intern!(py, "PATH_INFO"), rest)?;
            return app.bind(py).call1((environ, start_response));
        }
        match &self.root {
            Some(app) => app.bind(py).call1((environ, start_response)),
            None => not_found(py, start_response),
        }
    }
}

/// The answer for a path no application is mounted at.
fn not_found<'py>(
    py: Python<'py>,
    start_response: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    const BODY: &[u8] = b"Not Found\n";
    let headers = vec![
        ("Content-Type", "text/plain; charset=utf-8".to_string()),
        ("Content-Length", BODY.len().to_string()),
    ];
    start_response.call1(("404 Not Found", headers))?;
    Ok(PyList::new(py, [PyBytes::new(py, BODY)])?.into_any())
}

#[cfg(test)]
mod tests {
    use super::{by_longest_prefix, select};

    #[test]
    fn the_longest_prefix_at_a_segment_boundary_wins() {
        let mounts = by_longest_prefix(vec![
            ("/app".to_string(), ()),
            ("/app/admin".to_string(), ()),
            ("/caf\u{e9}".to_string(), ()),
        ]);
        let pick = |path| select(&mounts, path).map(|(prefix, _, rest)| (prefix, rest));
        assert_eq!(pick("/app"), Some(("/app", "")));
        assert_eq!(pick("/app/"), Some(("/app", "/")));
        assert_eq!(pick("/app/x"), Some(("/app", "/x")));
        assert_eq!(pick("/app/admin/users"), Some(("/app/admin", "/users")));
        assert_eq!(pick("/app/administrator"), Some(("/app", "/administrator")));
        assert_eq!(pick("/app10"), None);
        assert_eq!(pick("/"), None);
        assert_eq!(pick(""), None);
        // PATH_INFO holds the request's bytes as latin-1 (PEP 3333).
        assert_eq!(
            pick("/caf\u{c3}\u{a9}/menu"),
            Some(("/caf\u{c3}\u{a9}", "/menu"))
        );
        assert_eq!(pick("/caf\u{e9}/menu"), None);
    }
}
