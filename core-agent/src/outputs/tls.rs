//! TLS for the MQTT sink (`mqtts://`): a rustls client configuration (ring provider,
//! TLS 1.2 and 1.3) trusting `ca_file` or, without it, the system's trust store, with
//! an optional client certificate (`client_cert_file` + `client_key_file`).
//!
//! The files are read when the sink starts (validation reads them too, so a bad file
//! is a config error naming the key, not a silent reconnect loop). The server name
//! checked against the broker's certificate is the url's host (a DNS name or an IP
//! address, which then must be in the certificate's subjectAltName).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::outputs::MqttSettings;

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be opened or read.
    #[error("{key} {path}: {source}")]
    Read {
        /// The setting naming the file (`brokers.mqtt.ca_file`, ...).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no PEM `CERTIFICATE`.
    #[error("{key} {path}: no PEM CERTIFICATE in it")]
    NoCertificate {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key (PKCS#1, PKCS#8 or SEC1).
    #[error("brokers.mqtt.client_key_file {path}: no PEM private key in it")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate was refused by the trust store (not a valid X.509 CA).
    #[error("brokers.mqtt.ca_file {path}: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: rustls::Error,
    },
    /// No `ca_file` was set and the system trust store has no usable certificate.
    #[error("brokers.mqtt: no ca_file and no certificate in the system trust store ({reason})")]
    NoSystemRoots {
        /// What the loader reported.
        reason: String,
    },
    /// rustls refused the configuration (client certificate and key do not match,
    /// unsupported key type, ...).
    #[error("brokers.mqtt TLS: {source}")]
    Config {
        /// Underlying error.
        #[source]
        source: rustls::Error,
    },
}

fn reader(key: &'static str, path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })
}

/// The certificates of the PEM file `path` (at least one).
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut r = reader(key, path)?;
    let certs = rustls_pemfile::certs(&mut r)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of the PEM file `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = "brokers.mqtt.client_key_file";
    let mut r = reader(key, path)?;
    rustls_pemfile::private_key(&mut r)
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_owned(),
        })
}

/// The trust store: `ca_file`'s certificates, or the system's.
fn roots(s: &MqttSettings) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if let Some(path) = &s.ca_file {
        for cert in load_certs("brokers.mqtt.ca_file", path)? {
            store.add(cert).map_err(|source| TlsError::BadCa {
                path: path.clone(),
                source,
            })?;
        }
        return Ok(store);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = store.add_parsable_certificates(native.certs);
    if added == 0 {
        let reason = native
            .errors
            .first()
            .map_or_else(|| "empty".to_owned(), ToString::to_string);
        return Err(TlsError::NoSystemRoots { reason });
    }
    Ok(store)
}

/// The rustls client configuration for `s` (an `mqtts://` url).
pub fn client_config(s: &MqttSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { source })?
        .with_root_certificates(roots(s)?);
    let config = match (&s.client_cert_file, &s.client_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                load_certs("brokers.mqtt.client_cert_file", cert)?,
                load_key(key)?,
            )
            .map_err(|source| TlsError::Config { source })?,
        // Validation refuses one without the other.
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
