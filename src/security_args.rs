//! `sluice start`'s listener and security flags (Kafka's `listeners`,
//! `listener.security.protocol.map`, `advertised.listeners`, `ssl.*` and `sasl.*`), merged
//! with the config file's keys of the same names and checked before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;
use sluice_shards::config::BrokerConfig;
use sluice_shards::security::{
    AuthorizerConfig, ClientAuth, ListenerConfig, OAuthBearerConfig, SaslMechanism, SecurityConfig,
    TlsFiles, parse_listeners,
};

/// The flags; each also comes from the environment (`SLUICE_` + its name) or the config file.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityArgs {
    /// Kafka's listeners, NAME://IP:PORT,... (each with its own security protocol; the first
    /// is the one a cluster's brokers register). Instead of --listen, e.g.
    /// PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093
    #[arg(
        long,
        env = "SLUICE_LISTENERS",
        value_name = "NAME://IP:PORT,...",
        conflicts_with = "listen"
    )]
    pub listeners: Option<String>,
    /// The security protocol of each listener not named after one, NAME:PROTOCOL,...
    /// (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), e.g. CLIENT:SASL_SSL
    #[arg(
        long,
        env = "SLUICE_LISTENER_SECURITY_PROTOCOL_MAP",
        value_name = "NAME:PROTOCOL,..."
    )]
    pub listener_security_protocol_map: Option<String>,
    /// The address clients of each listener are told to connect to, NAME://HOST:PORT,...
    /// (--advertised-address sets the first listener's). [default: each listener's bound
    /// address]
    #[arg(
        long,
        env = "SLUICE_ADVERTISED_LISTENERS",
        value_name = "NAME://HOST:PORT,..."
    )]
    pub advertised_listeners: Option<String>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners, read again when it changes.
    #[arg(long, env = "SLUICE_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate, read again when it changes.
    #[arg(long, env = "SLUICE_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificates of the CAs that sign client certificates (ssl.truststore), for
    /// --tls-client-auth.
    #[arg(long, env = "SLUICE_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Whether clients of SSL listeners present a certificate (ssl.client.auth): none,
    /// requested or required; as in Kafka, not asked of SASL_SSL clients. Its subject names
    /// the client: User:CN=...,OU=... [default: none]
    #[arg(
        long,
        env = "SLUICE_TLS_CLIENT_AUTH",
        value_name = "none|requested|required"
    )]
    pub tls_client_auth: Option<String>,
    /// TLS handshakes one shard runs at once; more connections wait. [default: 16]
    #[arg(long, env = "SLUICE_TLS_HANDSHAKES_MAX", value_name = "N")]
    pub tls_handshakes_max: Option<usize>,
    /// The SASL mechanisms of SASL listeners (sasl.enabled.mechanisms): PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512, OAUTHBEARER. Users are SCRAM credentials (`sluice user`); PLAIN checks a
    /// password against them; OAUTHBEARER takes JWTs signed by a key of
    /// --sasl-oauthbearer-jwks-file. [default: SCRAM-SHA-256,SCRAM-SHA-512]
    #[arg(long, env = "SLUICE_SASL_MECHANISMS", value_name = "MECHANISM,...")]
    pub sasl_mechanisms: Option<String>,
    /// A SASL session ends after this long: the client re-authenticates (KIP-368,
    /// connections.max.reauth.ms) or is disconnected; 0: sessions last. [default: 0]
    #[arg(long, env = "SLUICE_SASL_SESSION_LIFETIME_MS", value_name = "MS")]
    pub sasl_session_lifetime_ms: Option<u64>,
    /// How long the answer to a failed authentication is held back before the connection
    /// closes (connection.failed.authentication.delay.ms). [default: 100]
    #[arg(long, env = "SLUICE_FAILED_AUTHENTICATION_DELAY_MS", value_name = "MS")]
    pub failed_authentication_delay_ms: Option<u64>,
    /// How requests are authorized (authorizer.class.name): none lets every client do
    /// anything; acl checks each against the ACLs (CreateAcls, kafka-acls.sh), as Kafka's
    /// StandardAuthorizer. [default: none]
    #[arg(long, env = "SLUICE_AUTHORIZER", value_name = "none|acl")]
    pub authorizer: Option<String>,
    /// Principals allowed everything whatever the ACLs say (super.users), separated by
    /// semicolons, e.g. User:admin;User:CN=ops. Without SASL or TLS a client is User:ANONYMOUS.
    #[arg(long, env = "SLUICE_SUPER_USERS", value_name = "PRINCIPAL;...")]
    pub super_users: Option<String>,
    /// true: a resource with no ACL is open to every client; false: only to super users
    /// (allow.everyone.if.no.acl.found). [default: false]
    #[arg(
        long,
        env = "SLUICE_ALLOW_EVERYONE_IF_NO_ACL_FOUND",
        value_name = "true|false"
    )]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// The JWKS file (RFC 7517) of the public keys OAUTHBEARER tokens are signed with, read
    /// again when it changes (sasl.oauthbearer.jwks.endpoint.url with a file). Needed with
    /// OAUTHBEARER.
    #[arg(long, env = "SLUICE_SASL_OAUTHBEARER_JWKS_FILE", value_name = "FILE")]
    pub sasl_oauthbearer_jwks_file: Option<PathBuf>,
    /// How far the broker's clock and the token issuer's may disagree when exp, nbf and iat
    /// are checked (sasl.oauthbearer.clock.skew.seconds). [default: 30]
    #[arg(
        long,
        env = "SLUICE_SASL_OAUTHBEARER_CLOCK_SKEW_SECONDS",
        value_name = "SECONDS"
    )]
    pub sasl_oauthbearer_clock_skew_seconds: Option<u64>,
    /// A token's aud must name one of these (sasl.oauthbearer.expected.audience); without
    /// it, as in Kafka, a token with an aud claim is refused. [default: none]
    #[arg(
        long,
        env = "SLUICE_SASL_OAUTHBEARER_EXPECTED_AUDIENCE",
        value_name = "AUDIENCE,..."
    )]
    pub sasl_oauthbearer_expected_audience: Option<String>,
    /// A token's iss must be this (sasl.oauthbearer.expected.issuer). [default: any]
    #[arg(
        long,
        env = "SLUICE_SASL_OAUTHBEARER_EXPECTED_ISSUER",
        value_name = "ISSUER"
    )]
    pub sasl_oauthbearer_expected_issuer: Option<String>,
    /// The token claim that names the principal, User:<value>
    /// (sasl.oauthbearer.sub.claim.name). [default: sub]
    #[arg(
        long,
        env = "SLUICE_SASL_OAUTHBEARER_SUB_CLAIM_NAME",
        value_name = "CLAIM"
    )]
    pub sasl_oauthbearer_sub_claim_name: Option<String>,
}

impl SecurityArgs {
    /// Each flag, else the file's value.
    pub fn or(self, file: SecurityArgs) -> SecurityArgs {
        SecurityArgs {
            listeners: self.listeners.or(file.listeners),
            listener_security_protocol_map: self
                .listener_security_protocol_map
                .or(file.listener_security_protocol_map),
            advertised_listeners: self.advertised_listeners.or(file.advertised_listeners),
            tls_cert_file: self.tls_cert_file.or(file.tls_cert_file),
            tls_key_file: self.tls_key_file.or(file.tls_key_file),
            tls_ca_file: self.tls_ca_file.or(file.tls_ca_file),
            tls_client_auth: self.tls_client_auth.or(file.tls_client_auth),
            tls_handshakes_max: self.tls_handshakes_max.or(file.tls_handshakes_max),
            sasl_mechanisms: self.sasl_mechanisms.or(file.sasl_mechanisms),
            sasl_session_lifetime_ms: self
                .sasl_session_lifetime_ms
                .or(file.sasl_session_lifetime_ms),
            failed_authentication_delay_ms: self
                .failed_authentication_delay_ms
                .or(file.failed_authentication_delay_ms),
            authorizer: self.authorizer.or(file.authorizer),
            super_users: self.super_users.or(file.super_users),
            allow_everyone_if_no_acl_found: self
                .allow_everyone_if_no_acl_found
                .or(file.allow_everyone_if_no_acl_found),
            sasl_oauthbearer_jwks_file: self
                .sasl_oauthbearer_jwks_file
                .or(file.sasl_oauthbearer_jwks_file),
            sasl_oauthbearer_clock_skew_seconds: self
                .sasl_oauthbearer_clock_skew_seconds
                .or(file.sasl_oauthbearer_clock_skew_seconds),
            sasl_oauthbearer_expected_audience: self
                .sasl_oauthbearer_expected_audience
                .or(file.sasl_oauthbearer_expected_audience),
            sasl_oauthbearer_expected_issuer: self
                .sasl_oauthbearer_expected_issuer
                .or(file.sasl_oauthbearer_expected_issuer),
            sasl_oauthbearer_sub_claim_name: self
                .sasl_oauthbearer_sub_claim_name
                .or(file.sasl_oauthbearer_sub_claim_name),
        }
    }

    /// Sets `config`'s listeners and security; `listen` and `advertised` are the one-listener
    /// flags (`--listen`, `--advertised-address`), which `--listeners` replaces. A setting that
    /// would do nothing (TLS files without a TLS listener, SASL mechanisms without a SASL
    /// listener) is refused, as is one that cannot work.
    pub fn apply(
        self,
        listen: Option<SocketAddr>,
        advertised: Option<String>,
        config: &mut BrokerConfig,
    ) -> anyhow::Result<()> {
        if self.listeners.is_some() && listen.is_some() {
            bail!("--listen and --listeners both name listeners: use one");
        }
        let authorizer = Arc::new(self.authorizer_config()?);
        config.listeners = match &self.listeners {
            Some(listeners) => {
                let mut parsed = parse_listeners(
                    listeners,
                    self.listener_security_protocol_map.as_deref(),
                    self.advertised_listeners.as_deref(),
                )
                .map_err(anyhow::Error::msg)?;
                // The one-listener flag keeps its meaning for the first listener (the
                // container image sets --listeners, and users set SLUICE_ADVERTISED_ADDRESS).
                if let Some(advertised) = advertised {
                    if parsed[0].advertised.is_some() {
                        bail!(
                            "--advertised-address and --advertised-listeners both set listener \
                             {:?}'s address",
                            parsed[0].name
                        );
                    }
                    parsed[0].advertised = Some(advertised);
                }
                parsed
            }
            None => {
                if self.listener_security_protocol_map.is_some() {
                    bail!("--listener-security-protocol-map needs --listeners");
                }
                if self.advertised_listeners.is_some() {
                    bail!("--advertised-listeners needs --listeners");
                }
                let mut listener =
                    ListenerConfig::plaintext(listen.unwrap_or(config.listeners[0].listen));
                listener.advertised = advertised;
                vec![listener]
            }
        };
        if config.quorum.is_some() && config.listeners.len() > 1 {
            // A broker registers one endpoint in the quorum; other listeners' addresses could
            // not be told to clients of other brokers.
            bail!(
                "--listeners with more than one listener is not supported with --controller-quorum-voters yet"
            );
        }
        let uses_tls = config.listeners.iter().any(|l| l.protocol.uses_tls());
        let uses_sasl = config.listeners.iter().any(|l| l.protocol.uses_sasl());
        let mut security = SecurityConfig::default();
        let client_auth = match self.tls_client_auth.as_deref() {
            None | Some("none") => ClientAuth::None,
            Some("requested") => ClientAuth::Requested,
            Some("required") => ClientAuth::Required,
            Some(other) => {
                bail!("--tls-client-auth must be none, requested or required, not {other:?}")
            }
        };
        security.tls = match (self.tls_cert_file.clone(), self.tls_key_file.clone()) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                ca: self.tls_ca_file.clone(),
                client_auth,
            }),
            (None, None) => None,
            _ => bail!("--tls-cert-file and --tls-key-file go together"),
        };
        match &security.tls {
            Some(files) => {
                if !uses_tls {
                    bail!("--tls-cert-file is set but no listener is SSL or SASL_SSL");
                }
                let ssl = config
                    .listeners
                    .iter()
                    .any(|l| l.protocol == sluice_shards::security::SecurityProtocol::Ssl);
                if client_auth != ClientAuth::None && !ssl {
                    bail!(
                        "--tls-client-auth applies to SSL listeners (as in Kafka, SASL_SSL \
                         clients are not asked for certificates), and no listener is SSL"
                    );
                }
                if files.ca.is_some() && client_auth == ClientAuth::None {
                    bail!("--tls-ca-file needs --tls-client-auth requested or required");
                }
                sluice_shards::security::load_server_config(files).map_err(anyhow::Error::msg)?;
            }
            None => {
                if uses_tls {
                    bail!("an SSL or SASL_SSL listener needs --tls-cert-file and --tls-key-file");
                }
                if self.tls_ca_file.is_some() || self.tls_client_auth.is_some() {
                    bail!(
                        "--tls-ca-file and --tls-client-auth need --tls-cert-file and --tls-key-file"
                    );
                }
            }
        }
        if let Some(handshakes) = self.tls_handshakes_max {
            if !uses_tls {
                bail!("--tls-handshakes-max is set but no listener is SSL or SASL_SSL");
            }
            if handshakes == 0 {
                bail!("--tls-handshakes-max must be at least 1");
            }
            security.tls_handshakes_per_shard_max = handshakes;
        }
        if let Some(mechanisms) = &self.sasl_mechanisms {
            security.sasl_mechanisms = parse_mechanisms(mechanisms)?;
        }
        if !uses_sasl
            && (self.sasl_mechanisms.is_some()
                || self.sasl_session_lifetime_ms.is_some()
                || self.failed_authentication_delay_ms.is_some())
        {
            bail!(
                "--sasl-mechanisms, --sasl-session-lifetime-ms and \
                 --failed-authentication-delay-ms need a SASL_PLAINTEXT or SASL_SSL listener"
            );
        }
        security.sasl_session_lifetime = self
            .sasl_session_lifetime_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        if let Some(ms) = self.failed_authentication_delay_ms {
            security.failed_authentication_delay = Duration::from_millis(ms);
        }
        security.authorizer = authorizer;
        let oauthbearer = security
            .sasl_mechanisms
            .contains(&SaslMechanism::OAuthBearer)
            && uses_sasl;
        security.oauthbearer = self.oauthbearer(oauthbearer)?;
        config.security = security;
        Ok(())
    }
}

impl SecurityArgs {
    /// The authorizer's settings; super users or the no-ACL rule without `--authorizer acl`
    /// would do nothing, so they are refused.
    fn authorizer_config(&self) -> anyhow::Result<AuthorizerConfig> {
        let enabled = match self
            .authorizer
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("none") => false,
            Some("acl") => true,
            Some(other) => bail!("--authorizer: {other:?} is not none or acl"),
        };
        if !enabled && (self.super_users.is_some() || self.allow_everyone_if_no_acl_found.is_some())
        {
            bail!("--super-users and --allow-everyone-if-no-acl-found need --authorizer acl");
        }
        let mut super_users = Vec::new();
        for principal in self.super_users.iter().flat_map(|list| list.split(';')) {
            let principal = principal.trim();
            if principal.is_empty() {
                continue;
            }
            if !principal.contains(':') {
                bail!("--super-users: {principal:?} is not a principal TYPE:NAME, e.g. User:admin");
            }
            super_users.push(principal.to_string());
        }
        Ok(AuthorizerConfig {
            enabled,
            super_users,
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found.unwrap_or(false),
        })
    }

    /// The OAUTHBEARER settings, when SASL listeners offer it (`offered`); refused when they
    /// do not, and needed (the JWKS file) when they do. The JWKS file is read here, so that a
    /// file without a usable key stops the start.
    fn oauthbearer(&self, offered: bool) -> anyhow::Result<Option<OAuthBearerConfig>> {
        let set = self.sasl_oauthbearer_jwks_file.is_some()
            || self.sasl_oauthbearer_clock_skew_seconds.is_some()
            || self.sasl_oauthbearer_expected_audience.is_some()
            || self.sasl_oauthbearer_expected_issuer.is_some()
            || self.sasl_oauthbearer_sub_claim_name.is_some();
        if !offered {
            if set {
                bail!(
                    "--sasl-oauthbearer-* flags need OAUTHBEARER in --sasl-mechanisms and a \
                     SASL_PLAINTEXT or SASL_SSL listener"
                );
            }
            return Ok(None);
        }
        let Some(jwks_file) = self.sasl_oauthbearer_jwks_file.clone() else {
            bail!("OAUTHBEARER in --sasl-mechanisms needs --sasl-oauthbearer-jwks-file");
        };
        let list = |value: &Option<String>| -> Vec<String> {
            value
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        let expected_audiences = list(&self.sasl_oauthbearer_expected_audience);
        if self.sasl_oauthbearer_expected_audience.is_some() && expected_audiences.is_empty() {
            bail!("--sasl-oauthbearer-expected-audience names no audience");
        }
        let expected_issuer = self.sasl_oauthbearer_expected_issuer.clone();
        if expected_issuer
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            bail!("--sasl-oauthbearer-expected-issuer is empty");
        }
        let sub_claim_name = match &self.sasl_oauthbearer_sub_claim_name {
            Some(name) if name.trim().is_empty() => {
                bail!("--sasl-oauthbearer-sub-claim-name is empty")
            }
            Some(name) => name.trim().to_string(),
            None => OAuthBearerConfig::SUB_CLAIM_NAME_DEFAULT.to_string(),
        };
        let config = OAuthBearerConfig {
            jwks_file,
            clock_skew: self
                .sasl_oauthbearer_clock_skew_seconds
                .map_or(OAuthBearerConfig::CLOCK_SKEW_DEFAULT, Duration::from_secs),
            expected_audiences,
            expected_issuer,
            sub_claim_name,
        };
        sluice_shards::security::jwks::load(&config.jwks_file).map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

fn parse_mechanisms(list: &str) -> anyhow::Result<Vec<SaslMechanism>> {
    let mut mechanisms = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(mechanism) = SaslMechanism::from_name(&name.to_ascii_uppercase()) else {
            bail!(
                "--sasl-mechanisms: {name:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, \
                 OAUTHBEARER (GSSAPI is not supported yet)"
            );
        };
        if !mechanisms.contains(&mechanism) {
            mechanisms.push(mechanism);
        }
    }
    if mechanisms.is_empty() {
        bail!("--sasl-mechanisms names no mechanism");
    }
    Ok(mechanisms)
}
