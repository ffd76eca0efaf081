//! SASL OAUTHBEARER (issue 25; KIP-255, KIP-768, RFC 7628): librdkafka produces and consumes
//! over SASL_PLAINTEXT and SASL_SSL with JWTs signed by a key of the broker's JWKS file, and
//! re-authenticates before its tokens expire (KIP-368); unsecured, forged and misdirected
//! tokens are refused as Kafka refuses them; the JWKS file is read again when it changes. Keys
//! and certificates are made here, at run time.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::BrokerProcess;
use common::raw::RawClient;
use rdkafka::ClientConfig;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sluice_net::messages::metadata_request::MetadataRequest;
use sluice_net::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use sluice_net::messages::sasl_handshake_request::SaslHandshakeRequest;
use sluice_net::{ErrorCode, Request, Response};

const USER: &str = "alice";
const AUDIENCE: &str = "sluice";

/// An identity provider's signing key (ES256), named `kid` in its JWKS.
#[derive(Clone)]
struct Issuer {
    key: Arc<EcdsaKeyPair>,
    kid: String,
}

impl Issuer {
    fn new(kid: &str) -> Issuer {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        Issuer {
            key: Arc::new(key),
            kid: kid.to_string(),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }

    /// A token for `sub` and `aud`, issued now and valid for `lifetime`.
    fn token(&self, sub: &str, aud: &str, lifetime: Duration) -> (String, SystemTime) {
        let now = SystemTime::now();
        let expires_at = now + lifetime;
        let seconds = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
        };
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = json!({"sub": sub, "aud": aud, "iat": seconds(now),
                            "exp": seconds(expires_at)});
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), message.as_bytes())
            .expect("signs");
        let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        (token, expires_at)
    }
}

/// Writes the JWKS of `issuers` to `path` (through a rename, so that the broker never reads
/// half a file).
fn write_jwks(path: &Path, issuers: &[&Issuer]) {
    let keys: Vec<Value> = issuers.iter().map(|i| i.jwk()).collect();
    write_atomically(path, &json!({ "keys": keys }).to_string());
}

fn write_atomically(path: &Path, contents: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// librdkafka asks the application for its OAUTHBEARER tokens: these come from `issuer`.
struct TokenContext {
    issuer: Issuer,
    audience: &'static str,
    lifetime: Duration,
}

impl ClientContext for TokenContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let (token, expires_at) = self.issuer.token(USER, self.audience, self.lifetime);
        let lifetime_ms = expires_at
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_millis()
            .try_into()?;
        Ok(OAuthToken {
            token,
            principal_name: USER.to_string(),
            lifetime_ms,
        })
    }
}

impl ConsumerContext for TokenContext {}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files in `dir`: (CA, cert,
/// key).
fn make_certificates(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice oauth test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server.key", server_key.serialize_pem()),
    )
}

/// A broker whose SASL listeners offer OAUTHBEARER with `jwks` for the audience
/// [`AUDIENCE`], and `extra` flags.
fn oauth_broker(dir: &Path, jwks: &Path, extra: &[&str]) -> BrokerProcess {
    let jwks = jwks.display().to_string();
    let mut args = vec![
        "--sasl-mechanisms",
        "OAUTHBEARER",
        "--sasl-oauthbearer-jwks-file",
        &jwks,
        "--sasl-oauthbearer-expected-audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    BrokerProcess::start(&dir.join("data"), &args)
}

fn client_config(addr: &str, security: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "30000");
    for (key, value) in security {
        config.set(*key, *value);
    }
    config
}

fn counter(broker: &BrokerProcess, name: &str) -> f64 {
    common::http::get(broker.admin.as_deref().expect("admin"), "/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Produces `count` records to `topic` and reads them back, with tokens from `issuer`.
async fn round_trip(config: &ClientConfig, issuer: &Issuer, topic: &str, count: usize) {
    let context = || TokenContext {
        issuer: issuer.clone(),
        audience: AUDIENCE,
        lifetime: Duration::from_secs(600),
    };
    let producer: FutureProducer<TokenContext> =
        config.create_with_context(context()).expect("producer");
    for i in 0..count {
        let value = format!("{topic}-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("produce to {topic}: {error}"));
    }
    let consumer: BaseConsumer<TokenContext> = config
        .clone()
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .create_with_context(context())
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut values = Vec::new();
    let read = common::wait_for(Duration::from_secs(60), || {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("fetch");
            let payload = rdkafka::Message::payload(&message).unwrap_or_default();
            values.push(String::from_utf8_lossy(payload).to_string());
        }
        (values.len() >= count).then_some(())
    });
    assert!(read.is_some(), "{topic}: read {} of {count}", values.len());
    let expected: Vec<String> = (0..count).map(|i| format!("{topic}-{i}")).collect();
    assert_eq!(values, expected);
}

/// True when a client of `config` (tokens from `context`, or librdkafka's own unsecured
/// ones) gets metadata, i.e. authenticates.
fn authenticates(config: &ClientConfig, context: Option<TokenContext>) -> bool {
    let timeout = Duration::from_secs(5);
    match context {
        Some(context) => {
            let consumer: BaseConsumer<TokenContext> =
                config.create_with_context(context).expect("consumer");
            consumer.fetch_metadata(None, timeout).is_ok()
        }
        None => {
            let consumer: BaseConsumer = config.create().expect("consumer");
            consumer.fetch_metadata(None, timeout).is_ok()
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_produces_and_consumes_with_oauthbearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    let issuer = Issuer::new("idp-1");
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&issuer]);
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ],
    );
    let sasl_plaintext = client_config(
        &broker.listeners["SASL_PLAINTEXT"],
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "OAUTHBEARER"),
        ],
    );
    let sasl_ssl = client_config(
        &broker.listeners["SASL_SSL"],
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("ssl.ca.location", &ca),
        ],
    );
    round_trip(&sasl_plaintext, &issuer, "oauth-plaintext", 20).await;
    round_trip(&sasl_ssl, &issuer, "oauth-ssl", 20).await;
    let authenticated = counter(&broker, "sluice_sasl_authentications_total");
    assert!(authenticated >= 2.0, "{authenticated} authentications");

    // librdkafka's unsecured JWT (alg none) is refused, as Kafka's validator refuses it.
    let mut unsecured = sasl_plaintext.clone();
    unsecured
        .set("enable.sasl.oauthbearer.unsecure.jwt", "true")
        .set("sasl.oauthbearer.config", format!("principal={USER}"));
    assert!(!authenticates(&unsecured, None), "an unsecured JWT passed");
    // A token signed by a key the JWKS file does not hold, though its kid is the issuer's.
    let forger = Issuer {
        kid: issuer.kid.clone(),
        ..Issuer::new("forger")
    };
    let forged = TokenContext {
        issuer: forger,
        audience: AUDIENCE,
        lifetime: Duration::from_secs(600),
    };
    assert!(
        !authenticates(&sasl_plaintext, Some(forged)),
        "a forged token passed"
    );
    // A good signature for another audience.
    let elsewhere = TokenContext {
        issuer: issuer.clone(),
        audience: "another-service",
        lifetime: Duration::from_secs(600),
    };
    assert!(
        !authenticates(&sasl_plaintext, Some(elsewhere)),
        "another audience's token passed"
    );
    let failures = counter(&broker, "sluice_sasl_authentication_failures_total");
    assert!(failures >= 3.0, "{failures} failures counted");
    broker.check_log();
}

/// kafka-python, an independent client, over SASL_SSL with a token (and a SASL extension).
#[test]
fn kafka_python_over_sasl_ssl_with_oauthbearer() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    let issuer = Issuer::new("idp-1");
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&issuer]);
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ],
    );
    let lifetime = Duration::from_secs(600);
    let (token, _) = issuer.token(USER, AUDIENCE, lifetime);
    let (forged, _) = Issuer::new("idp-1").token(USER, AUDIENCE, lifetime);
    let out = common::python::run_script(
        "oauthbearer.py",
        &[&broker.listeners["SASL_SSL"], &ca, &token, &forged],
        Duration::from_secs(300),
    );
    assert!(out.contains("oauthbearer round trip"), "{out}");
    broker.check_log();
}

/// The exchange as Kafka's OAuthBearerSaslServer answers it, over the wire: the error
/// challenge, then the failure after the client's %x01; a session that ends with the token
/// or with --sasl-session-lifetime-ms, whichever is first; a re-authentication that may not
/// change the principal.
#[test]
fn oauthbearer_exchange_answers_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new("idp-1");
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&issuer]);
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            "--sasl-session-lifetime-ms",
            "60000",
        ],
    );
    let addr = &broker.listeners["SASL_PLAINTEXT"];
    let start = |client: &mut RawClient| {
        let handshake = client.call(
            1,
            Request::SaslHandshake(SaslHandshakeRequest {
                mechanism: "OAUTHBEARER".to_string(),
            }),
        );
        let Response::SaslHandshake(handshake) = handshake else {
            panic!("not a SaslHandshake response: {handshake:?}");
        };
        assert_eq!(handshake.error_code, 0);
        assert_eq!(handshake.mechanisms, vec!["OAUTHBEARER"]);
    };
    let authenticate = |client: &mut RawClient, message: Vec<u8>| {
        let response = client.call(
            2,
            Request::SaslAuthenticate(SaslAuthenticateRequest {
                auth_bytes: Bytes::from(message),
            }),
        );
        let Response::SaslAuthenticate(response) = response else {
            panic!("not a SaslAuthenticate response: {response:?}");
        };
        response
    };
    let bearer = |token: &str| format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes();

    // A token signed by another key: the error challenge, then the failure at %x01.
    let mut client = RawClient::connect_to(addr);
    start(&mut client);
    let (forged, _) = Issuer::new("idp-1").token(USER, AUDIENCE, Duration::from_secs(600));
    let challenge = authenticate(&mut client, bearer(&forged));
    assert_eq!(challenge.error_code, 0);
    assert_eq!(&challenge.auth_bytes[..], br#"{"status":"invalid_token"}"#);
    let failed = authenticate(&mut client, vec![0x01]);
    assert_eq!(
        failed.error_code,
        ErrorCode::SaslAuthenticationFailed.code()
    );
    assert_eq!(
        failed.error_message.as_deref(),
        Some(r#"{"status":"invalid_token"}"#)
    );
    assert!(client.is_closed());

    // A malformed message fails at once.
    let mut client = RawClient::connect_to(addr);
    start(&mut client);
    let failed = authenticate(&mut client, b"n,,\x01\x01".to_vec());
    assert_eq!(
        failed.error_code,
        ErrorCode::SaslAuthenticationFailed.code()
    );
    assert!(client.is_closed());

    // A good token of 10 minutes: the session ends with --sasl-session-lifetime-ms.
    let mut client = RawClient::connect_to(addr);
    start(&mut client);
    let (token, _) = issuer.token(USER, AUDIENCE, Duration::from_secs(600));
    let done = authenticate(&mut client, bearer(&token));
    assert_eq!(done.error_code, 0, "{:?}", done.error_message);
    assert!(
        (50_000..=60_000).contains(&done.session_lifetime_ms),
        "{}",
        done.session_lifetime_ms
    );
    let metadata = client.call(12, Request::Metadata(MetadataRequest::default()));
    assert!(matches!(metadata, Response::Metadata(_)));
    // Re-authenticating as another principal is refused (KIP-368).
    start(&mut client);
    let (bob, _) = issuer.token("bob", AUDIENCE, Duration::from_secs(600));
    let refused = authenticate(&mut client, bearer(&bob));
    assert_eq!(
        refused.error_code,
        ErrorCode::SaslAuthenticationFailed.code()
    );
    assert!(client.is_closed());

    // A token of 20 seconds: the session ends with the token; re-authenticating as the same
    // principal with a new token is accepted.
    let mut client = RawClient::connect_to(addr);
    start(&mut client);
    let (token, _) = issuer.token(USER, AUDIENCE, Duration::from_secs(20));
    let done = authenticate(&mut client, bearer(&token));
    assert_eq!(done.error_code, 0, "{:?}", done.error_message);
    assert!(
        (10_000..=20_000).contains(&done.session_lifetime_ms),
        "{}",
        done.session_lifetime_ms
    );
    start(&mut client);
    let (renewed, _) = issuer.token(USER, AUDIENCE, Duration::from_secs(20));
    let done = authenticate(&mut client, bearer(&renewed));
    assert_eq!(done.error_code, 0, "{:?}", done.error_message);
    let metadata = client.call(12, Request::Metadata(MetadataRequest::default()));
    assert!(matches!(metadata, Response::Metadata(_)));
    broker.check_log();
}

/// The JWKS file is read again when it changes: a rotated key is accepted without a
/// restart and the old one refused; a file that does not load keeps the last good keys,
/// with a warning.
#[test]
fn jwks_file_changes_are_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = Issuer::new("idp-old");
    let new = Issuer::new("idp-new");
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&old]);
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            // Failed authentications are polled for below.
            "--failed-authentication-delay-ms",
            "0",
        ],
    );
    broker.allow_log("JWKS file changed but does not load");
    let addr = broker.listeners["SASL_PLAINTEXT"].clone();
    // One authentication on a fresh connection: Ok(()) or the error challenge.
    let accepts = |issuer: &Issuer| -> bool {
        let mut client = RawClient::connect_to(&addr);
        client.call(
            1,
            Request::SaslHandshake(SaslHandshakeRequest {
                mechanism: "OAUTHBEARER".to_string(),
            }),
        );
        let (token, _) = issuer.token(USER, AUDIENCE, Duration::from_secs(600));
        let response = client.call(
            2,
            Request::SaslAuthenticate(SaslAuthenticateRequest {
                auth_bytes: Bytes::from(format!("n,,\x01auth=Bearer {token}\x01\x01")),
            }),
        );
        matches!(
            response,
            Response::SaslAuthenticate(r) if r.error_code == 0 && r.auth_bytes.is_empty()
        )
    };
    assert!(accepts(&old));
    assert!(!accepts(&new));

    write_atomically(&jwks, "{\"keys\": [");
    let warned = common::wait_for(Duration::from_secs(30), || {
        assert!(accepts(&old), "the last good keys were dropped");
        broker
            .log_lines()
            .iter()
            .any(|l| l.contains("JWKS file changed but does not load"))
            .then_some(())
    });
    assert!(warned.is_some(), "no warning about the broken JWKS file");

    write_jwks(&jwks, &[&new]);
    // Every shard reads the file itself: poll until none accepts the old key.
    let rotated = common::wait_for(Duration::from_secs(30), || {
        (accepts(&new) && !accepts(&old) && !accepts(&old)).then_some(())
    });
    assert!(rotated.is_some(), "the rotated key was not picked up");
    broker.check_log();
}

/// KIP-368: the session ends when the token does, so librdkafka re-authenticates with fresh
/// tokens before it ends, and records keep flowing on the same connections.
#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_re_authenticates_before_its_tokens_expire() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new("idp-1");
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&issuer]);
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        ],
    );
    let config = client_config(
        &broker.listeners["SASL_PLAINTEXT"],
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "OAUTHBEARER"),
        ],
    );
    // librdkafka asks for a new token 80% through the old one's life (checking once a
    // second) and re-authenticates 90% through the session, which ends with the token's whole
    // second: at 25 s the new token is there before the re-authentication starts. A shorter
    // lifetime has librdkafka re-authenticate with the old token, for the little life it has
    // left, and then race the end of that session.
    let context = TokenContext {
        issuer: issuer.clone(),
        audience: AUDIENCE,
        lifetime: Duration::from_secs(25),
    };
    let producer: FutureProducer<TokenContext> =
        config.create_with_context(context).expect("producer");
    let mut sent = 0;
    let mut first = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let value = format!("record-{sent}");
        producer
            .send(
                FutureRecord::<(), _>::to("oauth-reauth").payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("record {sent}: {error}"));
        sent += 1;
        let seen = counter(&broker, "sluice_sasl_authentications_total");
        let first = *first.get_or_insert(seen);
        // A re-authentication: librdkafka opens no new connection while none is closed, and
        // the broker closed none (below).
        if seen > first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no re-authentication within 90 s ({seen} authentications)"
        );
    }
    eprintln!("{sent} records acknowledged across re-authentications");
    let expired = broker
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("the SASL session expired"))
        .collect::<Vec<_>>();
    assert!(
        expired.is_empty(),
        "sessions ended before re-authentication: {expired:?}"
    );
    broker.check_log();
}
