//! The files complyd creates hold the dataset, or raw lines of the stream
//! (the dead-letter file): they are created readable and writable by their
//! owner only.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Opens `path` for appending, creating it (mode 0600 on Unix) when missing.
///
/// # Errors
/// The file cannot be opened or created.
pub fn append_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Creates `path` empty (mode 0600 on Unix) unless it exists; a file that
/// exists is left as it is.
///
/// # Errors
/// The file cannot be created (its directory is missing or not writable).
pub fn create_private(path: &Path) -> io::Result<()> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
