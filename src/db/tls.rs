//! TLS to an external PostgreSQL (rustls): Mozilla's roots plus an optional
//! CA file, so `sslmode=require` works against Neon, RDS (with its CA) and
//! other managed services.

use std::path::Path;
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, DbError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| DbError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer<'static> = cert
                .map_err(|e| DbError::Tls(format!("CA file {} is not PEM: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| DbError::Tls(format!("bad certificate in {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(DbError::Tls(format!(
                "CA file {} holds no certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
