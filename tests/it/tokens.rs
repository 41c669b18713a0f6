//! OIDC tokens over real sockets (#23 point 2): a JWKS served on loopback by the test, with RSA and EC keys the
//! test makes; the forgeries a verifier must refuse; the issuer rotating its keys; a member reading only itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::access_support::{call, claims, hmac_forgery, unsigned, Captured, Jwks, SigningKey};
use crate::common::{add_token, add_user, migrated_db, wait_for_run, TestApp};
use serde_json::json;
use std::time::Duration;

const ISS: &str = "https://idp.example/realms/chain";
const AUD: &str = "coworking-analytics";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_against_the_issuers_keys_and_forgeries_refused() {
    let db = migrated_db();
    {
        let mut conn = db.conn();
        for id in [2, 3] {
            add_user(&mut conn, id, "2023-01-02 00:00:00");
            add_token(
                &mut conn,
                id,
                "2023-02-03 10:00:00",
                Some("2023-02-03 10:01:00"),
            );
        }
    }
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let jwks = Jwks::serve(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
    let log = Captured::default();
    let (logger, guard) = log.logger();
    let url = jwks.url.clone();
    let service = TestApp::new(&db.url)
        .with(|c| {
            c.access.jwt_issuer = Some(ISS.into());
            c.access.jwt_audience = Some(AUD.into());
            c.access.jwt_jwks_url = Some(url);
        })
        .start_logged(logger)
        .await;
    wait_for_run(&service, 0).await;
    let get = |path: &'static str, token: String, h2: bool| {
        let addr = service.addr;
        async move {
            call(
                addr,
                h2,
                "GET",
                path,
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
        }
    };
    let daily = "/api/reports/daily_usage";
    let visits = "/api/reports/user_visits";
    let reports = claims(ISS, AUD, 300, json!({"scope": "openid reports"}));
    let mut tokens = Vec::new();
    for h2 in [false, true] {
        // RS256 with `scope`, ES256 with `scp` as a list.
        let t = rsa.sign(&reports);
        assert_eq!(get(daily, t.clone(), h2).await.status, 200);
        assert_eq!(get(visits, t.clone(), h2).await.status, 403);
        tokens.push(t);
        let t = ec.sign(&claims(ISS, AUD, 300, json!({"scp": ["members"]})));
        assert_eq!(get(visits, t.clone(), h2).await.status, 200);
        assert_eq!(get(daily, t.clone(), h2).await.status, 403);
        tokens.push(t);
        // Expired (past the leeway), not yet valid, another issuer or audience, no exp.
        let refused = [
            rsa.sign(&claims(ISS, AUD, -120, json!({"scope": "reports"}))),
            rsa.sign(&claims(
                ISS,
                AUD,
                300,
                json!({"scope": "reports", "nbf": chrono::Utc::now().timestamp() + 600}),
            )),
            rsa.sign(&claims(
                "https://evil.example",
                AUD,
                300,
                json!({"scope": "reports"}),
            )),
            ec.sign(&claims(
                ISS,
                "another-app",
                300,
                json!({"scope": "reports"}),
            )),
            rsa.sign(&json!({"iss": ISS, "aud": AUD, "scope": "reports"})),
            // alg none, HMAC with the public key as the secret, a forged payload under a real signature.
            unsigned(&reports),
            hmac_forgery(&rsa, &reports),
            {
                let good = rsa.sign(&claims(ISS, AUD, 300, json!({"scope": "reports"})));
                let parts: Vec<&str> = good.split('.').collect();
                let forged = crate::access_support::b64(
                    claims(ISS, AUD, 300, json!({"scope": "reports members metrics"}))
                        .to_string()
                        .as_bytes(),
                );
                format!("{}.{forged}.{}", parts[0], parts[2])
            },
            "not-a-token".to_owned(),
        ];
        for (i, t) in refused.iter().enumerate() {
            let a = get(daily, t.clone(), h2).await;
            assert_eq!(
                a.status,
                401,
                "case {i} h2={h2}: {}",
                String::from_utf8_lossy(&a.body)
            );
            assert_eq!(a.json()["error"], "unauthorized");
            assert!(a
                .all("www-authenticate")
                .iter()
                .any(|c| c.contains("error=\"invalid_token\"")));
            tokens.push(t.clone());
        }
    }

    // Every guarded endpoint refuses an expired token with 401, over both protocols.
    let expired = rsa.sign(&claims(
        ISS,
        AUD,
        -120,
        json!({"scope": "reports members metrics"}),
    ));
    for route in coworking_analytics::http::routes::Route::ALL {
        if route.scope().is_some() {
            for h2 in [false, true] {
                let a = call(
                    service.addr,
                    h2,
                    "GET",
                    route.path(),
                    &[("authorization", &format!("Bearer {expired}"))],
                )
                .await;
                assert_eq!(
                    (a.status, a.json()["message"].as_str()),
                    (401, Some("the token has expired")),
                    "{}",
                    route.path()
                );
            }
        }
    }
    tokens.push(expired);

    // The issuer rotates: a token from a new key (unknown kid) fetches the keys again at once; another unknown
    // kid right after does not fetch again (at most once a minute).
    let before = jwks.fetched();
    let rotated = SigningKey::rsa("rsa-2");
    jwks.keys.lock().unwrap().push(rotated.jwk.clone());
    let t = rotated.sign(&reports);
    assert_eq!(get(daily, t.clone(), false).await.status, 200);
    assert_eq!(jwks.fetched(), before + 1);
    let stranger = SigningKey::ec("ec-9");
    let t2 = stranger.sign(&reports);
    assert_eq!(get(daily, t2.clone(), true).await.status, 401);
    assert_eq!(
        jwks.fetched(),
        before + 1,
        "an unknown kid fetched again within the minute"
    );
    tokens.extend([t, t2]);

    // A member token: its own entry only, as a number or a numeric string.
    for member in [json!("2"), json!(2)] {
        let t = ec.sign(&claims(
            ISS,
            AUD,
            300,
            json!({"scope": "self", "member_id": member}),
        ));
        let own = get(visits, t.clone(), false).await;
        assert_eq!(own.status, 200);
        let body = own.json();
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["2"],
            "{body}"
        );
        assert_eq!(
            get("/api/reports/user_visits?user_id=2", t.clone(), true)
                .await
                .status,
            200
        );
        for other in [
            "/api/reports/user_visits?user_id=3",
            "/api/reports/user_visits?user_id=2,3",
            "/api/reports/user_visits?limit=10",
            "/api/reports/daily_usage",
            "/metrics",
        ] {
            let a = get(other, t.clone(), false).await;
            assert_eq!(a.status, 403, "{other}");
        }
        tokens.push(t);
    }
    let no_member = ec.sign(&claims(ISS, AUD, 300, json!({"scope": "self"})));
    assert_eq!(get(visits, no_member.clone(), false).await.status, 403);
    tokens.push(no_member);

    assert!(service.shutdown(Duration::from_secs(5)).await);
    drop(guard);
    let text = log.text();
    for t in &tokens {
        assert!(!text.contains(t.as_str()), "a token reached the log");
    }
    assert!(text
        .lines()
        .any(|l| l.contains("\"audit\":true") && l.contains("\"who\":\"alice@example.com\"")));
}
