//! Where a request body larger than `--post-buffering` waits for the
//! application: an unnamed temporary file (O_TMPFILE, in `$TMPDIR` or
//! /tmp), written as the body arrives and read back by `wsgi.input`, as
//! uWSGI's post-buffering and nginx's client body buffering do. The file has
//! no name, so nothing is left behind whatever happens to the process.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;

pub struct Spool {
    file: File,
    /// Bytes written.
    len: u64,
    /// Bytes read back.
    read: u64,
}

impl Spool {
    pub fn create() -> io::Result<Spool> {
        let dir = std::env::temp_dir();
        let mut path = dir.as_os_str().as_bytes().to_vec();
        path.push(0);
        // SAFETY: a NUL-terminated path; open(2) returns a new descriptor
        // or -1, and the descriptor is owned by the File made from it.
        let fd = unsafe {
            libc::open(
                path.as_ptr().cast(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        let file = if fd >= 0 {
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            unsafe { File::from_raw_fd(fd) }
        } else {
            // A file system without O_TMPFILE (overlayfs on older
            // kernels, NFS): a named file, unlinked at once.
            Self::named_then_unlinked(&dir).map_err(|e| {
                io::Error::other(format!(
                    "a temporary file in {} for a request body: {e}",
                    dir.display()
                ))
            })?
        };
        Ok(Spool {
            file,
            len: 0,
            read: 0,
        })
    }

    /// Bytes written.
    pub fn written(&self) -> u64 {
        self.len
    }

    fn named_then_unlinked(dir: &std::path::Path) -> io::Result<File> {
        let mut template = dir.as_os_str().as_bytes().to_vec();
        template.extend_from_slice(b"/ferrule-body-XXXXXX\0");
        // SAFETY: mkstemp fills in the template's XXXXXX in place and
        // returns a new descriptor or -1.
        let fd = unsafe { libc::mkstemp(template.as_mut_ptr().cast()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: unlink the NUL-terminated name mkstemp wrote; the
        // descriptor, owned by the File, keeps the file until it closes.
        unsafe { libc::unlink(template.as_ptr().cast()) };
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes written and not yet read back.
    pub fn remaining(&self) -> u64 {
        self.len - self.read
    }

    /// Appends up to `max` of the next unread bytes to `buf`.
    pub fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if self.read == 0 {
            self.file.seek(SeekFrom::Start(0))?;
        }
        let want = max.min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        let start = buf.len();
        buf.resize(start + want, 0);
        let result = self.file.read(&mut buf[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        self.read += n as u64;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body's temporary file is shorter than was written",
            ));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::Spool;

    #[test]
    fn the_named_fallback_leaves_no_name() {
        let dir = std::env::temp_dir().join(format!("ferrule-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = Spool::named_then_unlinked(&dir).unwrap();
        std::io::Write::write_all(&mut file, b"x").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn writes_then_reads_back() {
        let mut spool = Spool::create().unwrap();
        spool.write(b"hello ").unwrap();
        spool.write(&[b'x'; 70_000]).unwrap();
        assert_eq!(spool.remaining(), 70_006);
        let mut buf = Vec::new();
        assert_eq!(spool.read_into(&mut buf, 6).unwrap(), 6);
        assert_eq!(buf, b"hello ");
        while spool.remaining() > 0 {
            spool.read_into(&mut buf, 65536).unwrap();
        }
        assert_eq!(buf.len(), 70_006);
        assert!(buf[6..].iter().all(|&b| b == b'x'));
    }
}
