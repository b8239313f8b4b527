//! Certificates for TLS tests, made when the test runs: a certificate authority of the
//! test's own, server certificates for this machine's loopback names, and client
//! certificates, as PEM; and [`TlsFront`], an HTTPS front for a plain local server.
//!
//! ```no_run
//! let ca = testkit::tls::TestCa::new("redis");
//! let client = ca.client_files("dispatcher"); // client.pem + client.key, beside ca.pem
//! # let _ = (ca.ca_file(), client.cert, client.key);
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::temp::TempDir;

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct CertPem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
}

impl CertPem {
    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> CertFiles {
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        write(&files.cert, &self.cert);
        write(&files.key, &self.key);
        files
    }
}

/// A certificate authority made for one test, keeping its files (`ca.pem` and the client
/// certificates it issues) in a directory removed when it is dropped.
pub struct TestCa {
    dir: TempDir,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA whose common name is "agentsmith test CA `name`".
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("agentsmith test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params
            .self_signed(&key)
            .expect("a CA certificate with a fresh key can be signed")
            .pem();
        let dir = TempDir::new("agentsmith-tls");
        write(&dir.path().join("ca.pem"), &pem);
        Self {
            dir,
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate's file (`ca.pem`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate, in PEM.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `127.0.0.1`, `::1` and `localhost`.
    pub fn server_cert(&self) -> CertPem {
        self.issue(
            "server",
            &["127.0.0.1", "::1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose common name is `name`.
    pub fn client_cert(&self, name: &str) -> CertPem {
        self.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// [`TestCa::client_cert`], written as `NAME.pem` and `NAME.key` beside `ca.pem`.
    pub fn client_files(&self, name: &str) -> CertFiles {
        self.client_cert(name).write(self.dir.path(), name)
    }

    fn issue(&self, name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertPem {
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("the names are valid SANs");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the CA signs a certificate with a fresh key");
        CertPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// TLS on a free port of 127.0.0.1, with a server certificate of a [`TestCa`], in front of a
/// plain TCP server (a stand-in dispatcher, a fake API): each connection's handshake is
/// made here, and its bytes are passed on as they are. Stopped on drop.
pub struct TlsFront {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Starts the front for `target`, presenting a certificate `ca` signed for 127.0.0.1,
    /// ::1 and localhost.
    pub async fn start(target: SocketAddr, ca: &TestCa) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let server = ca.server_cert();
        let certs = CertificateDer::pem_slice_iter(server.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("rcgen writes a readable certificate");
        let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes())
            .expect("rcgen writes a readable key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the certificate matches its key");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the TLS front");
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&handshakes);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            task,
        }
    }

    /// `https://localhost:<port>`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// How many TLS handshakes completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
