//! TLS for the SSL and SASL_SSL listeners: rustls, with the certificate and key read again
//! when their files change (no restart to renew a certificate), handshakes bounded per shard,
//! and a client certificate mapped to its principal as Kafka's default rule does.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::listener::{ClientAuth, SecurityConfig, TlsFiles};

/// How often a shard looks at the TLS files' modification times, at most: at each accept
/// beyond this interval since the last look.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A TLS connection, after its handshake.
pub type TlsStream = futures_rustls::server::TlsStream<TcpStream>;

/// The server config built from the TLS files, or why it could not be.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("--tls-cert-file {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert-file {}: no PEM certificate in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("--tls-key-file {}: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match (files.client_auth, &files.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err("--tls-client-auth requested or required needs --tls-ca-file".to_string());
        }
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--tls-ca-file {}: {e}", ca.display()))?;
            for cert in cas {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca-file {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--tls-ca-file {}: no PEM certificate in it",
                    ca.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("--tls-ca-file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert-file and --tls-key-file do not match: {e}"))?;
    Ok(Arc::new(config))
}

/// One shard's TLS acceptor.
pub struct TlsAcceptor {
    files: TlsFiles,
    config: RefCell<Arc<rustls::ServerConfig>>,
    /// The files' modification times when `config` was built.
    loaded: Cell<[Option<SystemTime>; 3]>,
    checked_at: Cell<Instant>,
    handshakes: Rc<Semaphore>,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    /// The acceptors of `security`'s TLS files for SSL listeners and for SASL_SSL ones, which
    /// share the shard's handshake slots. As in Kafka, client certificates are asked for on
    /// SSL listeners only: a SASL_SSL client is named by SASL.
    pub fn for_listeners(
        security: &SecurityConfig,
    ) -> Result<(Rc<TlsAcceptor>, Rc<TlsAcceptor>), String> {
        let files = security
            .tls
            .clone()
            .ok_or("a TLS listener needs --tls-cert-file and --tls-key-file")?;
        let handshakes = Rc::new(Semaphore::new(security.tls_handshakes_per_shard_max as u64));
        let ssl = TlsAcceptor::new(files.clone(), handshakes.clone(), security)?;
        let sasl_files = TlsFiles {
            ca: None,
            client_auth: ClientAuth::None,
            ..files
        };
        let sasl_ssl = TlsAcceptor::new(sasl_files, handshakes, security)?;
        Ok((Rc::new(ssl), Rc::new(sasl_ssl)))
    }

    fn new(
        files: TlsFiles,
        handshakes: Rc<Semaphore>,
        security: &SecurityConfig,
    ) -> Result<TlsAcceptor, String> {
        let loaded = modified_times(&files);
        let config = load_server_config(&files)?;
        Ok(TlsAcceptor {
            files,
            config: RefCell::new(config),
            loaded: Cell::new(loaded),
            checked_at: Cell::new(Instant::now()),
            handshakes,
            handshake_timeout: security.tls_handshake_timeout,
        })
    }

    /// Runs the handshake of an accepted connection: its stream and the principal of its
    /// client certificate, if it presented one. Waits while the shard runs its most
    /// handshakes at once.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<(TlsStream, Option<String>)> {
        self.reload_if_changed();
        let _slot = self
            .handshakes
            .acquire_permit(1)
            .await
            .map_err(|_| std::io::Error::other("shard stopping"))?;
        let acceptor = futures_rustls::TlsAcceptor::from(self.config.borrow().clone());
        let timeout = glommio::timer::sleep(self.handshake_timeout).fuse();
        let handshake = acceptor.accept(stream).fuse();
        futures::pin_mut!(timeout, handshake);
        let stream = futures::select_biased! {
            stream = handshake => stream?,
            _ = timeout => return Err(std::io::ErrorKind::TimedOut.into()),
        };
        let principal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| certificate_principal(cert.as_ref()));
        Ok((stream, principal))
    }

    /// Builds the config again when a file changed since it was read; a file that no longer
    /// loads keeps the last good config (and says why, once per change).
    fn reload_if_changed(&self) {
        if self.checked_at.get().elapsed() < RELOAD_CHECK_INTERVAL {
            return;
        }
        self.checked_at.set(Instant::now());
        let times = modified_times(&self.files);
        if times == self.loaded.get() {
            return;
        }
        self.loaded.set(times);
        match load_server_config(&self.files) {
            Ok(config) => {
                tracing::info!(cert = %self.files.cert.display(), "TLS files changed: reloaded");
                *self.config.borrow_mut() = config;
            }
            Err(why) => {
                tracing::warn!(%why, "TLS files changed but do not load: the last good ones stay")
            }
        }
    }
}

fn modified_times(files: &TlsFiles) -> [Option<SystemTime>; 3] {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    [
        time(&files.cert),
        time(&files.key),
        files.ca.as_deref().and_then(time),
    ]
}

/// Kafka's default `ssl.principal.mapping.rules`: `User:` and the subject's distinguished
/// name as RFC 2253 writes it (most specific first: `CN=alice,OU=eng,O=acme`).
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut rdns = Vec::new();
    let subject: Vec<_> = cert.subject().iter().collect();
    for rdn in subject.into_iter().rev() {
        let mut attributes = Vec::new();
        for attribute in rdn.iter() {
            let oid = attribute.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, registry)
                .map(str::to_string)
                .unwrap_or_else(|_| oid.to_id_string());
            let value = attribute.as_str().ok()?;
            attributes.push(format!("{name}={}", escape_rfc2253(value)));
        }
        rdns.push(attributes.join("+"));
    }
    Some(format!("User:{}", rdns.join(",")))
}

/// RFC 2253's escapes in an attribute value.
fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate made with `openssl req -x509 -subj "/C=US/O=acme/OU=eng,
    /// west/CN=alice"`; `openssl x509 -nameopt RFC2253` prints the same subject.
    #[test]
    fn a_client_certificate_names_its_subject_as_kafka_does() {
        let pem = include_bytes!("testdata/alice.pem");
        let der = CertificateDer::from_pem_slice(pem).expect("PEM");
        assert_eq!(
            certificate_principal(der.as_ref()).as_deref(),
            Some("User:CN=alice,OU=eng\\, west,O=acme,C=US")
        );
        assert_eq!(certificate_principal(b"not DER"), None);
    }

    #[test]
    fn rfc_2253_escapes() {
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc2253("plain"), "plain");
    }
}
