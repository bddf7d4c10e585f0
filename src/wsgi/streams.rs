//! `wsgi.errors` and `wsgi.file_wrapper` (PEP 3333, "Input and Error
//! Streams" and "Optional Platform-Specific File Handling").

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::log;

/// `wsgi.errors`: a text stream whose writes reach the error log.
#[pyclass(frozen, module = "ferrule._ferrule")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &Bound<'_, PyString>) -> PyResult<usize> {
        let text = text.to_cow()?;
        log::write_raw(text.as_bytes());
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.cast::<PyString>()?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}

/// `wsgi.file_wrapper(filelike, blksize=8192)`. Returned as the response
/// body, a wrapper around a regular file is sent with sendfile(2) from the
/// file's current position; any other file-like is read `blksize` at a time.
#[pyclass(frozen, module = "ferrule._ferrule")]
pub struct FileWrapper {
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok((block.len()? > 0).then_some(block))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}
