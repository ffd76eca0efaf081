//! Kafka's listeners: each has a name, an address, a security protocol and the address
//! clients are told to use (`listeners`, `listener.security.protocol.map`,
//! `advertised.listeners`).

use std::net::SocketAddr;
use std::time::Duration;

use super::jwt::OAuthBearerConfig;

/// How a listener's connections are secured, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Neither encrypted nor authenticated: the principal is `User:ANONYMOUS`.
    Plaintext,
    /// TLS; the principal is the client certificate's subject, else `User:ANONYMOUS`.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol named as Kafka names it (`SASL_SSL`), or None.
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Kafka's name of the protocol.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// True when connections begin with a TLS handshake.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// True when a client must authenticate with SASL before any other request.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One listener of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Its name (`PLAINTEXT`, `CLIENT`, ...), unique among the broker's listeners.
    pub name: String,
    /// Where every shard accepts its connections (SO_REUSEPORT); port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` its clients are told to connect to; None: the bound address.
    pub advertised: Option<String>,
    /// How its connections are secured.
    pub protocol: SecurityProtocol,
}

impl ListenerConfig {
    /// A PLAINTEXT listener named `PLAINTEXT` on `listen`.
    pub fn plaintext(listen: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: "PLAINTEXT".to_string(),
            listen,
            advertised: None,
            protocol: SecurityProtocol::Plaintext,
        }
    }
}

/// A SASL mechanism the broker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SaslMechanism {
    /// RFC 4616: the password in the clear (over TLS), checked against the SCRAM credentials.
    Plain,
    /// RFC 7677.
    ScramSha256,
    /// RFC 5802 with SHA-512, as Kafka has it.
    ScramSha512,
    /// RFC 7628: a JWT, checked against the keys of a JWKS file.
    OAuthBearer,
}

impl SaslMechanism {
    /// Every mechanism Sluice implements.
    pub const ALL: [SaslMechanism; 4] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
        SaslMechanism::OAuthBearer,
    ];

    /// The mechanism of this IANA name, or None.
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Its IANA name, as SaslHandshake carries it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// Whether a TLS listener asks for client certificates (`ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client may present one; it is checked against the CA file when it does.
    Requested,
    /// A client must present one the CA file vouches for.
    Required,
}

/// The TLS files of the broker's SSL and SASL_SSL listeners, read again when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the broker's own certificate first.
    pub cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// PEM certificates of the CAs that sign client certificates; needed with client auth.
    pub ca: Option<std::path::PathBuf>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
}

/// How the broker authenticates its clients.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// The TLS files; needed when a listener uses TLS.
    pub tls: Option<TlsFiles>,
    /// The mechanisms SASL listeners offer (`sasl.enabled.mechanisms`).
    pub sasl_mechanisms: Vec<SaslMechanism>,
    /// How long the answer to a failed authentication is held back
    /// (`connection.failed.authentication.delay.ms`).
    pub failed_authentication_delay: Duration,
    /// TLS handshakes one shard runs at once; more connections wait for one to end, so that a
    /// flood of handshakes cannot take a shard's CPU from its requests.
    pub tls_handshakes_per_shard_max: usize,
    /// How long a TLS handshake may take before the connection is closed.
    pub tls_handshake_timeout: Duration,
    /// How long a SASL session lasts before the client must authenticate again (KIP-368's
    /// `connections.max.reauth.ms`); None: sessions do not expire.
    pub sasl_session_lifetime: Option<Duration>,
    /// Whether and how requests are checked against the ACLs.
    pub authorizer: std::sync::Arc<super::authorizer::AuthorizerConfig>,
    /// How OAUTHBEARER tokens are validated; set when `sasl_mechanisms` has OAUTHBEARER.
    pub oauthbearer: Option<OAuthBearerConfig>,
}

impl SecurityConfig {
    /// Kafka's `connection.failed.authentication.delay.ms` default.
    pub const FAILED_AUTHENTICATION_DELAY_DEFAULT: Duration = Duration::from_millis(100);
    /// A handshake costs a shard about a millisecond of CPU (an ECDHE key exchange and a
    /// signature): 16 at once leave the shard's core to its requests between them.
    pub const TLS_HANDSHAKES_PER_SHARD_MAX_DEFAULT: usize = 16;
    /// Long enough for a client across an ocean, short enough that stalled handshakes do not
    /// hold the handshake slots.
    pub const TLS_HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls: None,
            sasl_mechanisms: vec![SaslMechanism::ScramSha256, SaslMechanism::ScramSha512],
            failed_authentication_delay: Self::FAILED_AUTHENTICATION_DELAY_DEFAULT,
            tls_handshakes_per_shard_max: Self::TLS_HANDSHAKES_PER_SHARD_MAX_DEFAULT,
            tls_handshake_timeout: Self::TLS_HANDSHAKE_TIMEOUT_DEFAULT,
            sasl_session_lifetime: None,
            authorizer: Default::default(),
            oauthbearer: None,
        }
    }
}

/// Parses Kafka's `listeners` (`NAME://HOST:PORT,...`) with its protocol map
/// (`NAME:PROTOCOL,...`; a listener named after a protocol needs no entry) and
/// `advertised.listeners`. Errors name the flag and the entry at fault.
pub fn parse_listeners(
    listeners: &str,
    protocol_map: Option<&str>,
    advertised: Option<&str>,
) -> Result<Vec<ListenerConfig>, String> {
    let mut map = Vec::new();
    for entry in protocol_map
        .unwrap_or("")
        .split(',')
        .filter(|e| !e.is_empty())
    {
        let (name, protocol) = entry.split_once(':').ok_or_else(|| {
            format!("--listener-security-protocol-map entry {entry:?} is not NAME:PROTOCOL")
        })?;
        let protocol = SecurityProtocol::from_name(protocol).ok_or_else(|| {
            format!(
                "--listener-security-protocol-map: {protocol:?} is not PLAINTEXT, SSL, \
                 SASL_PLAINTEXT or SASL_SSL"
            )
        })?;
        map.push((name.to_string(), protocol));
    }
    let mut parsed: Vec<ListenerConfig> = Vec::new();
    for entry in listeners.split(',').filter(|e| !e.is_empty()) {
        let (name, address) = split_listener(entry, "--listeners")?;
        let listen: SocketAddr = address.parse().map_err(|_| {
            format!("--listeners entry {entry:?}: {address:?} is not IP:PORT (use 0.0.0.0 for all)")
        })?;
        let protocol = map
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .or_else(|| SecurityProtocol::from_name(name))
            .ok_or_else(|| {
                format!(
                    "listener {name:?} has no security protocol: name it after one or map it \
                     with --listener-security-protocol-map {name}:PROTOCOL"
                )
            })?;
        if parsed.iter().any(|l| l.name == name) {
            return Err(format!("--listeners names {name:?} twice"));
        }
        if parsed
            .iter()
            .any(|l| l.listen.port() == listen.port() && listen.port() != 0)
        {
            return Err(format!("--listeners uses port {} twice", listen.port()));
        }
        parsed.push(ListenerConfig {
            name: name.to_string(),
            listen,
            advertised: None,
            protocol,
        });
    }
    if parsed.is_empty() {
        return Err("--listeners names no listener".to_string());
    }
    for (name, _) in &map {
        if !parsed.iter().any(|l| &l.name == name) {
            return Err(format!(
                "--listener-security-protocol-map maps {name:?}, which --listeners does not name"
            ));
        }
    }
    for entry in advertised
        .unwrap_or("")
        .split(',')
        .filter(|e| !e.is_empty())
    {
        let (name, address) = split_listener(entry, "--advertised-listeners")?;
        if address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!(
                "--advertised-listeners entry {entry:?}: {address:?} is not HOST:PORT"
            ));
        }
        let listener = parsed.iter_mut().find(|l| l.name == name).ok_or_else(|| {
            format!("--advertised-listeners names {name:?}, which --listeners does not name")
        })?;
        listener.advertised = Some(address.to_string());
    }
    Ok(parsed)
}

fn split_listener<'a>(entry: &'a str, flag: &str) -> Result<(&'a str, &'a str), String> {
    entry
        .split_once("://")
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("{flag} entry {entry:?} is not NAME://HOST:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_as_kafka_writes_them() {
        let listeners = parse_listeners(
            "PLAINTEXT://127.0.0.1:9092,CLIENT://0.0.0.0:9093",
            Some("CLIENT:SASL_SSL"),
            Some("CLIENT://broker.example:19093"),
        )
        .expect("valid");
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(listeners[0].advertised, None);
        assert_eq!(listeners[1].name, "CLIENT");
        assert_eq!(listeners[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            listeners[1].advertised.as_deref(),
            Some("broker.example:19093")
        );
    }

    #[test]
    fn bad_listeners_are_refused_naming_the_entry() {
        let cases = [
            (
                "CLIENT://127.0.0.1:9093",
                None,
                None,
                "no security protocol",
            ),
            ("PLAINTEXT:9092", None, None, "NAME://HOST:PORT"),
            ("PLAINTEXT://localhost:9092", None, None, "IP:PORT"),
            ("SSL://127.0.0.1:1,SSL://127.0.0.1:2", None, None, "twice"),
            (
                "SSL://127.0.0.1:1,SASL_SSL://127.0.0.1:1",
                None,
                None,
                "port 1 twice",
            ),
            ("SSL://127.0.0.1:1", Some("X:SSL"), None, "\"X\""),
            ("SSL://127.0.0.1:1", Some("SSL:TLS"), None, "\"TLS\""),
            ("SSL://127.0.0.1:1", None, Some("OTHER://h:1"), "\"OTHER\""),
            ("SSL://127.0.0.1:1", None, Some("SSL://h"), "HOST:PORT"),
            ("", None, None, "no listener"),
        ];
        for (listeners, map, advertised, expected) in cases {
            let error = parse_listeners(listeners, map, advertised).expect_err(listeners);
            assert!(error.contains(expected), "{listeners}: {error}");
        }
    }
}
