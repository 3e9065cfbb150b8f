//! A listener's certificate, reloadable while it serves: [`Certs`] is the
//! rustls resolver every new handshake asks, holding the current key and
//! chain behind an `ArcSwap`. A reload (SIGHUP, a change of the files,
//! see [`watch`]) reads and checks both files first and swaps only a pair
//! that works; connections already open keep the session they have, so
//! nothing is dropped. A bad pair keeps the old one, and says why.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// One listener's certificate and key, swapped on reload.
pub struct Certs {
    /// `listen` or `admin`: the config section, for messages.
    name: &'static str,
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The leaf's notAfter, Unix seconds.
    not_after: AtomicI64,
    /// What the files looked like when last read (modified time and size).
    stamp: std::sync::Mutex<Option<Stamp>>,
    provider: Arc<CryptoProvider>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("name", &self.name)
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files have not changed since they were last read.
    Unchanged,
    /// A new certificate now serves new connections; its notAfter.
    Swapped {
        /// Unix seconds.
        not_after: i64,
    },
}

impl Certs {
    /// Reads and checks `files` for the listener `name` (`listen`, `admin`).
    ///
    /// # Errors
    /// A message naming the field and file that could not be read or used.
    pub fn load(name: &'static str, files: &TlsFiles) -> Result<Arc<Certs>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = stamp(files);
        let (key, not_after) = read(name, files, &provider)?;
        Ok(Arc::new(Certs {
            name,
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
            not_after: AtomicI64::new(not_after),
            stamp: std::sync::Mutex::new(stamp),
            provider,
        }))
    }

    /// The TLS acceptor of a listener serving these certificates (ALPN h2
    /// and http/1.1).
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(cfg))
    }

    /// The config section these certificates belong to.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The certificate file.
    pub fn cert_file(&self) -> &Path {
        &self.files.cert
    }

    /// The serving leaf certificate's notAfter, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Relaxed)
    }

    /// Reads the files again and swaps in the new pair when it is valid;
    /// `force` reads them even when they look unchanged (SIGHUP).
    ///
    /// # Errors
    /// Why the new files were refused; the old certificate keeps serving.
    pub fn reload(&self, force: bool) -> Result<Reloaded, String> {
        let now = stamp(&self.files);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *last == now {
                return Ok(Reloaded::Unchanged);
            }
            // NB: a refused pair is not read again until the files change
            // once more (or SIGHUP), so a bad file is reported once.
            *last = now;
        }
        let (key, not_after) = read(self.name, &self.files, &self.provider)?;
        self.current.store(Arc::new(key));
        self.not_after.store(not_after, Relaxed);
        Ok(Reloaded::Swapped { not_after })
    }

    /// Reloads and logs the outcome.
    pub fn reload_logged(&self, force: bool, why: &str) {
        match self.reload(force) {
            Ok(Reloaded::Unchanged) => {}
            Ok(Reloaded::Swapped { not_after }) => tracing::info!(
                listener = self.name,
                cert = %self.files.cert.display(),
                not_after = %crate::timefmt::rfc3339(not_after.max(0) as u64),
                trigger = why,
                "TLS certificate reloaded; new connections use it"
            ),
            Err(e) => tracing::error!(
                listener = self.name,
                trigger = why,
                error = %e,
                "TLS certificate reload refused; the previous certificate keeps serving"
            ),
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Checks `files` every `every` and reloads the certificates whose files
/// changed. Runs until aborted.
pub async fn watch(certs: Certificates, every: Duration) {
    let certs = certs.all();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        for c in &certs {
            let c = c.clone();
            // NB: file reads and the key check off the reactor.
            let _ =
                tokio::task::spawn_blocking(move || c.reload_logged(false, "file change")).await;
        }
    }
}

fn stamp(files: &TlsFiles) -> Option<Stamp> {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    Some([one(&files.cert)?, one(&files.key)?])
}

/// The certified key in `files`, and its leaf's notAfter.
fn read(
    name: &'static str,
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, i64), String> {
    let certs = read_certs(name, &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "{name}.tls_key = {:?}: cannot read a PEM private key: {e}",
            files.key.display()
        )
    })?;
    let not_after = not_after(&certs[0]).map_err(|e| {
        format!(
            "{name}.tls_cert = {:?}: cannot read the certificate: {e}",
            files.cert.display()
        )
    })?;
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "{name}.tls_cert/{name}.tls_key = {:?}, {:?}: certificate and key do not fit: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok((key, not_after))
}

fn read_certs(name: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{name}.tls_cert = {:?}: cannot read PEM certificates: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{name}.tls_cert = {:?}: no certificate in file",
            path.display()
        ));
    }
    Ok(certs)
}

/// A DER certificate's notAfter, Unix seconds.
pub fn not_after(der: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

/// The certificates of both listeners; one [`Certs`] when the admin
/// listener serves the platform listener's files (the default).
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    /// The platform listener's, `None` for plain HTTP.
    pub listen: Option<Arc<Certs>>,
    /// The admin listener's, `None` for plain HTTP or no admin listener.
    pub admin: Option<Arc<Certs>>,
}

impl Certificates {
    /// Reads and checks the TLS files of both listeners.
    ///
    /// # Errors
    /// Every problem, each naming its field and file.
    pub fn load(cfg: &crate::config::GatewayConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut load = |name, files: &Option<TlsFiles>| match files {
            Some(f) => Certs::load(name, f).map_err(|e| problems.push(e)).ok(),
            None => None,
        };
        let listen = load("listen", &cfg.tls);
        let admin = match cfg.admin.enabled {
            false => None,
            true if cfg.admin.tls == cfg.tls => listen.clone(),
            true => load("admin", &cfg.admin.tls),
        };
        match problems.is_empty() {
            true => Ok(Certificates { listen, admin }),
            false => Err(problems),
        }
    }

    /// Each distinct set of certificates once.
    pub fn all(&self) -> Vec<Arc<Certs>> {
        let mut all: Vec<Arc<Certs>> = self.listen.iter().cloned().collect();
        if let Some(a) = &self.admin {
            if !all.iter().any(|c| Arc::ptr_eq(c, a)) {
                all.push(a.clone());
            }
        }
        all
    }

    /// Reads every certificate again now (SIGHUP), off the reactor.
    pub async fn reload(&self, why: &'static str) {
        for c in self.all() {
            let _ = tokio::task::spawn_blocking(move || c.reload_logged(true, why)).await;
        }
    }
}
