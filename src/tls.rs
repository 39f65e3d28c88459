//! TLS for every connection complyd opens: the stream, Replay, the batch
//! compliance jobs and PostgreSQL. One place decides what is trusted ([`client_config`]) and
//! builds the clients on it ([`http_client`], [`postgres_tls`]).
//!
//! rustls with the `ring` provider: nothing is linked from the system (no
//! OpenSSL, no pkg-config), and nothing needs cmake or nasm (aws-lc-rs,
//! rustls' default provider, may), so a build needs the Rust toolchain only.
//!
//! **Roots.** Mozilla's, compiled in (`webpki-roots`), rather than the
//! system's store (`rustls-native-certs`): the same roots on every machine,
//! a container without `ca-certificates` included, and nothing to install.
//! The system's store is never read.
//!
//! **A CA file** (`stream.ca_file`; `sslrootcert=PATH` in a PostgreSQL URL):
//! a PEM bundle whose certificates are trusted *instead of* the built-in
//! roots, as curl's `--cacert` and libpq's `sslrootcert` do. A connection
//! configured for a private CA trusts nothing else.
//!
//! Server certificates and host names are always verified; there is no
//! switch to turn that off.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why a TLS client configuration could not be built (the CA file's path is
/// shown; nothing in it is secret).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {} is not valid PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("the CA file {} holds no certificate (no \"BEGIN CERTIFICATE\" block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the CA file {}: certificate {index} cannot be a root: {detail}", path.display())]
    BadCertificate { path: PathBuf, index: usize, detail: String },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// The TLS client configuration: the built-in roots, or only the
/// certificates of `ca_file` (PEM). The built-in one is built once per
/// process.
///
/// # Errors
/// [`TlsError`] when `ca_file` cannot be read, is not PEM, holds no
/// certificate or one that cannot be a root.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    static BUILT_IN: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let Some(path) = ca_file else {
        if let Some(c) = BUILT_IN.get() {
            return Ok(c.clone());
        }
        let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let config = with_roots(roots)?;
        return Ok(BUILT_IN.get_or_init(|| config).clone());
    };
    with_roots(roots_from(path)?)
}

/// The roots a PEM file holds, every certificate of it checked.
fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| TlsError::Pem { path: path.to_owned(), detail: e.to_string() })?;
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(roots)
}

fn with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP client on `tls` for complyd's requests to X (the stream, Replay,
/// the batch compliance jobs' API and files): HTTP/1.1 only (the only
/// protocol offered in ALPN: one TCP connection per stream, never
/// multiplexed), redirects never followed, `connect_timeout` for the
/// connection and the TLS handshake, `timeout` for a request's answer to
/// begin (a request may set its own). `awc::Client` is `!Send`: build one
/// per thread (the stream threads keep theirs).
pub fn http_client(connect_timeout: Duration, timeout: Duration, tls: Arc<ClientConfig>) -> awc::Client {
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Not `Connector::max_http_version`: it would replace this TLS
    // configuration by awc's own (none, with the features complyd uses).
    awc::Client::builder()
        .connector(awc::Connector::new().timeout(connect_timeout).rustls_0_23(Arc::new(config)))
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

/// The PostgreSQL client's TLS on `tls` (used when the server offers TLS
/// and `sslmode` is not `disable`; `sslmode=require` refuses a server that
/// does not offer it).
pub fn postgres_tls(tls: Arc<ClientConfig>) -> PostgresTls {
    PostgresTls(MakeRustlsConnect::new(Arc::unwrap_or_clone(tls)))
}

/// [`MakeRustlsConnect`], also for a Unix socket: tokio-postgres names no
/// host for one (an empty string, not a valid TLS server name, which
/// `MakeRustlsConnect` refuses before connecting). The PostgreSQL server
/// never offers TLS on a Unix socket, and tokio-postgres refuses to start TLS
/// without a host name anyway, so the name stood in for it is never used.
#[derive(Clone)]
pub struct PostgresTls(MakeRustlsConnect);

impl<S> postgres::tls::MakeTlsConnect<S> for PostgresTls
where
    MakeRustlsConnect: postgres::tls::MakeTlsConnect<S>,
{
    type Stream = <MakeRustlsConnect as postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as postgres::tls::MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        self.0.make_tls_connect(if hostname.is_empty() { "localhost" } else { hostname })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    /// A self-signed certificate for 127.0.0.1 and localhost, its PEM
    /// written to a file, and a server configuration presenting it.
    struct SelfSigned {
        _dir: tempfile::TempDir,
        pem_file: PathBuf,
        server: Arc<rustls::ServerConfig>,
    }

    fn self_signed() -> SelfSigned {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, ck.cert.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        SelfSigned { _dir: dir, pem_file, server: Arc::new(server) }
    }

    /// How a test server's connection went: the ALPN protocol agreed, or
    /// why the handshake failed.
    type Handshake = Result<Option<Vec<u8>>, String>;

    /// A loopback TLS server on its own thread for `connections` connections
    /// (each bounded by 10 s timeouts). `before_tls` runs on the plain socket
    /// first; `answer` is written on the TLS stream once its first bytes are
    /// read. Each connection's [`Handshake`] comes back on the channel.
    fn serve(
        config: Arc<rustls::ServerConfig>,
        connections: usize,
        before_tls: fn(&mut TcpStream),
        answer: Vec<u8>,
    ) -> (u16, mpsc::Receiver<Handshake>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((mut tcp, _)) = listener.accept() else { return };
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                tcp.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                before_tls(&mut tcp);
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4096];
                let outcome = match tls.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = tls.write_all(&answer);
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                        Ok(tls.conn.alpn_protocol().map(<[u8]>::to_vec))
                    }
                    Ok(_) => Err("closed before a request".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                if tx.send(outcome).is_err() {
                    return;
                }
            }
        });
        (port, rx)
    }

    fn no_preamble(_: &mut TcpStream) {}

    fn http_ok() -> Vec<u8> {
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec()
    }

    /// The status of a GET through [`http_client`] on `tls`, or the error.
    fn get(url: &str, tls: Arc<ClientConfig>) -> Result<u16, String> {
        actix_rt::System::new().block_on(async {
            let client = http_client(Duration::from_secs(5), Duration::from_secs(5), tls);
            let mut response = client.get(url).send().await.map_err(|e| e.to_string())?;
            let body = response.body().await.map_err(|e| e.to_string())?;
            assert_eq!(&body[..], b"ok");
            Ok(response.status().as_u16())
        })
    }

    #[test]
    fn the_http_client_refuses_an_unknown_issuer_and_accepts_it_from_the_ca_file() {
        let cert = self_signed();
        let (port, outcomes) = serve(cert.server.clone(), 2, no_preamble, http_ok());
        let url = format!("https://127.0.0.1:{port}/stream");
        let wait = Duration::from_secs(15);

        let refused = get(&url, client_config(None).unwrap()).unwrap_err();
        assert!(refused.to_lowercase().contains("certificate") && refused.contains("UnknownIssuer"), "{refused}");
        assert!(outcomes.recv_timeout(wait).unwrap().is_err(), "the server saw no request");

        let accepted = get(&url, client_config(Some(&cert.pem_file)).unwrap());
        assert_eq!(accepted, Ok(200));
        // HTTP/1.1 is the only protocol offered, though the server prefers h2.
        assert_eq!(outcomes.recv_timeout(wait).unwrap(), Ok(Some(b"http/1.1".to_vec())));
    }

    #[test]
    fn postgres_refuses_an_unknown_issuer_and_accepts_it_from_sslrootcert() {
        // Enough of PostgreSQL's side: the SSLRequest answered 'S', then, on
        // TLS, an ErrorResponse to the startup message.
        fn ssl_request(tcp: &mut TcpStream) {
            let mut req = [0u8; 8];
            tcp.read_exact(&mut req).unwrap();
            assert_eq!(req, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "an SSLRequest");
            tcp.write_all(b"S").unwrap();
        }
        let fields: &[u8] = b"SFATAL\0C28000\0Mthe TLS test server\0\0";
        let mut refusal = b"E".to_vec();
        refusal.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        refusal.extend_from_slice(fields);
        let cert = self_signed();
        let (port, outcomes) = serve(cert.server.clone(), 3, ssl_request, refusal);
        let wait = Duration::from_secs(15);
        let base = format!("postgres://complyd@127.0.0.1:{port}/complyd?sslmode=require&connect_timeout=10");

        // With `prefer` (the default) as with `require`: a certificate that
        // does not verify stops the connection, never a retry in clear text
        // (which would send the server a startup message, not an SSLRequest).
        for url in [base.replace("sslmode=require", "sslmode=prefer"), base.clone()] {
            let refused = crate::store::open(&url).err().expect("refused").to_string();
            assert!(refused.contains("certificate") && refused.contains("UnknownIssuer"), "{url}: {refused}");
            assert!(outcomes.recv_timeout(wait).unwrap().is_err(), "{url}: the server saw no startup message");
        }

        let with_ca = format!("{base}&sslrootcert={}", cert.pem_file.display());
        let answered = crate::store::open(&with_ca).err().expect("the test server refuses the login").to_string();
        assert!(answered.contains("the TLS test server"), "the TLS handshake succeeded: {answered}");
        assert!(outcomes.recv_timeout(wait).unwrap().is_ok());
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let cert = self_signed();
        assert!(client_config(Some(&cert.pem_file)).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("cannot read the CA file") && e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
            .unwrap();
        assert!(client_config(Some(&garbage)).is_err());
        let bad_der = dir.path().join("bad-der.pem");
        std::fs::write(&bad_der, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = client_config(Some(&bad_der)).unwrap_err().to_string();
        assert!(e.contains("certificate 1 cannot be a root"), "{e}");
    }

    #[test]
    fn the_built_in_roots_are_mozillas_and_built_once() {
        let a = client_config(None).unwrap();
        assert!(Arc::ptr_eq(&a, &client_config(None).unwrap()));
        let cert = self_signed();
        let own = client_config(Some(&cert.pem_file)).unwrap();
        // The PostgreSQL connector builds on either, and takes a Unix
        // socket's empty host name, which MakeRustlsConnect alone refuses.
        use postgres::tls::MakeTlsConnect;
        for config in [a, own] {
            assert!(MakeTlsConnect::<postgres::Socket>::make_tls_connect(&mut postgres_tls(config.clone()), "").is_ok());
            assert!(
                MakeTlsConnect::<postgres::Socket>::make_tls_connect(&mut postgres_tls(config), "db.example").is_ok()
            );
        }
        let mut bare = MakeRustlsConnect::new((*client_config(None).unwrap()).clone());
        assert!(MakeTlsConnect::<postgres::Socket>::make_tls_connect(&mut bare, "").is_err());
    }
}
