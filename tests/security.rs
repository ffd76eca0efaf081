//! Listeners with security protocols (issue 25): librdkafka and kafka-python produce and
//! consume over SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256), SASL_SSL (SCRAM-SHA-512) and SSL with
//! client certificates; a wrong password, an unknown mechanism and a request before
//! authentication are refused as Kafka refuses them. Certificates are made here (rcgen).

mod common;

use std::path::Path;
use std::time::Duration;

use common::BrokerProcess;
use common::raw::RawClient;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_net::Request;
use sluice_net::messages::metadata_request::MetadataRequest;
use sluice_net::messages::sasl_handshake_request::SaslHandshakeRequest;

const USER: &str = "alice";

/// A client's librdkafka security settings.
type Security<'a> = Vec<(&'a str, &'a str)>;
const PASSWORD: &str = "alice-secret";

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate for
/// CN=alice,O=sluice-test, written as PEM files into `dir`.
struct Certificates {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn make_certificates(dir: &Path) -> Certificates {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "sluice-test");
    client_params
        .distinguished_name
        .push(DnType::CommonName, USER);
    let client_key = KeyPair::generate().unwrap();
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    Certificates {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// A broker with a listener of each protocol, and the user alice with both SCRAM mechanisms.
fn secured_broker(data: &Path, certs: &Certificates) -> BrokerProcess {
    let broker = BrokerProcess::start(
        data,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,\
             SSL://127.0.0.1:0",
            "--tls-cert-file",
            &certs.server_cert,
            "--tls-key-file",
            &certs.server_key,
            "--tls-ca-file",
            &certs.ca,
            "--tls-client-auth",
            "requested",
            "--sasl-mechanisms",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        ],
    );
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        set_user(&broker, mechanism);
    }
    broker
}

/// Sets alice's `mechanism` credential with `sluice user set` through the broker's first
/// (PLAINTEXT) listener.
fn set_user(broker: &BrokerProcess, mechanism: &str) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "user",
            "set",
            USER,
            "--mechanism",
            mechanism,
            "--password",
            PASSWORD,
        ])
        .env("SLUICE_BROKERS", &broker.bootstrap)
        .output()
        .expect("sluice user set runs");
    assert!(
        output.status.success(),
        "sluice user set: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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

/// Produces `count` records to `topic` through `config`'s listener and reads them back.
async fn round_trip(config: &ClientConfig, topic: &str, count: usize) {
    let producer: FutureProducer = config.create().expect("producer");
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
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
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

#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_over_every_security_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certificates(dir.path());
    let data = dir.path().join("data");
    let broker = secured_broker(&data, &certs);
    let listener = |name: &str| {
        broker
            .listeners
            .get(name)
            .expect("listener printed")
            .clone()
    };

    let cases: Vec<(&str, String, Security)> = vec![
        (
            "sasl-plain",
            listener("SASL_PLAINTEXT"),
            vec![
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", USER),
                ("sasl.password", PASSWORD),
            ],
        ),
        (
            "sasl-scram-256",
            listener("SASL_PLAINTEXT"),
            vec![
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", USER),
                ("sasl.password", PASSWORD),
            ],
        ),
        (
            "sasl-ssl-scram-512",
            listener("SASL_SSL"),
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", USER),
                ("sasl.password", PASSWORD),
                ("ssl.ca.location", &certs.ca),
            ],
        ),
        (
            "mtls",
            listener("SSL"),
            vec![
                ("security.protocol", "SSL"),
                ("ssl.ca.location", &certs.ca),
                ("ssl.certificate.location", &certs.client_cert),
                ("ssl.key.location", &certs.client_key),
            ],
        ),
    ];
    for (topic, addr, security) in &cases {
        eprintln!("round trip {topic} through {addr}");
        round_trip(&client_config(addr, security), topic, 50).await;
    }

    // A wrong password: librdkafka reports the broker's SASL_AUTHENTICATION_FAILED.
    let wrong: BaseConsumer = client_config(
        &listener("SASL_SSL"),
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", USER),
            ("sasl.password", "not-the-password"),
            ("ssl.ca.location", &certs.ca),
        ],
    )
    .create()
    .expect("consumer");
    let refused = wrong.fetch_metadata(None, Duration::from_secs(10));
    assert!(refused.is_err(), "a wrong password was accepted");
    drop(wrong);

    // A renewed certificate (here from another CA) is served without a restart.
    let renewed_dir = dir.path().join("renewed");
    std::fs::create_dir_all(&renewed_dir).unwrap();
    let renewed = make_certificates(&renewed_dir);
    for (from, to) in [
        (&renewed.server_key, &certs.server_key),
        (&renewed.server_cert, &certs.server_cert),
    ] {
        let staged = format!("{to}.new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
    let trusts_renewed = client_config(
        &listener("SSL"),
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &renewed.ca),
        ],
    );
    let served = common::wait_for(Duration::from_secs(30), || {
        let consumer: BaseConsumer = trusts_renewed.create().expect("consumer");
        consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .ok()
            .map(|_| ())
    });
    assert!(served.is_some(), "the renewed certificate was not served");

    let metrics = common::http::get(broker.admin.as_deref().expect("admin"), "/metrics").body;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        counter("sluice_sasl_authentications_total") >= 3.0,
        "{metrics}"
    );
    assert!(
        counter("sluice_sasl_authentication_failures_total") >= 1.0,
        "{metrics}"
    );
    broker.allow_log("SASL authentication failed");
}

#[test]
fn kafka_python_over_sasl_ssl_and_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certificates(dir.path());
    let broker = secured_broker(&dir.path().join("data"), &certs);
    let out = common::python::run_script(
        "sasl_ssl.py",
        &[
            &broker.listeners["SASL_SSL"],
            &broker.listeners["SSL"],
            &certs.ca,
            &certs.client_cert,
            &certs.client_key,
            USER,
            PASSWORD,
        ],
        Duration::from_secs(300),
    );
    assert!(out.contains("secured round trips"), "{out}");
}

/// Before authentication a SASL listener answers ApiVersions and SaslHandshake only; any
/// other request closes the connection, as in Kafka. An unknown mechanism is answered
/// UNSUPPORTED_SASL_MECHANISM with the enabled ones, then the connection closes.
#[test]
fn sasl_listener_gates_requests_until_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certificates(dir.path());
    let broker = secured_broker(&dir.path().join("data"), &certs);
    let addr = &broker.listeners["SASL_PLAINTEXT"];

    let mut client = RawClient::connect_to(addr);
    let versions = client.call(3, Request::ApiVersions(Default::default()));
    assert!(matches!(versions, sluice_net::Response::ApiVersions(v) if v.error_code == 0));
    client.send(12, &Request::Metadata(MetadataRequest::default()));
    assert!(
        client.is_closed(),
        "Metadata before authentication was served"
    );

    let mut client = RawClient::connect_to(addr);
    let handshake = client.call(
        1,
        Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: "GSSAPI".to_string(),
        }),
    );
    let sluice_net::Response::SaslHandshake(handshake) = handshake else {
        panic!("not a SaslHandshake response: {handshake:?}");
    };
    assert_eq!(
        handshake.error_code,
        sluice_net::ErrorCode::UnsupportedSaslMechanism.code()
    );
    assert_eq!(
        handshake.mechanisms,
        vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    );
    assert!(client.is_closed());

    // Before authentication a frame is at most 512 KiB (Kafka's sasl.server.max.receive.size).
    let mut client = RawClient::connect_to(addr);
    client.send_raw(&(1u32 << 20).to_be_bytes());
    assert!(
        client.is_closed(),
        "a 1 MiB frame before authentication was read"
    );

    // SaslHandshake v0 (older clients): the tokens that follow come bare, length-prefixed.
    let mut client = RawClient::connect_to(addr);
    let handshake = client.call(
        0,
        Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: "PLAIN".to_string(),
        }),
    );
    assert!(
        matches!(&handshake, sluice_net::Response::SaslHandshake(h) if h.error_code == 0),
        "{handshake:?}"
    );
    let token = format!("\0{USER}\0{PASSWORD}");
    let mut frame = (token.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(token.as_bytes());
    client.send_raw(&frame);
    let mut reply = [0u8; 4];
    std::io::Read::read_exact(client.stream(), &mut reply).expect("PLAIN's empty reply");
    assert_eq!(reply, [0, 0, 0, 0]);
    let metadata = client.call(12, Request::Metadata(MetadataRequest::default()));
    assert!(matches!(metadata, sluice_net::Response::Metadata(_)));

    // The PLAINTEXT listener serves without authentication and refuses a SASL handshake.
    let mut client = RawClient::connect_to(&broker.listeners["PLAINTEXT"]);
    let handshake = client.call(
        1,
        Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: "PLAIN".to_string(),
        }),
    );
    let sluice_net::Response::SaslHandshake(handshake) = handshake else {
        panic!("not a SaslHandshake response: {handshake:?}");
    };
    assert_eq!(
        handshake.error_code,
        sluice_net::ErrorCode::IllegalSaslState.code()
    );
}

/// KIP-368: with --sasl-session-lifetime-ms, librdkafka re-authenticates its connections
/// before their sessions end, and records keep flowing across the re-authentications.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_re_authenticated_without_losing_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            "--sasl-session-lifetime-ms",
            "2000",
        ],
    );
    set_user(&broker, "SCRAM-SHA-256");
    let config = client_config(
        &broker.listeners["SASL_PLAINTEXT"],
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", USER),
            ("sasl.password", PASSWORD),
        ],
    );
    let producer: FutureProducer = config.create().expect("producer");
    let admin = broker.admin.clone().expect("admin");
    let authentications = move || -> f64 {
        common::http::get(&admin, "/metrics")
            .body
            .lines()
            .filter(|l| l.starts_with("sluice_sasl_authentications_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Produce until the broker has seen at least three authentications more than the
    // first ones: every connection outlived its session at least once.
    let mut sent = 0;
    let mut first = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let value = format!("record-{sent}");
        producer
            .send(
                FutureRecord::<(), _>::to("reauth").payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("record {sent}: {error}"));
        sent += 1;
        let seen = authentications();
        let first = *first.get_or_insert(seen);
        if seen >= first + 3.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no re-authentication within 60 s ({seen} authentications)"
        );
    }
    eprintln!("{sent} records acknowledged across re-authentications");
}
