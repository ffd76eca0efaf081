//! A connection's authentication: who the client is (its principal) and, on a SASL listener,
//! the SaslHandshake / SaslAuthenticate exchange that must come before any other request
//! but ApiVersions (Kafka's `SaslServerAuthenticator`), including KIP-368's
//! re-authentication.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sluice_metadata::{ScramCredential, ScramMechanism};
use sluice_net::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use sluice_net::messages::sasl_handshake_response::SaslHandshakeResponse;
use sluice_net::{ApiKey, ErrorCode, Request, RequestHeader, Response};

use super::listener::{SaslMechanism, SecurityProtocol};
use super::oauthbearer::{self, ERROR_ACKNOWLEDGEMENT, INVALID_TOKEN_CHALLENGE};
use super::scram::ScramServerFirst;
use crate::shard::Shard;

/// Kafka's `sasl.server.max.receive.size`: until a SASL client has authenticated, its frames
/// may be at most this large, so that anyone who can connect cannot make the broker read
/// frames of `--max-request-size`.
pub const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 512 * 1024;

/// The principal of a client that did not authenticate (PLAINTEXT, SSL without a client
/// certificate), as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Where a SASL exchange stands.
enum SaslState {
    /// Not a SASL listener: the principal is set once, at accept.
    None,
    /// Waiting for SaslHandshake (only ApiVersions may come before it).
    Handshake,
    /// The mechanism is chosen; waiting for the first SaslAuthenticate.
    Authenticate(SaslMechanism),
    /// SCRAM: server-first was sent; waiting for client-final.
    ScramFinal(ScramMechanism, Box<ScramServerFirst>),
    /// OAUTHBEARER: the token did not validate and the error challenge was sent; waiting for
    /// the client's `%x01`, after which the authentication fails.
    OAuthBearerError,
    /// Authenticated, with `mechanism`; the session ends at `expires_at`, if any.
    Done {
        mechanism: SaslMechanism,
        expires_at: Option<Instant>,
    },
}

/// What the connection does with one request.
pub enum Verdict {
    /// The request goes to its handler as usual.
    Dispatch,
    /// The session answered it (a SASL request).
    Answer(Response),
    /// Answer after `delay`, then close the connection (a failed authentication).
    AnswerAndClose(Response, Duration),
    /// Close the connection without an answer, as Kafka does.
    Close(&'static str),
}

/// One connection's authentication.
pub struct Session {
    protocol: SecurityProtocol,
    state: SaslState,
    principal: Rc<str>,
    /// Set by the first successful SASL authentication: later ones are re-authentications.
    authenticated: bool,
    /// Set by a v0 SaslHandshake: the exchange's tokens come bare.
    raw_tokens: bool,
}

impl Session {
    /// A connection accepted on a listener of `protocol`; `tls_principal` is the principal
    /// of its client certificate, if it presented one.
    pub fn new(protocol: SecurityProtocol, tls_principal: Option<String>) -> Session {
        let state = if protocol.uses_sasl() {
            SaslState::Handshake
        } else {
            SaslState::None
        };
        Session {
            protocol,
            state,
            principal: tls_principal
                .unwrap_or_else(|| ANONYMOUS.to_string())
                .into(),
            authenticated: false,
            raw_tokens: false,
        }
    }

    /// The client's principal (`User:NAME`); `User:ANONYMOUS` until a SASL client has
    /// authenticated.
    pub fn principal(&self) -> &Rc<str> {
        &self.principal
    }

    /// The largest frame the connection reads now: `configured`, or
    /// [`UNAUTHENTICATED_FRAME_BYTES_MAX`] before a SASL client has authenticated.
    pub fn frame_bytes_max(&self, configured: usize) -> usize {
        match self.state {
            SaslState::None | SaslState::Done { .. } => configured,
            _ => configured.min(UNAUTHENTICATED_FRAME_BYTES_MAX),
        }
    }

    /// True when a request of `api_key` can go straight to its handler: the hot path
    /// decodes nothing more for it.
    pub fn passes(&self, api_key: Option<i16>, now: Instant) -> bool {
        let sasl_api = api_key.is_some_and(|k| {
            k == ApiKey::SaslHandshake as i16 || k == ApiKey::SaslAuthenticate as i16
        });
        !sasl_api && self.open(now)
    }

    /// True when any request may be served: not a SASL listener, or a session that has not
    /// expired.
    fn open(&self, now: Instant) -> bool {
        match &self.state {
            SaslState::None => true,
            SaslState::Done { expires_at, .. } => expires_at.is_none_or(|expiry| now < expiry),
            _ => false,
        }
    }

    /// What to do with a request that [`Session::passes`] did not let through.
    pub fn decide(
        &mut self,
        shard: &Shard,
        header: &RequestHeader,
        request: Request,
        now: Instant,
    ) -> Verdict {
        match request {
            Request::SaslHandshake(handshake) => {
                self.handshake(shard, header.request_api_version, &handshake.mechanism)
            }
            Request::SaslAuthenticate(authenticate) => self.authenticate(
                shard,
                header.request_api_version,
                authenticate.auth_bytes,
                now,
            ),
            request => {
                let api_versions = matches!(request, Request::ApiVersions(_));
                // Kafka lets a client ask for versions before it authenticates, to learn
                // which SaslHandshake it may send.
                if self.open(now) || (api_versions && matches!(self.state, SaslState::Handshake)) {
                    Verdict::Dispatch
                } else if matches!(self.state, SaslState::Done { .. }) {
                    Verdict::Close("the SASL session expired")
                } else if api_versions {
                    Verdict::Close("a request in the middle of a SASL exchange")
                } else {
                    Verdict::Close("a request before SASL authentication")
                }
            }
        }
    }

    fn handshake(&mut self, shard: &Shard, version: i16, mechanism: &str) -> Verdict {
        let enabled = &shard.config.security.sasl_mechanisms;
        let mechanisms = enabled.iter().map(|m| m.name().to_string()).collect();
        let answer = |code: ErrorCode, mechanisms| {
            Response::SaslHandshake(SaslHandshakeResponse {
                error_code: code.code(),
                mechanisms,
            })
        };
        let reauthenticating = match &self.state {
            SaslState::Handshake => None,
            SaslState::Done {
                mechanism,
                expires_at: Some(_),
            } => Some(*mechanism),
            // A handshake on a listener without SASL, or twice in one exchange, or again
            // while sessions do not expire: Kafka's ILLEGAL_SASL_STATE.
            _ => return Verdict::Answer(answer(ErrorCode::IllegalSaslState, mechanisms)),
        };
        let chosen = SaslMechanism::from_name(mechanism).filter(|m| enabled.contains(m));
        match chosen {
            // KIP-368: a re-authentication keeps the mechanism of the first.
            Some(chosen) if reauthenticating.is_none_or(|first| first == chosen) => {
                self.state = SaslState::Authenticate(chosen);
                self.raw_tokens = version == 0;
                Verdict::Answer(answer(ErrorCode::None, mechanisms))
            }
            _ => {
                shard.metrics.sasl_authentication_failures.add(1);
                Verdict::AnswerAndClose(
                    answer(ErrorCode::UnsupportedSaslMechanism, mechanisms),
                    Duration::ZERO,
                )
            }
        }
    }

    fn authenticate(&mut self, shard: &Shard, version: i16, bytes: Bytes, now: Instant) -> Verdict {
        if self.raw_tokens {
            // After a v0 handshake the tokens come bare, not in SaslAuthenticate.
            return Verdict::Close("SaslAuthenticate after a v0 SaslHandshake");
        }
        match self.exchange(shard, bytes, now) {
            Exchange::Continue(reply) => {
                Verdict::Answer(authenticate_response(ErrorCode::None, None, reply, 0))
            }
            Exchange::Done(reply, lifetime) => {
                // SessionLifetimeMs is in v1+; a v0 client is never asked to re-authenticate,
                // and its session is closed at expiry as Kafka does.
                let lifetime_ms = match lifetime {
                    Some(l) if version >= 1 => i64::try_from(l.as_millis()).unwrap_or(i64::MAX),
                    _ => 0,
                };
                Verdict::Answer(authenticate_response(
                    ErrorCode::None,
                    None,
                    reply,
                    lifetime_ms,
                ))
            }
            Exchange::Failed(message) => Verdict::AnswerAndClose(
                authenticate_response(
                    ErrorCode::SaslAuthenticationFailed,
                    Some(message.to_string()),
                    Bytes::new(),
                    0,
                ),
                shard.config.security.failed_authentication_delay,
            ),
            Exchange::Illegal => Verdict::Answer(authenticate_response(
                ErrorCode::IllegalSaslState,
                Some("SaslAuthenticate before SaslHandshake".to_string()),
                Bytes::new(),
                0,
            )),
        }
    }

    /// True when the next frame is a bare SASL token (Kafka's framing of SaslHandshake v0:
    /// a 4-byte length and the token, no request header).
    pub fn takes_raw_token(&self) -> bool {
        self.raw_tokens
            && matches!(
                self.state,
                SaslState::Authenticate(_)
                    | SaslState::ScramFinal(..)
                    | SaslState::OAuthBearerError
            )
    }

    /// Runs a bare token through the exchange: the bare token to answer with, or how long to
    /// wait before closing the connection (a failure: v0 has no error to send).
    pub fn raw_token(
        &mut self,
        shard: &Shard,
        token: Bytes,
        now: Instant,
    ) -> Result<Bytes, Duration> {
        match self.exchange(shard, token, now) {
            Exchange::Continue(reply) | Exchange::Done(reply, _) => Ok(reply),
            Exchange::Failed(_) => Err(shard.config.security.failed_authentication_delay),
            Exchange::Illegal => Err(Duration::ZERO),
        }
    }

    /// One step of the chosen mechanism with the client's `bytes`.
    fn exchange(&mut self, shard: &Shard, bytes: Bytes, now: Instant) -> Exchange {
        let state = std::mem::replace(&mut self.state, SaslState::Handshake);
        let lookup = |user: &str, mechanism: ScramMechanism| -> Option<ScramCredential> {
            shard.image().scram_credential(user, mechanism).cloned()
        };
        let result = match state {
            SaslState::Authenticate(SaslMechanism::Plain) => check_plain(&bytes, lookup)
                .map(|user| Authenticated::of(user, Bytes::new(), SaslMechanism::Plain))
                .map_err(Refusal::credentials),
            SaslState::Authenticate(SaslMechanism::OAuthBearer) => {
                match check_oauthbearer(shard, &bytes) {
                    Ok(authenticated) => Ok(authenticated),
                    Err(OAuthBearerRefusal::InvalidToken(why)) => {
                        // Kafka's OAuthBearerSaslServer answers with the error as a challenge;
                        // the authentication fails (and is counted) at the client's %x01.
                        let protocol = self.protocol.name();
                        tracing::info!(%why, protocol, "OAUTHBEARER token refused");
                        self.state = SaslState::OAuthBearerError;
                        return Exchange::Continue(Bytes::from_static(
                            INVALID_TOKEN_CHALLENGE.as_bytes(),
                        ));
                    }
                    Err(OAuthBearerRefusal::Failed(refusal)) => Err(refusal),
                }
            }
            SaslState::Authenticate(mechanism) => {
                let scram = scram_of(mechanism);
                match ScramServerFirst::start(scram, &bytes, |user| lookup(user, scram)) {
                    Ok(first) => {
                        let server_first = Bytes::copy_from_slice(first.server_first());
                        self.state = SaslState::ScramFinal(scram, Box::new(first));
                        return Exchange::Continue(server_first);
                    }
                    Err(error) => Err(Refusal::credentials(error.to_string())),
                }
            }
            SaslState::ScramFinal(scram, first) => {
                let user = first.user().to_string();
                first
                    .finish(&bytes)
                    .map(|server_final| {
                        Authenticated::of(user, Bytes::from(server_final), mechanism_of(scram))
                    })
                    .map_err(|e| Refusal::credentials(e.to_string()))
            }
            // Kafka would take anything but %x01 as a new initial response; Sluice fails the
            // exchange instead, so that a client cannot try token after token without the
            // failed-authentication delay.
            SaslState::OAuthBearerError => Err(Refusal {
                why: if *bytes == *ERROR_ACKNOWLEDGEMENT {
                    "invalid token".to_string()
                } else {
                    "another message after the error challenge".to_string()
                },
                message: INVALID_TOKEN_CHALLENGE,
            }),
            other => {
                self.state = other;
                return Exchange::Illegal;
            }
        };
        let authenticated = match result {
            Ok(done) => done,
            Err(Refusal { why, message }) => {
                shard.metrics.sasl_authentication_failures.add(1);
                tracing::info!(%why, protocol = self.protocol.name(), "SASL authentication failed");
                return Exchange::Failed(message);
            }
        };
        let principal = format!("User:{}", authenticated.user);
        if self.authenticated && *self.principal != *principal {
            // KIP-368: a session may not change hands.
            shard.metrics.sasl_authentication_failures.add(1);
            tracing::info!(principal = %self.principal, "SASL re-authentication as another principal");
            return Exchange::Failed("re-authentication as another principal");
        }
        let lifetime = session_lifetime(
            shard.config.security.sasl_session_lifetime,
            authenticated.credential_expires_at,
            SystemTime::now(),
        );
        let mechanism = authenticated.mechanism;
        self.state = SaslState::Done {
            mechanism,
            expires_at: lifetime.map(|l| now + l),
        };
        self.principal = principal.into();
        self.authenticated = true;
        self.raw_tokens = false;
        shard.metrics.sasl_authentications.add(1);
        tracing::debug!(principal = %self.principal, mechanism = mechanism.name(), "authenticated");
        Exchange::Done(authenticated.reply, lifetime)
    }
}

/// A mechanism's successful end.
struct Authenticated {
    /// The user the principal names.
    user: String,
    /// The server's last message.
    reply: Bytes,
    mechanism: SaslMechanism,
    /// When the credential stops being valid (an OAUTHBEARER token's `exp`), if it does.
    credential_expires_at: Option<SystemTime>,
}

impl Authenticated {
    fn of(user: String, reply: Bytes, mechanism: SaslMechanism) -> Authenticated {
        Authenticated {
            user,
            reply,
            mechanism,
            credential_expires_at: None,
        }
    }
}

/// A mechanism's refusal.
struct Refusal {
    /// Why, for the broker's log.
    why: String,
    /// What the client is told.
    message: &'static str,
}

impl Refusal {
    /// Kafka's message for PLAIN and SCRAM: it names neither the user nor what was wrong.
    fn credentials(why: String) -> Refusal {
        Refusal {
            why,
            message: "Authentication failed: Invalid username or password",
        }
    }
}

/// Why OAUTHBEARER's initial response did not authenticate.
enum OAuthBearerRefusal {
    /// The token did not validate: the client gets the error challenge first.
    InvalidToken(String),
    /// The message was malformed, or named another principal: the exchange fails at once.
    Failed(Refusal),
}

/// OAUTHBEARER's initial response, with the shard's validator.
fn check_oauthbearer(shard: &Shard, message: &[u8]) -> Result<Authenticated, OAuthBearerRefusal> {
    let failed = |why: String| {
        OAuthBearerRefusal::Failed(Refusal {
            why,
            // Kafka's message for a SaslException: it says no more to a client.
            message: "Authentication failed during authentication due to invalid credentials \
                      with SASL mechanism OAUTHBEARER",
        })
    };
    let response = oauthbearer::parse_client_initial_response(message)
        .map_err(|why| failed(format!("malformed OAUTHBEARER message: {why}")))?;
    let Some(validator) = &shard.oauthbearer else {
        return Err(failed("OAUTHBEARER without a JWKS file".to_string()));
    };
    let token = validator
        .validate(response.token, SystemTime::now())
        .map_err(OAuthBearerRefusal::InvalidToken)?;
    if !response.authorization_id.is_empty() && response.authorization_id != token.principal_name {
        return Err(failed(format!(
            "authorization id {:?} is not the token's principal {:?}",
            response.authorization_id, token.principal_name
        )));
    }
    Ok(Authenticated {
        user: token.principal_name,
        reply: Bytes::new(),
        mechanism: SaslMechanism::OAuthBearer,
        credential_expires_at: Some(token.expires_at),
    })
}

/// The outcome of one step of an exchange.
enum Exchange {
    /// More to come: the server's challenge.
    Continue(Bytes),
    /// Authenticated: the server's last message, and how long the session lasts.
    Done(Bytes, Option<Duration>),
    /// Refused, with the message the client gets.
    Failed(&'static str),
    /// No exchange is under way.
    Illegal,
}

fn authenticate_response(
    code: ErrorCode,
    message: Option<String>,
    auth_bytes: Bytes,
    session_lifetime_ms: i64,
) -> Response {
    Response::SaslAuthenticate(SaslAuthenticateResponse {
        error_code: code.code(),
        error_message: message,
        auth_bytes,
        session_lifetime_ms,
    })
}

/// Kafka's SaslServerAuthenticator: a session ends when its credential expires (an
/// OAUTHBEARER token's `exp`; at once if it has) or after `configured`
/// (connections.max.reauth.ms), whichever comes first; None: it lasts.
fn session_lifetime(
    configured: Option<Duration>,
    credential_expires_at: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    let credential =
        credential_expires_at.map(|expiry| expiry.duration_since(now).unwrap_or_default());
    match (configured, credential) {
        (Some(configured), Some(credential)) => Some(configured.min(credential)),
        (configured, credential) => configured.or(credential),
    }
}

fn scram_of(mechanism: SaslMechanism) -> ScramMechanism {
    match mechanism {
        SaslMechanism::ScramSha512 => ScramMechanism::Sha512,
        _ => ScramMechanism::Sha256,
    }
}

fn mechanism_of(scram: ScramMechanism) -> SaslMechanism {
    match scram {
        ScramMechanism::Sha256 => SaslMechanism::ScramSha256,
        ScramMechanism::Sha512 => SaslMechanism::ScramSha512,
    }
}

/// RFC 4616: `[authzid] NUL user NUL password`. The password is checked against the user's
/// SCRAM credential (SHA-512's if there is one): Sluice keeps no other kind, and so never a
/// password.
fn check_plain(
    message: &[u8],
    lookup: impl Fn(&str, ScramMechanism) -> Option<ScramCredential>,
) -> Result<String, String> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed PLAIN message".to_string());
    };
    let user = std::str::from_utf8(user).map_err(|_| "PLAIN user name is not UTF-8".to_string())?;
    if user.is_empty() || (!authzid.is_empty() && authzid != user.as_bytes()) {
        return Err("PLAIN authorization id of another user".to_string());
    }
    let (mechanism, credential) = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| lookup(user, m).map(|c| (m, c)))
        .ok_or_else(|| "unknown user".to_string())?;
    if credential.matches_password(mechanism, password) {
        Ok(user.to_string())
    } else {
        Err("invalid credentials".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, vec![7; 16], b"secret", 4096);
        let lookup = |user: &str, m: ScramMechanism| {
            (user == "alice" && m == ScramMechanism::Sha256).then(|| credential.clone())
        };
        assert_eq!(
            check_plain(b"\0alice\0secret", lookup).as_deref(),
            Ok("alice")
        );
        assert_eq!(
            check_plain(b"alice\0alice\0secret", lookup).as_deref(),
            Ok("alice")
        );
        for refused in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0secret",
            b"bob\0alice\0secret",
            b"\0alice",
            b"\0alice\0secret\0more",
            b"\0\0secret",
        ] {
            assert!(check_plain(refused, lookup).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn a_session_ends_with_its_token_or_the_configured_lifetime() {
        let now = SystemTime::now();
        let minute = Duration::from_secs(60);
        assert_eq!(session_lifetime(None, None, now), None);
        assert_eq!(session_lifetime(Some(minute), None, now), Some(minute));
        assert_eq!(
            session_lifetime(None, Some(now + 2 * minute), now),
            Some(2 * minute)
        );
        assert_eq!(
            session_lifetime(Some(minute), Some(now + 2 * minute), now),
            Some(minute)
        );
        assert_eq!(
            session_lifetime(Some(2 * minute), Some(now + minute), now),
            Some(minute)
        );
        // A token within the clock skew of its expiry: the session is over at once.
        assert_eq!(
            session_lifetime(Some(minute), Some(now - minute), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn only_sasl_free_requests_pass_before_authentication() {
        let now = Instant::now();
        let plain = Session::new(SecurityProtocol::Plaintext, None);
        assert!(plain.passes(Some(ApiKey::Produce as i16), now));
        assert!(!plain.passes(Some(ApiKey::SaslHandshake as i16), now));
        assert_eq!(&**plain.principal(), ANONYMOUS);
        let sasl = Session::new(SecurityProtocol::SaslSsl, None);
        assert!(!sasl.passes(Some(ApiKey::Produce as i16), now));
        assert!(!sasl.passes(Some(ApiKey::ApiVersions as i16), now));
        let done = Session {
            protocol: SecurityProtocol::SaslPlaintext,
            state: SaslState::Done {
                mechanism: SaslMechanism::Plain,
                expires_at: Some(now + Duration::from_secs(1)),
            },
            principal: "User:alice".into(),
            authenticated: true,
            raw_tokens: false,
        };
        assert!(done.passes(Some(ApiKey::Fetch as i16), now));
        assert!(!done.passes(Some(ApiKey::Fetch as i16), now + Duration::from_secs(2)));
    }
}
