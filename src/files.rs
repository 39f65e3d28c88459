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

/// Creates `path` anew for writing (truncated when it exists), mode 0600
/// on Unix: also a regular file an earlier run left open to others, as
/// complyd writes it whole (where its mode can be changed).
///
/// # Errors
/// The file cannot be created.
pub fn write_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let file = o.open(path)?;
    // A regular file only: never a device such as /dev/null or /dev/stdout.
    // Best effort: a file of another owner (or on a file system without
    // modes) cannot be changed, and is written as before.
    #[cfg(unix)]
    if file.metadata()?.is_file() {
        let _ = file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    }
    Ok(file)
}

/// Creates the directory `path` (and its parents) when missing, mode 0700
/// on Unix for the ones it creates.
///
/// # Errors
/// The directory cannot be created.
pub fn private_dir(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_written_anew_is_its_owners_alone_and_a_device_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "an earlier run's").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        io::Write::write_all(&mut write_private(&path).unwrap(), b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let null = std::fs::metadata("/dev/null").unwrap().permissions().mode();
        write_private(Path::new("/dev/null")).unwrap();
        assert_eq!(std::fs::metadata("/dev/null").unwrap().permissions().mode(), null);
    }
}
