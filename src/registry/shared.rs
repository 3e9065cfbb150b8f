//! One registry file shared by several gateway replicas (a shared volume):
//! each replica watches it (`Reloader::watch`), so a change one replica's
//! admin API writes is served by the others within the watch interval.
//!
//! Writers must not lose each other's changes:
//! - **A lock across processes:** a change holds an exclusive `flock` on
//!   `<registry>.lock` from reading the file to renaming the new one in,
//!   so two replicas' changes are applied one after the other, each to the
//!   file as the other left it (two registrations of one id: the second is
//!   refused, not written over the first).
//! - **A check before the rename:** the file must still be the one the
//!   change was made to (its [`version`]); an editor, or a filesystem
//!   without working locks, that changed it meanwhile makes the change
//!   fail rather than overwrite it.
//! - **A precondition for clients:** the admin API answers with the
//!   registry's version (`ETag`) and refuses a change whose `If-Match`
//!   names an older one (412), so a client that read the registry from a
//!   replica that had not yet seen another's change cannot undo it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ChangeError;

/// How long a change waits for another replica's change to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The version of a registry text: the first 16 hex digits of its SHA-256.
pub fn version(text: &str) -> String {
    crate::digest::short_sha256(text.as_bytes())
}

/// `<registry>.lock` beside the registry file.
pub fn lock_path(registry: &Path) -> PathBuf {
    let mut name = registry.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    registry.with_file_name(name)
}

/// An exclusive `flock` on a registry's lock file, released when dropped
/// (closing the file releases it).
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock of `registry`, waiting at most `wait` for the
    /// replica that holds it.
    ///
    /// # Errors
    /// [`ChangeError::Storage`] when the lock file cannot be opened,
    /// [`ChangeError::Conflict`] when another writer holds it past `wait`.
    pub async fn acquire(registry: &Path, wait: Duration) -> Result<FileLock, ChangeError> {
        let path = lock_path(registry);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                ChangeError::Storage(format!(
                    "cannot open the registry lock {}: {e}; nothing changed",
                    path.display()
                ))
            })?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // NB: std's lock is flock(2) on Linux (Rust 1.89+).
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(ChangeError::Storage(format!(
                        "cannot lock {}: {e}; nothing changed",
                        path.display()
                    )))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChangeError::Conflict(format!(
                    "another gateway has been changing the registry for {wait:?} \
                     (it holds {}); nothing changed, try again",
                    path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Refuses a change made to registry version `base` when `expected` (a
/// client's `If-Match`) names another.
///
/// # Errors
/// [`ChangeError::Stale`].
pub fn check_precondition(expected: Option<&str>, base: &str) -> Result<(), ChangeError> {
    match expected.map(|e| e.trim().trim_matches('"')) {
        Some(e) if e != "*" && e != base => Err(ChangeError::Stale(format!(
            "the registry changed since version {e:?} was read (it is {base:?} now, maybe \
             through another gateway replica): read it again and retry; nothing changed"
        ))),
        _ => Ok(()),
    }
}

/// Refuses to rename a change over `path` when the file is no longer the
/// version `base` the change was made to.
///
/// # Errors
/// [`ChangeError::Stale`].
pub fn check_unchanged(path: &Path, base: &str) -> Result<(), ChangeError> {
    let now = std::fs::read_to_string(path).map(|t| version(&t)).ok();
    if now.as_deref() != Some(base) {
        return Err(ChangeError::Stale(format!(
            "the registry file {} changed while this change was made (another replica or an \
             editor): nothing changed; retry",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lock_is_one_writer_at_a_time_across_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("registry.toml");
        assert_eq!(lock_path(&reg), dir.path().join("registry.toml.lock"));
        let held = FileLock::acquire(&reg, LOCK_WAIT).await.unwrap();
        // NB: flock locks belong to the open file description, so a second
        // open in this process contends as another process would.
        let err = FileLock::acquire(&reg, Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ChangeError::Conflict(_)), "{err}");
        drop(held);
        FileLock::acquire(&reg, Duration::from_millis(50))
            .await
            .unwrap();
        // A lock that cannot be made says so, and nothing is changed.
        std::fs::create_dir(dir.path().join("blocked.toml.lock")).unwrap();
        let err = FileLock::acquire(&dir.path().join("blocked.toml"), LOCK_WAIT)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, ChangeError::Storage(m) if m.contains("blocked.toml.lock")),
            "{err}"
        );
    }

    #[test]
    fn preconditions_and_changed_files_are_refused() {
        let v = version("a = 1\n");
        assert_eq!(v.len(), 16);
        assert!(check_precondition(None, &v).is_ok());
        assert!(check_precondition(Some("*"), &v).is_ok());
        assert!(check_precondition(Some(&format!("\"{v}\"")), &v).is_ok());
        let stale = check_precondition(Some("\"0000000000000000\""), &v).unwrap_err();
        assert!(matches!(stale, ChangeError::Stale(_)), "{stale}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registry.toml");
        std::fs::write(&p, "a = 1\n").unwrap();
        assert!(check_unchanged(&p, &v).is_ok());
        std::fs::write(&p, "a = 2\n").unwrap();
        assert!(matches!(
            check_unchanged(&p, &v),
            Err(ChangeError::Stale(_))
        ));
    }
}
