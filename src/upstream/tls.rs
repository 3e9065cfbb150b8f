//! rustls client configurations for upstream brokers.
//!
//! * [`verified`]: the system roots plus an optional per-route CA bundle;
//!   every published broker and every production private registration.
//! * [`development_unverified`]: accepts any certificate. It exists for
//!   private registrations in development mode only and is used nowhere else.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(ring::default_provider())).clone()
}

/// The operating system's trusted roots, loaded once per process.
pub fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "while loading system root certificates");
        }
        let (added, _ignored) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "no system root certificates found; only per-route CA bundles will be trusted"
            );
        }
        store
    })
}

/// A verifying client config: system roots plus `extra` CA certificates.
///
/// A server whose certificate is byte for byte one of `extra` is trusted
/// too: a self-signed certificate given as the CA file (what
/// `openssl req -x509` makes is marked as a CA, which WebPKI refuses as a
/// server's own certificate: `CaUsedAsEndEntity`). That is pinning, as
/// `curl --pinnedpubkey` does: exactly that certificate, whatever name it
/// carries; the handshake still proves the server holds its key.
///
/// # Errors
/// When an extra certificate is not a usable trust anchor.
pub fn verified(extra: &[CertificateDer<'static>]) -> Result<ClientConfig, String> {
    let mut roots = system_roots().clone();
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|e| format!("CA certificate not usable as a trust anchor: {e}"))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    if extra.is_empty() {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("CA certificates not usable: {e}"))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki {
            pinned: extra.to_vec(),
            webpki,
        }))
        .with_no_client_auth())
}

/// WebPKI verification, and exact matches of the configured certificates.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A client config that accepts any server certificate.
///
/// Only for private registrations in development mode (`RouteTable::build`
/// refuses development mode on publications).
pub fn development_unverified() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DevelopmentModeVerifier(provider())))
        .with_no_client_auth()
}

/// Accepts every certificate chain (but still checks handshake signatures, so
/// the peer holds the key of the certificate it sent). Development mode only.
#[derive(Debug)]
struct DevelopmentModeVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for DevelopmentModeVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
