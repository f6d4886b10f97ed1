//! Writing private keys (and the certificates beside them) to files: atomically, with the
//! mode set when the file is created, and never through a symbolic link.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of a file holding a private key: owner read/write only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Mode of a public file (certificate chain, trust bundle).
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// What to do when the destination already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Refuse with [`KeyFileError::Exists`]; the existing file is left alone.
    Keep,
    /// Replace it with a new file (new inode, so the new mode applies).
    Replace,
}

/// Why a key or certificate file was not written. Whatever the error, the destination is
/// either untouched or completely replaced, and no temporary file is left behind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyFileError {
    /// The destination exists and [`Existing::Keep`] was asked for.
    #[error("{} exists (use --force to overwrite)", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The destination is a symbolic link: writing would put a key wherever the link points.
    #[error(
        "{} is a symbolic link; refusing to write a key or certificate through it (remove it, or write elsewhere)",
        path.display()
    )]
    Symlink {
        /// The destination.
        path: PathBuf,
    },
    /// The destination exists and is not a regular file (a directory, socket, ...).
    #[error("{} exists and is not a regular file", path.display())]
    NotAFile {
        /// The destination.
        path: PathBuf,
    },
    /// The file system refused an operation.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` may be written: not a symbolic link, not anything but a regular file, and
/// absent unless `existing` is [`Existing::Replace`]. [`write()`] checks this itself; call it
/// first to refuse a set of files before writing any of them.
pub(crate) fn check_destination(path: &Path, existing: Existing) -> Result<(), KeyFileError> {
    // symlink_metadata: about the link itself, never its target.
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(KeyFileError::Symlink {
            path: path.to_path_buf(),
        }),
        Ok(meta) if !meta.is_file() => Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        }),
        Ok(_) if existing == Existing::Keep => Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Removes the temporary file unless the write got as far as putting it in place.
struct TempFile {
    path: PathBuf,
    placed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Create a new file next to `path` with `mode`; never opens an existing file.
fn create_temp(path: &Path, mode: u32) -> Result<(File, TempFile), KeyFileError> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut attempts = 0;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = dir.join(format!(
            ".{name}.{}.{}.{nanos}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        // create_new is O_CREAT|O_EXCL: it fails on any existing path, a symlink included, so
        // nothing planted at the temporary name is ever opened. The mode applies from the
        // first instant the file exists (narrowed further by the umask, never widened).
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
        {
            Ok(file) => {
                return Ok((
                    file,
                    TempFile {
                        path: temp,
                        placed: false,
                    },
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            Err(e) => return Err(io_error(&temp)(e)),
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Write `bytes` to `path` with exactly `mode` ([`PRIVATE_MODE`] for keys): into a new
/// temporary file in the same directory, fsync it, move it into place, fsync the directory.
/// A reader sees the old file or the new one, never a partial one, and after a crash the file
/// is the old one or the complete new one. A symbolic link at `path` is refused, and an
/// existing file is kept or replaced as `existing` says; a replaced file's old mode, owner and
/// hard links do not carry over (the new file is a new inode).
pub(crate) fn write(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), KeyFileError> {
    check_destination(path, existing)?;
    let (mut file, mut temp) = create_temp(path, mode)?;
    // Exactly `mode` whatever the umask (fchmod on the open file, not a path).
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_error(&temp.path))?;
    file.write_all(bytes).map_err(io_error(&temp.path))?;
    file.sync_all().map_err(io_error(&temp.path))?;
    drop(file);
    match existing {
        // rename replaces a link at `path` rather than writing through it, so even a link
        // planted after the check above only loses the link.
        Existing::Replace => fs::rename(&temp.path, path).map_err(io_error(path))?,
        // link fails if anything, a link included, appeared at `path` since the check: an
        // existing file is never replaced. The temporary name is removed on drop.
        Existing::Keep => fs::hard_link(&temp.path, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io_error(path)(e)
            }
        })?,
    }
    temp.placed = existing == Existing::Replace;
    drop(temp);
    // The new directory entry is durable only once the directory is synced.
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_replaced_key_gets_the_new_mode_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        fs::write(&key, "old").unwrap();
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        write(&key, b"new", PRIVATE_MODE, Existing::Replace).unwrap();
        assert_eq!(mode_of(&key), 0o600);
        assert_eq!(fs::read_to_string(&key).unwrap(), "new");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn an_existing_file_is_kept_unless_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        write(&key, b"first", PRIVATE_MODE, Existing::Keep).unwrap();
        assert_eq!(mode_of(&key), 0o600);
        let err = write(&key, b"second", PRIVATE_MODE, Existing::Keep).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("exists (use --force"), "{err}");
        assert_eq!(fs::read_to_string(&key).unwrap(), "first");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn public_files_get_0644_whatever_the_previous_mode() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("svid.pem");
        fs::write(&cert, "old").unwrap();
        fs::set_permissions(&cert, Permissions::from_mode(0o666)).unwrap();
        write(&cert, b"cert", PUBLIC_MODE, Existing::Replace).unwrap();
        assert_eq!(mode_of(&cert), 0o644);
    }

    #[test]
    fn links_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "precious").unwrap();
        let link = dir.path().join("key.pem");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for existing in [Existing::Keep, Existing::Replace] {
            let err = write(&link, b"key", PRIVATE_MODE, existing).unwrap_err();
            assert!(matches!(err, KeyFileError::Symlink { .. }), "{err}");
            assert!(
                err.to_string().contains("key.pem is a symbolic link"),
                "{err}"
            );
        }
        // A dangling link too: following it would create a file wherever it points.
        let dangling = dir.path().join("dangling.pem");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            write(&dangling, b"key", PRIVATE_MODE, Existing::Keep),
            Err(KeyFileError::Symlink { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(matches!(
            write(&sub, b"key", PRIVATE_MODE, Existing::Replace),
            Err(KeyFileError::NotAFile { .. })
        ));
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        assert!(leftovers(dir.path()).is_empty());
    }
}
