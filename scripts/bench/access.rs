//! What a credential costs a request (`cargo bench --bench access`, run by `scripts/bench-serve --access-only`):
//! `Access::identify` in a loop, in-process, for an API key and for a token already verified once (what every
//! request after a client's first pays), beside the same loop on open access, each the median of 7 rounds of
//! 200,000 calls. The HTTP rows of bench-serve measure the same thing end to end, but their run-to-run noise is
//! larger than the cost. Not a test: it asserts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arc_swap::ArcSwap;
use base64::Engine;
use coworking_analytics::access::jwks::JwksSource;
use coworking_analytics::access::jwt::{JwtSettings, Verifier};
use coworking_analytics::access::keys::{new_key, parse_scopes, KeySet};
use coworking_analytics::access::Access;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: u32 = 200_000;

async fn per_call(access: &Access, header: &[u8]) -> Duration {
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        for _ in 0..CALLS {
            let _ = black_box(access.identify(black_box(&[header])).await);
        }
        rounds.push(started.elapsed() / CALLS);
    }
    rounds.sort();
    rounds[3]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let made = new_key("bench", parse_scopes("reports").unwrap()).unwrap();
    let keys = Access {
        keys: Some(Arc::new(ArcSwap::from_pointee(
            KeySet::parse(&made.line).unwrap(),
        ))),
        tokens: None,
    };
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let jwk = serde_json::json!({"kty": "RSA", "alg": "RS256", "kid": "k",
        "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    let verifier = Arc::new(Verifier::new(
        JwtSettings {
            issuer: "bench".into(),
            audience: "bench".into(),
            jwks: JwksSource::File(jwks),
            member_claim: "member_id".into(),
        },
        slog::Logger::root(slog::Discard, slog::o!()),
    ));
    verifier.fetch().await.unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("k".into());
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"iss": "bench", "aud": "bench", "sub": "bench", "scope": "reports",
        "exp": now + 3600});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().unwrap()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let tokens = Access {
        keys: None,
        tokens: Some(Arc::clone(&verifier)),
    };
    // The first verification of a token (the signature check), then the remembered ones.
    let first = Instant::now();
    tokens
        .identify(&[format!("Bearer {token}").as_bytes()])
        .await
        .unwrap();
    let first = first.elapsed();
    let open = per_call(&Access::open(), b"").await;
    let key_cost = per_call(&keys, format!("Bearer {}", made.key).as_bytes()).await;
    let token_cost = per_call(&tokens, format!("Bearer {token}").as_bytes()).await;
    println!("identify, median of 7 x {CALLS} calls (open access: the guard is not even called):");
    println!(
        "  loop alone (open access)          {:>7.0} ns",
        open.as_nanos()
    );
    println!(
        "  API key (SHA-256, map probe)      {:>7.0} ns",
        key_cost.as_nanos()
    );
    println!(
        "  RS256 token, already verified     {:>7.0} ns ({} bytes)",
        token_cost.as_nanos(),
        token.len()
    );
    println!(
        "  RS256 token, first verification   {:>7.0} ns (once per token)",
        first.as_nanos()
    );
}
