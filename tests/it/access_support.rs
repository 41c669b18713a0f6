//! What the access tests share: a log captured in memory, requests over HTTP/1.1 or h2c with any headers, an
//! identity provider's JWKS served on loopback with keys the test makes, and tokens signed with them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A log written to memory, as JSON lines.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// A logger into this capture (synchronous enough for tests: give it a moment before reading).
    pub fn logger(&self) -> (slog::Logger, coworking_analytics::logging::LogGuard) {
        coworking_analytics::logging::json_logger(self.clone(), slog::Level::Info)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// `method path` with `headers`, over a new HTTP/1.1 (`h2 = false`) or h2c connection.
pub async fn call(
    addr: std::net::SocketAddr,
    h2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<bytes::Bytes>::new()).unwrap();
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of the test's identity provider.
pub struct SigningKey {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    pub encoding: jsonwebtoken::EncodingKey,
    pub jwk: serde_json::Value,
    /// The public key in PEM (for the HMAC forgery).
    pub public_pem: Vec<u8>,
}

impl SigningKey {
    pub fn rsa(kid: &str) -> SigningKey {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(rsa.clone()).unwrap();
        SigningKey {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::RS256,
            encoding: jsonwebtoken::EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().unwrap())
                .unwrap(),
            jwk: serde_json::json!({"kty":"RSA","use":"sig","alg":"RS256","kid":kid,
                "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())}),
            public_pem: pkey.public_key_to_pem().unwrap(),
        }
    }

    pub fn ec(kid: &str) -> SigningKey {
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().unwrap(),
            openssl::bn::BigNum::new().unwrap(),
        );
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pkey = openssl::pkey::PKey::from_ec_key(key).unwrap();
        SigningKey {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::ES256,
            encoding: jsonwebtoken::EncodingKey::from_ec_pem(
                &pkey.private_key_to_pem_pkcs8().unwrap(),
            )
            .unwrap(),
            jwk: serde_json::json!({"kty":"EC","crv":"P-256","kid":kid,
                "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())}),
            public_pem: pkey.public_key_to_pem().unwrap(),
        }
    }

    /// A token with these claims, signed by this key.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Claims valid for `secs` more seconds, for issuer `iss` and audience `aud`, plus `extra`.
pub fn claims(iss: &str, aud: &str, secs: i64, extra: serde_json::Value) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = serde_json::json!({"iss": iss, "aud": aud, "sub": "alice@example.com",
        "iat": now, "exp": now + secs});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token whose secret is `key`'s public key: the forgery that fools a verifier trusting `alg`.
pub fn hmac_forgery(key: &SigningKey, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(&key.public_pem),
    )
    .unwrap()
}

/// The identity provider's JWKS endpoint on loopback: serves the current key set and counts its fetches.
pub struct Jwks {
    pub url: String,
    pub keys: Arc<Mutex<Vec<serde_json::Value>>>,
    pub fetches: Arc<Mutex<u32>>,
}

impl Jwks {
    pub async fn serve(keys: Vec<serde_json::Value>) -> Jwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(Mutex::new(0));
        let (k, f) = (Arc::clone(&keys), Arc::clone(&fetches));
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = serde_json::json!({"keys": *k.lock().unwrap()}).to_string();
                *f.lock().unwrap() += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Jwks { url, keys, fetches }
    }

    pub fn fetched(&self) -> u32 {
        *self.fetches.lock().unwrap()
    }
}
