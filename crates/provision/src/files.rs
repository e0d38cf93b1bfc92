//! The only file writes: new private files, and atomic in-place replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::ProvisionError;

/// Creates `path` with mode 0600 from the start (never wider, whatever the umask) and writes
/// `text`; refuses when it exists. Returns after the data is on disk.
pub(crate) fn create_private(path: &Path, text: &str) -> Result<(), ProvisionError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ProvisionError::Exists {
                path: path.to_path_buf(),
            },
            _ => ProvisionError::io("create", path, e),
        })?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    written.map_err(|e| {
        let _ = fs::remove_file(path);
        ProvisionError::io("write", path, e)
    })
}

/// Replaces the file at `path` (a symlink is followed) with `text` atomically: a temporary
/// file in the same directory gets the original's owner, group and mode before any data is
/// written, then is renamed over the original. A reader sees the old or the new file, never
/// a mix, and the file's mode is never wider than it was.
pub(crate) fn replace_atomically(path: &Path, text: &str) -> Result<(), ProvisionError> {
    let real = fs::canonicalize(path).map_err(|e| ProvisionError::io("find", path, e))?;
    let meta = fs::metadata(&real).map_err(|e| ProvisionError::io("read", &real, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    let dir = real.parent().unwrap_or(Path::new("/"));
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = create_temp(dir, &name, mode)?;
    let result = (|| {
        let now = file
            .metadata()
            .map_err(|e| ProvisionError::io("read", &tmp, e))?;
        if (now.uid(), now.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| ProvisionError::io("give the original owner and group to", &tmp, e))?;
        }
        // The umask may have narrowed the mode at creation; restore the original exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| ProvisionError::io("set the mode of", &tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ProvisionError::io("write", &tmp, e))?;
        fs::rename(&tmp, &real).map_err(|e| ProvisionError::io("rename into place", &real, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; failing here loses nothing already visible.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new, empty, exclusive temporary file next to the target, with at most `mode`.
fn create_temp(dir: &Path, name: &str, mode: u32) -> Result<(PathBuf, File), ProvisionError> {
    let mut last = None;
    for attempt in 0..100u32 {
        let tmp = dir.join(format!(
            ".{name}.pinhole-{}-{attempt}.tmp",
            std::process::id()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(ProvisionError::io("create a temporary file in", dir, e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no free temporary name"));
    Err(ProvisionError::io("create a temporary file in", dir, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh empty directory under the system temp dir, removed by the caller's drop guard.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "pinhole-provision-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_private_is_0600_and_never_overwrites() {
        let d = TempDir::new("create");
        let p = d.0.join("a.toml");
        create_private(&p, "one").unwrap();
        assert_eq!(mode(&p), 0o600);
        let e = create_private(&p, "two").unwrap_err();
        assert!(matches!(e, ProvisionError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("a.toml") && e.to_string().contains("fix:"));
        assert_eq!(fs::read_to_string(&p).unwrap(), "one");
    }

    #[test]
    fn replace_keeps_mode_follows_symlinks_and_leaves_no_temp() {
        let d = TempDir::new("replace");
        let p = d.0.join("relay.toml");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.0.join("link.toml");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        replace_atomically(&link, "new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(mode(&p), 0o640);
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let names: Vec<_> = fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
