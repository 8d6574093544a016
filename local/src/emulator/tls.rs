//! TLS for the loopback proxies (`ReverseProxy::start_tls`, `FaultProxy::start_tls`): a
//! throwaway certificate authority, made afresh for each proxy, and a certificate it signs for
//! `localhost` and 127.0.0.1. Real S3 is HTTPS, so a benchmark that puts the function's S3
//! traffic through a TLS proxy measures the handshakes and encryption the function pays on AWS;
//! the proxy forwards plain HTTP to the emulator behind it.
//!
//! Both keys are RSA 2048 with SHA-256 signatures, as S3's own certificates and their issuing
//! CA are, so the client verifies what it verifies on AWS. The proxy serves with rustls 0.23 and
//! aws-lc-rs, the provider the SDK's default HTTPS client is built with: no second crypto library
//! is built. The provider is named explicitly: the workspace's testcontainers enables rustls's
//! `ring` feature too, and with both rustls has no process default.
//!
//! # How the function comes to trust the proxy: `SSL_CERT_FILE`
//!
//! - The SDK's default HTTPS client is hyper 1 with rustls and aws-lc-rs:
//!   aws-smithy-runtime 1.16.2, `src/client/http.rs` lines 91-99 (`default_https_client`).
//! - Its trust store has the platform's roots on by default (aws-smithy-http-client 1.5.2,
//!   `src/client/tls.rs` lines 147-153, `enable_native_roots: true`), loaded once per process
//!   with `rustls_native_certs::load_native_certs()` (`src/client/tls/rustls_provider.rs`
//!   lines 117-118, a `LazyLock`) and added as roots (lines 161-162).
//! - rustls-native-certs 0.8.5, `src/lib.rs` lines 118-124 (documented at lines 48-57): when
//!   `SSL_CERT_FILE` or `SSL_CERT_DIR` is set, the roots come from there alone, not from the
//!   platform's store.
//! - `AWS_CA_BUNDLE`, which other SDKs read, is read nowhere in aws-config 1.13 or the
//!   smithy runtime.
//!
//! So the function's process needs [`TRUST_FILE_VAR`] set, before its first client is made, to
//! a file holding [`TlsIdentity::ca_pem`]. It then trusts that CA only, which does not matter to
//! a function whose one HTTPS peer is the proxy. (The local function host clears the
//! environment of the process it starts: the variable goes in the function's environment.)

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256,
};
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The environment variable that makes the function's S3 client trust a CA file (see the
/// module's comment for where the SDK reads it).
pub const TRUST_FILE_VAR: &str = "SSL_CERT_FILE";

/// The names the proxy's certificate is valid for: a client may address the proxy as either.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A throwaway CA and a server certificate it signed, ready to serve.
pub struct TlsIdentity {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

impl TlsIdentity {
    /// Makes a new CA and a certificate for `localhost` and 127.0.0.1. Nothing is written
    /// anywhere; the keys live as long as the identity.
    pub fn generate() -> io::Result<TlsIdentity> {
        let ca_key = KeyPair::generate_for(&PKCS_RSA_SHA256).map_err(io::Error::other)?;
        let mut ca_params = CertificateParams::default();
        // A name of its own: a verifier picks a CA by name, so two identities' CAs sharing one
        // would turn "not this CA" into a bad signature.
        let tag = RandomState::new().hash_one(0);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("usersync throwaway loopback CA {tag:016x}"),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(io::Error::other)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&PKCS_RSA_SHA256).map_err(io::Error::other)?;
        // rcgen makes "127.0.0.1" an IP address SAN, which is what a client checks an address
        // against.
        let mut server_params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())
            .map_err(io::Error::other)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(io::Error::other)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(io::Error::other)?
                .with_no_client_auth()
                .with_single_cert(vec![server_cert.der().clone()], key)
                .map_err(io::Error::other)?;
        // The proxy speaks HTTP/1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            ca_pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The CA certificate, PEM-encoded: what a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes [`Self::ca_pem`] to `path`, for [`TRUST_FILE_VAR`] to name.
    pub fn write_ca_file(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    pub(super) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

#[cfg(test)]
mod tests {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;

    use super::*;

    #[test]
    fn each_identity_is_a_new_ca_of_one_certificate() {
        let first = TlsIdentity::generate().unwrap();
        let second = TlsIdentity::generate().unwrap();
        let certs = |pem: &str| {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        assert_eq!(certs(first.ca_pem()).len(), 1);
        assert_ne!(first.ca_pem(), second.ca_pem(), "throwaway: never reused");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        first.write_ca_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first.ca_pem());
    }
}
