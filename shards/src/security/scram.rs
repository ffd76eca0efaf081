//! The server side of a SCRAM exchange (RFC 5802; SHA-256 as RFC 7677, SHA-512 as Kafka
//! has it): client-first → server-first → client-final → server-final, checked against the
//! stored key and server key kept in the metadata, never a password.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sluice_metadata::{ScramCredential, ScramMechanism};

/// Characters of the server's part of the nonce (RFC 5802 asks for a fresh, unpredictable
/// one): 32 letters and digits carry over 180 random bits.
const SERVER_NONCE_CHARS: usize = 32;

/// The nonce's alphabet. Kafka's server nonces are letters and digits too; librdkafka 2.0
/// (Debian 12's kcat) echoes a nonce with base64's `+` or `/` wrongly.
const NONCE_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Longest user name a client-first message may carry (Kafka's user names are free text, but
/// a credential for a longer one could not have been created through the metadata either).
const USER_NAME_BYTES_MAX: usize = 1024;

/// Why an exchange failed; the client sees only SASL_AUTHENTICATION_FAILED.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding, or an extension this broker does not offer.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// No credential for this user and mechanism.
    #[error("unknown user")]
    UnknownUser,
    /// The client's proof does not match the stored key.
    #[error("invalid credentials")]
    BadProof,
}

/// Where an exchange stands after the client's first message.
pub struct ScramServerFirst {
    mechanism: ScramMechanism,
    user: String,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    /// The client's nonce and then the server's.
    nonce: String,
    /// Bytes of `nonce` that are the client's.
    client_nonce_len: usize,
}

impl ScramServerFirst {
    /// Reads client-first (`n,,n=user,r=nonce`), finds the user's credential with `lookup`
    /// and prepares server-first.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<ScramServerFirst, ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("UTF-8"))?;
        // gs2-header: "n" (no channel binding) or "y" (the client could bind but thinks we
        // cannot); "p=" asks for binding, which Kafka does not offer either.
        let (gs2_flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        match gs2_flag {
            "n" | "y" => {}
            flag if flag.starts_with("p=") => {
                return Err(ScramError::Unsupported("channel binding"));
            }
            _ => return Err(ScramError::Malformed("gs2 header")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        let mut user = None;
        let mut nonce = None;
        for attribute in bare.split(',') {
            match attribute.split_once('=') {
                Some(("n", value)) => user = Some(unescape_name(value)?),
                Some(("r", value)) => nonce = Some(value),
                Some(("m", _)) => return Err(ScramError::Unsupported("mandatory extension")),
                // Kafka's delegation tokens add `tokenauth=true`; Sluice has no tokens.
                Some(("tokenauth", _)) => return Err(ScramError::Unsupported("delegation tokens")),
                // Other extensions are optional: ignored, as RFC 5802 allows.
                _ => {}
            }
        }
        let user = user.ok_or(ScramError::Malformed("no user name"))?;
        let client_nonce = nonce
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if user.is_empty() || user.len() > USER_NAME_BYTES_MAX {
            return Err(ScramError::Malformed("user name length"));
        }
        if let Some(authzid) = authzid.strip_prefix("a=")
            && unescape_name(authzid)? != user
        {
            // Kafka accepts an authorization id only when it is the user itself.
            return Err(ScramError::Unsupported("authorization id of another user"));
        }
        let credential = lookup(&user).ok_or(ScramError::UnknownUser)?;
        let mut random = [0u8; SERVER_NONCE_CHARS];
        getrandom::fill(&mut random).map_err(|_| ScramError::Unsupported("no randomness"))?;
        // 256 is 4 × 62 + 8: the first 8 letters come a little more often, which costs under
        // a bit of the nonce's 190.
        let server_nonce: String = random
            .iter()
            .map(|b| char::from(NONCE_ALPHABET[usize::from(*b) % NONCE_ALPHABET.len()]))
            .collect();
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        Ok(ScramServerFirst {
            mechanism,
            user,
            credential,
            client_first_bare: bare.to_string(),
            server_first,
            client_nonce_len: client_nonce.len(),
            nonce,
        })
    }

    /// The server-first message to send.
    pub fn server_first(&self) -> &[u8] {
        self.server_first.as_bytes()
    }

    /// The user this exchange authenticates.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks client-final (`c=...,r=...,p=proof`); returns server-final on success.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("c", value)) => binding = Some(value),
                Some(("r", value)) => nonce = Some(value),
                _ => {}
            }
        }
        // "biws" is base64("n,,"), "eSws" base64("y,,"): no binding data, no authzid, or
        // the authzid the client-first named, which must then be echoed in full.
        let binding = binding.ok_or(ScramError::Malformed("no channel binding"))?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding"))?;
        if !(binding.starts_with(b"n,") || binding.starts_with(b"y,")) {
            return Err(ScramError::Unsupported("channel binding"));
        }
        // librdkafka before 2.6.1 (Debian 12's kcat has 2.0.2) sends its own nonce again in
        // front of the whole nonce (librdkafka #4895); Kafka 3 accepts that, so Sluice does,
        // while the server's part must still come back whole.
        let echoed = nonce.is_some_and(|n| {
            n == self.nonce
                || n.strip_prefix(&self.nonce[..self.client_nonce_len]) == Some(self.nonce.as_str())
        });
        if !echoed {
            return Err(ScramError::Malformed("nonce differs"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = self
            .mechanism
            .hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(
            &self.mechanism.hash(&client_key),
            &self.credential.stored_key,
        ) {
            return Err(ScramError::BadProof);
        }
        let server_signature = self
            .mechanism
            .hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// RFC 5802's saslname: `=2C` is a comma, `=3D` an equals sign; any other `=` is an error.
fn unescape_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("user name escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Compares without an early exit, so that the time taken tells nothing of where two keys
/// differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, with the server's nonce replaced by the one the RFC used.
    #[test]
    fn rfc_7677_exchange_verifies() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, salt, b"pencil", 4096);
        let mut first = ScramServerFirst::start(
            ScramMechanism::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |user| (user == "user").then(|| credential.clone()),
        )
        .expect("client-first");
        assert_eq!(first.user(), "user");
        first.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string();
        first.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", first.nonce);
        let server_final = first
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("proof");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn wrong_proof_and_unknown_users_fail() {
        let salt = b"0123456789abcdef".to_vec();
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha512, salt, b"secret", 4096);
        let first = ScramServerFirst::start(ScramMechanism::Sha512, b"n,,n=alice,r=abc", |_| {
            Some(credential.clone())
        })
        .expect("client-first");
        let nonce = first.nonce.clone();
        let bad = format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 64]));
        assert_eq!(first.finish(bad.as_bytes()), Err(ScramError::BadProof));
        let unknown = ScramServerFirst::start(ScramMechanism::Sha512, b"n,,n=bob,r=abc", |_| None);
        assert_eq!(unknown.err(), Some(ScramError::UnknownUser));
    }

    #[test]
    fn malformed_client_first_messages_are_refused() {
        for message in [
            &b""[..],
            b"n",
            b"x,,n=a,r=b",
            b"p=tls-unique,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"n,,m=x,n=a,r=b",
            b"n,a=other,n=a,r=b",
            b"\xff,,n=a,r=b",
        ] {
            let result = ScramServerFirst::start(ScramMechanism::Sha256, message, |_| {
                Some(ScramCredential::from_password(
                    ScramMechanism::Sha256,
                    vec![1; 16],
                    b"p",
                    4096,
                ))
            });
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(message));
        }
    }

    /// librdkafka before 2.6.1 sends its nonce twice; the server's part must still be there.
    #[test]
    fn a_client_nonce_sent_twice_is_accepted_as_kafka_3_accepts_it() {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, vec![3; 16], b"pw", 4096);
        let start = || {
            ScramServerFirst::start(ScramMechanism::Sha256, b"n,,n=u,r=cnonce", |_| {
                Some(credential.clone())
            })
            .expect("client-first")
        };
        let proof_for = |first: &ScramServerFirst, nonce: &str| {
            let without_proof = format!("c=biws,r={nonce}");
            let auth = format!("n=u,r=cnonce,{},{without_proof}", first.server_first);
            let salted = ScramMechanism::Sha256.salted_password(b"pw", &[3; 16], 4096);
            let client_key = ScramMechanism::Sha256.hmac(&salted, b"Client Key");
            let signature = ScramMechanism::Sha256.hmac(&credential.stored_key, auth.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(k, s)| k ^ s)
                .collect();
            format!("{without_proof},p={}", BASE64.encode(proof))
        };
        for doubled in [false, true] {
            let first = start();
            let nonce = if doubled {
                format!("cnonce{}", first.nonce)
            } else {
                first.nonce.clone()
            };
            let message = proof_for(&first, &nonce);
            assert!(
                first.finish(message.as_bytes()).is_ok(),
                "doubled: {doubled}"
            );
        }
        let first = start();
        let message = proof_for(&first, "cnonce");
        assert_eq!(
            first.finish(message.as_bytes()),
            Err(ScramError::Malformed("nonce differs"))
        );
    }

    #[test]
    fn names_are_unescaped() {
        assert_eq!(unescape_name("a=2Cb=3Dc").as_deref(), Ok("a,b=c"));
        assert!(unescape_name("a=").is_err());
    }
}
