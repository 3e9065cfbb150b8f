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
/// # Errors
/// When an extra certificate is not a usable trust anchor.
pub fn verified(extra: &[CertificateDer<'static>]) -> Result<ClientConfig, String> {
    let mut roots = system_roots().clone();
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|e| format!("CA certificate not usable as a trust anchor: {e}"))?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
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
