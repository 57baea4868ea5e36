//! TLS for the gateway's HTTPS listener: rustls (ring), ALPN `h2` and `http/1.1`, and a
//! certificate chosen per connection by SNI.
//!
//! [`CertResolver`] holds a default certificate (the self-signed wildcard for the base domain
//! that `nimbus server` makes on first start, see [`self_signed`]) and per-host certificates
//! added with `nimbus certs add`. A client's SNI picks, in order: the exact host, a wildcard
//! `*.parent` certificate, the default. Both sets are swapped atomically while connections are
//! served; a handshake loads each once.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Why a certificate or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate found in the certificate file")]
    NoCertificate,
    #[error("the certificate file is not valid PEM: {0}")]
    CertificatePem(String),
    #[error("no PEM private key (PKCS#8, PKCS#1 or SEC1) found in the key file: {0}")]
    Key(String),
    #[error("the private key is of an unsupported type: {0}")]
    KeyType(String),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    #[error("could not generate a certificate: {0}")]
    Generate(String),
}

/// Picks a certificate by SNI; see the module docs.
#[derive(Debug, Default)]
pub struct CertResolver {
    default: ArcSwap<Option<Arc<CertifiedKey>>>,
    hosts: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

// === impl CertResolver ===

impl CertResolver {
    /// Sets the certificate for clients whose SNI matches no host (or who send none).
    pub fn set_default(&self, key: Arc<CertifiedKey>) {
        self.default.store(Arc::new(Some(key)));
    }

    /// Replaces the per-host certificates; keys are lowercase hosts, `*.example.com` for a
    /// wildcard.
    pub fn set_hosts(&self, hosts: HashMap<String, Arc<CertifiedKey>>) {
        self.hosts.store(Arc::new(hosts));
    }

    /// The certificate for a server name (pure lookup; see the module docs for the order).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let hosts = self.hosts.load();
            if let Some(key) = hosts.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(key) = hosts.get(&format!("*.{parent}")) {
                    return Some(key.clone());
                }
            }
        }
        self.default.load().as_ref().clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// A server config for the HTTPS listener: certificates from `resolver`, ALPN h2 then
/// http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|builder| {
                builder
                    .with_no_client_auth()
                    .with_cert_resolver(resolver.clone())
            })
            // The ring provider supports the default versions; this arm is never taken.
            .unwrap_or_else(|_| {
                ServerConfig::builder()
                    .with_no_client_auth()
                    .with_cert_resolver(resolver)
            });
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let signing = any_supported_type(&key).map_err(|e| TlsError::KeyType(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // A key whose public half cannot be derived is still usable; only a known mismatch is
        // refused.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::Mismatch),
    }
}

/// A self-signed certificate for `*.base_domain` and `base_domain`, as `(cert PEM, key PEM)`.
pub fn self_signed(base_domain: &str) -> Result<(String, String), TlsError> {
    let names = vec![format!("*.{base_domain}"), base_domain.to_string()];
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((generated.cert.pem(), generated.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(host: &str) -> Arc<CertifiedKey> {
        let (cert, key) = self_signed(host).unwrap();
        Arc::new(certified_key(cert.as_bytes(), key.as_bytes()).unwrap())
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let resolver = CertResolver::default();
        assert!(resolver.lookup(Some("x.test")).is_none(), "nothing set yet");
        let default = key_for("nimbus.localhost");
        let exact = key_for("www.example.com");
        let wildcard = key_for("example.com");
        resolver.set_default(default.clone());
        resolver.set_hosts(HashMap::from([
            ("www.example.com".to_string(), exact.clone()),
            ("*.example.com".to_string(), wildcard.clone()),
        ]));
        // (SNI, expected certificate)
        let cases: &[(Option<&str>, &Arc<CertifiedKey>)] = &[
            (Some("www.example.com"), &exact),
            (Some("WWW.Example.com."), &exact), // case and trailing dot
            (Some("api.example.com"), &wildcard),
            (Some("a.b.example.com"), &default), // a wildcard covers one label only
            (Some("example.com"), &default),     // nor the parent itself
            (Some("hello--default.nimbus.localhost"), &default),
            (None, &default), // no SNI
        ];
        for (sni, want) in cases {
            let got = resolver.lookup(*sni).unwrap();
            assert!(Arc::ptr_eq(&got, want), "{sni:?}");
        }
    }

    #[test]
    fn keys_must_match_their_certificate() {
        let (cert_a, key_a) = self_signed("a.test").unwrap();
        let (_, key_b) = self_signed("b.test").unwrap();
        assert!(certified_key(cert_a.as_bytes(), key_a.as_bytes()).is_ok());
        let cases: &[(&str, &str, TlsError)] = &[
            (&cert_a, &key_b, TlsError::Mismatch),
            ("", &key_a, TlsError::NoCertificate),
        ];
        for (cert, key, want) in cases {
            assert_eq!(
                certified_key(cert.as_bytes(), key.as_bytes()).unwrap_err(),
                *want
            );
        }
        assert!(matches!(
            certified_key(cert_a.as_bytes(), b"not a key"),
            Err(TlsError::Key(_))
        ));
    }
}
