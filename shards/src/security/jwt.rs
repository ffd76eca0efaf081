//! Validation of an OAUTHBEARER token as Kafka's broker validator does it (KIP-768's
//! `sasl.oauthbearer.*`, jose4j underneath): a JWS signed by a key of the JWKS file, with
//! `exp` and `iat`, within the clock skew, for the expected audience and issuer, naming its
//! principal in the subject claim.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{ALGORITHMS, JwksFile, JwksKeys};

/// How the broker validates OAUTHBEARER tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthBearerConfig {
    /// The JWKS file of the keys tokens are signed with, read again when it changes.
    pub jwks_file: PathBuf,
    /// How far the broker's clock and the token issuer's may disagree
    /// (`sasl.oauthbearer.clock.skew.seconds`).
    pub clock_skew: Duration,
    /// A token must name one of these in `aud`, if any are set
    /// (`sasl.oauthbearer.expected.audience`).
    pub expected_audiences: Vec<String>,
    /// A token must name this in `iss`, if set (`sasl.oauthbearer.expected.issuer`).
    pub expected_issuer: Option<String>,
    /// The claim that names the principal (`sasl.oauthbearer.sub.claim.name`).
    pub sub_claim_name: String,
}

impl OAuthBearerConfig {
    /// Kafka's `sasl.oauthbearer.clock.skew.seconds` default.
    pub const CLOCK_SKEW_DEFAULT: Duration = Duration::from_secs(30);
    /// Kafka's `sasl.oauthbearer.sub.claim.name` default.
    pub const SUB_CLAIM_NAME_DEFAULT: &str = "sub";
}

/// A token that validated.
#[derive(Debug, PartialEq, Eq)]
pub struct ValidToken {
    /// The subject claim's value, trimmed: the principal is `User:` and this.
    pub principal_name: String,
    /// When the token expires (`exp`).
    pub expires_at: SystemTime,
}

/// One shard's token validator.
pub struct JwtValidator {
    jwks: JwksFile,
    config: OAuthBearerConfig,
    validation: Validation,
}

impl JwtValidator {
    /// A validator of `config`, with the JWKS file loaded.
    pub fn new(config: &OAuthBearerConfig) -> Result<JwtValidator, String> {
        Ok(JwtValidator {
            jwks: JwksFile::open(config.jwks_file.clone())?,
            validation: validation(config),
            config: config.clone(),
        })
    }

    /// The token's principal and expiry, or why it is refused (for the broker's log: the
    /// client is told only `invalid_token`).
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<ValidToken, String> {
        validate(
            &self.jwks.keys(),
            &self.validation,
            &self.config,
            token,
            now,
        )
    }
}

/// What jsonwebtoken checks: the algorithm and the signature, `aud` and `iss` (the algorithm
/// list is set per token, to its header's, as jsonwebtoken checks one family at a time). Times are
/// checked by [`check_times`], which jsonwebtoken cannot do: it reads the clock itself (so
/// tests could not move it) and ignores `iat`, which Kafka requires.
fn validation(config: &OAuthBearerConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = ALGORITHMS.to_vec();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    // As jose4j does for Kafka: a token with an `aud` is refused unless an audience is
    // expected (jsonwebtoken's default too), and an expected audience or issuer must be there.
    if !config.expected_audiences.is_empty() {
        validation.set_audience(&config.expected_audiences);
        validation.required_spec_claims.insert("aud".to_string());
    }
    if let Some(issuer) = &config.expected_issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_string());
    }
    validation
}

fn validate(
    keys: &JwksKeys,
    validation: &Validation,
    config: &OAuthBearerConfig,
    token: &str,
    now: SystemTime,
) -> Result<ValidToken, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("malformed JWT header: {e}"))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not allowed", header.alg));
    }
    // jsonwebtoken takes algorithms of one family per decode: this token's alone.
    let mut validation = validation.clone();
    validation.algorithms = vec![header.alg];
    let kid = header.kid.as_deref();
    let mut last_error = None;
    let mut claims = None;
    for key in keys.candidates(kid, header.alg) {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(error) => last_error = Some(error),
        }
    }
    let claims = match (claims, last_error) {
        (Some(claims), _) => claims,
        (None, Some(error)) => return Err(format!("token refused: {error}")),
        (None, None) => {
            return Err(format!(
                "no key in the JWKS file for kid {kid:?} and {:?}",
                header.alg
            ));
        }
    };
    let expires_at = check_times(&claims, config.clock_skew, now)?;
    let name = &config.sub_claim_name;
    let principal_name = match claims.get(name) {
        Some(Value::String(sub)) if !sub.trim().is_empty() => sub.trim().to_string(),
        Some(_) => return Err(format!("the {name:?} claim is not a non-blank string")),
        None => return Err(format!("no {name:?} claim")),
    };
    Ok(ValidToken {
        principal_name,
        expires_at,
    })
}

/// `exp` and `iat` must be there (as jose4j requires them for Kafka), `nbf` may be; within
/// `skew`, `exp` must be to come and `nbf` and `iat` past. Returns `exp`.
fn check_times(
    claims: &Map<String, Value>,
    skew: Duration,
    now: SystemTime,
) -> Result<SystemTime, String> {
    let expires_at = numeric_date(claims, "exp")?.ok_or("no \"exp\" claim")?;
    let issued_at = numeric_date(claims, "iat")?.ok_or("no \"iat\" claim")?;
    let not_before = numeric_date(claims, "nbf")?;
    if expires_at + skew <= now {
        return Err(format!("expired {:?} ago", elapsed(expires_at, now)));
    }
    if not_before.is_some_and(|nbf| nbf > now + skew) {
        return Err("not valid yet (\"nbf\" to come)".to_string());
    }
    if issued_at > now + skew {
        return Err("issued in the future (\"iat\" to come)".to_string());
    }
    Ok(expires_at)
}

/// RFC 7519's NumericDate: seconds since the epoch, possibly with a fraction.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<SystemTime>, String> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("the {name:?} claim is not a NumericDate"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|since_epoch| SystemTime::UNIX_EPOCH.checked_add(since_epoch))
        .map(Some)
        .ok_or_else(|| format!("the {name:?} claim is out of range"))
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
        RsaPublicKeyComponents,
    };
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    /// Signing keys made at run time, and their JWKS document.
    struct Signer {
        rsa: RsaKeyPair,
        ec: EcdsaKeyPair,
    }

    impl Signer {
        fn new() -> Signer {
            let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .expect("RSA key");
            let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
            Signer { rsa, ec }
        }

        /// The JWKS of the RSA key (`kid` "rsa-1") and the EC key ("ec-1").
        fn jwks(&self) -> String {
            let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public_key());
            let point = self.ec.public_key().as_ref();
            let (x, y) = point[1..].split_at(32);
            json!({"keys": [
                {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
                 "n": URL_SAFE_NO_PAD.encode(&rsa.n), "e": URL_SAFE_NO_PAD.encode(&rsa.e)},
                {"kty": "EC", "kid": "ec-1", "crv": "P-256",
                 "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)},
            ]})
            .to_string()
        }

        /// A token of `header` and `claims`, signed as its `alg` says (RS256 or ES256 with
        /// the keys, HS256 with `hmac_secret`, `none` unsigned).
        fn token(&self, header: Value, claims: Value, hmac_secret: &[u8]) -> String {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let rng = SystemRandom::new();
            let signature = match header["alg"].as_str() {
                Some("RS256") => {
                    let mut signature = vec![0; self.rsa.public_modulus_len()];
                    self.rsa
                        .sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
                        .expect("RSA signs");
                    signature
                }
                Some("ES256") => self
                    .ec
                    .sign(&rng, message.as_bytes())
                    .expect("EC signs")
                    .as_ref()
                    .to_vec(),
                Some("HS256") => {
                    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_secret);
                    aws_lc_rs::hmac::sign(&key, message.as_bytes())
                        .as_ref()
                        .to_vec()
                }
                _ => Vec::new(),
            };
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    fn config() -> OAuthBearerConfig {
        OAuthBearerConfig {
            jwks_file: PathBuf::new(),
            clock_skew: OAuthBearerConfig::CLOCK_SKEW_DEFAULT,
            expected_audiences: Vec::new(),
            expected_issuer: None,
            sub_claim_name: "sub".to_string(),
        }
    }

    fn epoch_s(time: SystemTime) -> u64 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[test]
    fn tokens_are_checked_as_kafka_checks_them() {
        let signer = Signer::new();
        let keys = JwksKeys::parse(signer.jwks().as_bytes()).expect("JWKS");
        let now = SystemTime::now();
        let t = epoch_s(now);
        let claims = json!({"sub": "alice", "iat": t, "exp": t + 600});
        let rs = json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"});
        let es = json!({"alg": "ES256", "kid": "ec-1"});
        let check = |config: &OAuthBearerConfig, token: &str| {
            validate(&keys, &validation(config), config, token, now)
        };
        let good = check(&config(), &signer.token(rs.clone(), claims.clone(), b""));
        assert_eq!(
            good,
            Ok(ValidToken {
                principal_name: "alice".to_string(),
                expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(t + 600),
            })
        );
        assert!(check(&config(), &signer.token(es.clone(), claims.clone(), b"")).is_ok());
        // No kid: every key of the algorithm is tried.
        let no_kid = signer.token(json!({"alg": "ES256"}), claims.clone(), b"");
        assert!(check(&config(), &no_kid).is_ok());

        let mut other_claim = config();
        other_claim.sub_claim_name = "client_id".to_string();
        let with_client_id = json!({"client_id": " svc ", "iat": t, "exp": t + 600});
        let token = signer.token(rs.clone(), with_client_id, b"");
        assert_eq!(
            check(&other_claim, &token).map(|v| v.principal_name),
            Ok("svc".to_string())
        );

        let mut audience = config();
        audience.expected_audiences = vec!["kafka".to_string(), "sluice".to_string()];
        audience.expected_issuer = Some("https://idp.example".to_string());
        let for_sluice = json!({"sub": "alice", "iat": t, "exp": t + 600,
            "aud": ["other", "sluice"], "iss": "https://idp.example"});
        let token = signer.token(rs.clone(), for_sluice, b"");
        assert!(check(&audience, &token).is_ok());
        // An `aud` when none is expected: refused, as jose4j refuses it.
        assert!(check(&config(), &token).is_err());

        let at = |offset: i64| t.checked_add_signed(offset).expect("in range");
        let refused = [
            (
                "expired",
                rs.clone(),
                json!({"sub": "a", "iat": at(-100), "exp": at(-31)}),
                config(),
            ),
            (
                "no exp",
                rs.clone(),
                json!({"sub": "a", "iat": t}),
                config(),
            ),
            (
                "no iat",
                rs.clone(),
                json!({"sub": "a", "exp": at(60)}),
                config(),
            ),
            (
                "iat to come",
                rs.clone(),
                json!({"sub": "a", "iat": at(31), "exp": at(600)}),
                config(),
            ),
            (
                "nbf to come",
                rs.clone(),
                json!({"sub": "a", "iat": t, "nbf": at(31), "exp": at(600)}),
                config(),
            ),
            (
                "exp not a number",
                rs.clone(),
                json!({"sub": "a", "iat": t, "exp": "soon"}),
                config(),
            ),
            (
                "blank sub",
                rs.clone(),
                json!({"sub": " ", "iat": t, "exp": at(60)}),
                config(),
            ),
            (
                "sub not a string",
                rs.clone(),
                json!({"sub": 7, "iat": t, "exp": at(60)}),
                config(),
            ),
            (
                "no sub",
                rs.clone(),
                json!({"iat": t, "exp": at(60)}),
                config(),
            ),
            (
                "wrong kid",
                json!({"alg": "RS256", "kid": "rsa-2"}),
                claims.clone(),
                config(),
            ),
            (
                "kid of another key type",
                json!({"alg": "RS256", "kid": "ec-1"}),
                claims.clone(),
                config(),
            ),
            (
                "wrong audience",
                rs.clone(),
                json!({"sub": "a", "iat": t, "exp": at(60), "aud": "other",
                       "iss": "https://idp.example"}),
                audience.clone(),
            ),
            (
                "no audience",
                rs.clone(),
                json!({"sub": "a", "iat": t, "exp": at(60), "iss": "https://idp.example"}),
                audience.clone(),
            ),
            (
                "wrong issuer",
                rs.clone(),
                json!({"sub": "a", "iat": t, "exp": at(60), "aud": "kafka",
                       "iss": "https://evil.example"}),
                audience.clone(),
            ),
            (
                "no issuer",
                rs.clone(),
                json!({"sub": "a", "iat": t, "exp": at(60), "aud": "kafka"}),
                audience.clone(),
            ),
        ];
        for (case, header, claims, config) in refused {
            let token = signer.token(header, claims, b"");
            assert!(check(&config, &token).is_err(), "{case}");
        }
        // Within the skew: still good.
        let skewed = json!({"sub": "a", "iat": at(29), "nbf": at(29), "exp": at(-29)});
        assert!(check(&config(), &signer.token(rs.clone(), skewed, b"")).is_ok());
    }

    #[test]
    fn forged_signatures_are_refused() {
        let signer = Signer::new();
        let jwks = signer.jwks();
        let keys = JwksKeys::parse(jwks.as_bytes()).expect("JWKS");
        let now = SystemTime::now();
        let t = epoch_s(now);
        let claims = json!({"sub": "alice", "iat": t, "exp": t + 600});
        let check = |token: &str| validate(&keys, &validation(&config()), &config(), token, now);
        let rs = json!({"alg": "RS256", "kid": "rsa-1"});

        // Another key pair with the same kid.
        let other = Signer::new().token(rs.clone(), claims.clone(), b"");
        assert!(check(&other).is_err());
        // A good token with other claims pasted in.
        let good = signer.token(rs.clone(), claims.clone(), b"");
        let mut parts: Vec<&str> = good.split('.').collect();
        let admin =
            URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "iat": t, "exp": t + 600}).to_string());
        parts[1] = &admin;
        assert!(check(&parts.join(".")).is_err());
        // alg none, signed or not.
        for alg in ["none", "None", "NONE"] {
            let unsigned = signer.token(json!({"alg": alg}), claims.clone(), b"");
            assert!(check(&unsigned).is_err(), "{alg}");
            let unsigned = format!("{}.", &unsigned[..unsigned.len() - 1]);
            assert!(check(&unsigned).is_err(), "{alg} with an empty signature");
        }
        // HMAC with the public key as the secret, with and without its kid.
        for header in [
            json!({"alg": "HS256", "kid": "rsa-1"}),
            json!({"alg": "HS256"}),
        ] {
            let forged = signer.token(header, claims.clone(), jwks.as_bytes());
            assert!(check(&forged).is_err());
        }
        for malformed in ["", "a.b", "a.b.c", "..", &good[1..]] {
            assert!(check(malformed).is_err(), "{malformed}");
        }
    }
}
