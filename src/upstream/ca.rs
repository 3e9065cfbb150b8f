//! Per-route CA bundles: PEM text kept in the registry, or (operators
//! only) a file, read with bounds.
//!
//! A file is read only when it is a regular file of at most
//! [`MAX_FILE_BYTES`], opened without blocking: `/dev/zero` once grew the
//! gateway by 1.2 GB in 4 s, and a FIFO hung the registry's change lock
//! and every reload behind it. Owners (through the admin API) give PEM text
//! of at most [`MAX_INLINE_BYTES`] instead, so nothing an owner sends makes
//! the gateway open a file, nor learn which paths exist on its host.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The largest CA bundle file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The largest PEM text a registry entry holds.
pub const MAX_INLINE_BYTES: usize = 64 << 10;

/// Where a route's extra CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CaBundle {
    /// A PEM file (registry files and operators).
    File(PathBuf),
    /// PEM text held in the registry itself.
    Pem(Arc<str>),
}

/// Whether a `ca_bundle` setting is PEM text rather than a path.
pub fn is_pem(setting: &str) -> bool {
    setting.trim_start().starts_with("-----BEGIN")
}

impl CaBundle {
    /// The bundle a registry's `ca_bundle` value names: PEM text as it is,
    /// a path relative to `base_dir`.
    pub fn from_setting(setting: &str, base_dir: &Path) -> CaBundle {
        match is_pem(setting) {
            true => CaBundle::Pem(setting.into()),
            false => CaBundle::File(base_dir.join(setting)),
        }
    }

    /// Every certificate in the bundle.
    ///
    /// # Errors
    /// The file cannot be read within the bounds, the text is too long, not
    /// PEM, or holds no certificate.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        match self {
            CaBundle::File(p) => read_file(p),
            CaBundle::Pem(text) if text.len() > MAX_INLINE_BYTES => Err(format!(
                "CA bundle PEM text is {} bytes; at most {MAX_INLINE_BYTES}",
                text.len()
            )),
            CaBundle::Pem(text) => parse(text.as_bytes()),
        }
    }

    /// For listings: the path, or how long the inline text is.
    pub fn describe(&self) -> String {
        match self {
            CaBundle::File(p) => p.display().to_string(),
            CaBundle::Pem(text) => format!("inline PEM ({} bytes)", text.len()),
        }
    }
}

/// Reads every certificate of a PEM file: a regular file of at most
/// [`MAX_FILE_BYTES`], opened without blocking (a FIFO or device is refused,
/// never waited on or read from).
///
/// # Errors
/// When the file is not such a file, cannot be read, or holds no certificate.
pub fn read_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read CA bundle: {e}"))?;
    // NB: the opened file is checked, not the path, so a swap between a
    // check and the open cannot slip a FIFO in.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read CA bundle: {e}"))?;
    if !meta.is_file() {
        return Err("CA bundle is not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "CA bundle is {} bytes; at most {MAX_FILE_BYTES}",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read CA bundle: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("CA bundle grew past {MAX_FILE_BYTES} bytes"));
    }
    parse(&bytes)
}

fn parse(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CA bundle is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("CA bundle holds no certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_huge_files_are_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        for (path, why) in [
            (PathBuf::from("/dev/zero"), "not a regular file"),
            (PathBuf::from("/dev/null"), "not a regular file"),
            (dir.path().to_path_buf(), "not a regular file"),
            (dir.path().join("missing.pem"), "cannot read"),
        ] {
            let e = read_file(&path).unwrap_err();
            assert!(e.contains(why), "{}: {e}", path.display());
        }
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if made {
            // NB: a blocking open would wait here for a writer forever.
            assert!(read_file(&fifo).unwrap_err().contains("not a regular file"));
        }
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_file(&big).unwrap_err().contains("at most"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(read_file(&empty).unwrap_err().contains("no certificate"));
    }

    #[test]
    fn settings_are_pem_text_or_paths() {
        let base = Path::new("/etc/osb");
        assert_eq!(
            CaBundle::from_setting("ca.pem", base),
            CaBundle::File(PathBuf::from("/etc/osb/ca.pem"))
        );
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            CaBundle::from_setting(pem, base),
            CaBundle::Pem(_)
        ));
        let huge = CaBundle::Pem(format!("{pem}{}", " ".repeat(MAX_INLINE_BYTES)).into());
        assert!(huge.certificates().unwrap_err().contains("at most"));
        assert!(CaBundle::Pem("-----BEGIN nonsense".into())
            .certificates()
            .is_err());
    }
}
