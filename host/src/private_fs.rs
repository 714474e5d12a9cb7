//! Files only comet's user may touch: the data directory holds uploaded
//! modules and the compile cache, whose native code comet runs. Whoever can
//! write there chooses that code, so directories are made 0700 and files
//! 0600 whatever the umask, and a cache directory others can write is
//! refused.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Create `dir` and its missing parents, private to this user.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write `bytes` to a new file at `path` (replacing one), private to this
/// user.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Refuse `dir` if another user owns it or others may write it.
pub fn check_private(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to user {}, not to comet's user {me}; its contents decide the code comet runs",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by other users (mode {:o}): whoever can write it chooses the code comet runs; `chmod 700` it",
                dir.display(),
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_whatever_the_umask_and_shared_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = dir.join("f");
        write(&file, b"x").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert!(check_private(&dir).is_ok());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_private(&dir).unwrap_err();
        assert!(e.to_string().contains("writable by other users"), "{e}");
    }
}
