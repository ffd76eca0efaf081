//! The public keys that OAUTHBEARER tokens are signed with: a JWKS file (RFC 7517, Kafka's
//! `sasl.oauthbearer.jwks.endpoint.url` with a `file:` URL), read again when it changes so
//! that an identity provider's keys rotate without a restart.

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// The largest JWKS file read: an identity provider publishes a handful of keys, a few KiB.
pub const JWKS_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The most keys a JWKS file may hold; a token without a `kid` is tried against each key of
/// its algorithm, so this also bounds the signature checks of one authentication.
pub const JWKS_KEYS_MAX: usize = 64;

/// The signature algorithms a token may use: public-key ones only. `none` is not an
/// [`Algorithm`] at all, and HMAC is refused so that a token cannot be signed with a public
/// key used as a shared secret.
pub const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How often a shard looks at the JWKS file's modification time, at most: at the first
/// authentication beyond this interval since the last look.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One key that verifies signatures.
struct VerificationKey {
    /// Its `kid`, which a token's header names.
    kid: Option<String>,
    /// The one algorithm its JWK allows (`alg`), if it names one.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// The usable keys of a JWKS file.
pub struct JwksKeys {
    keys: Vec<VerificationKey>,
}

impl JwksKeys {
    /// The keys of a JWKS document. Keys that cannot verify a token of [`ALGORITHMS`]
    /// (encryption keys, symmetric `oct` keys, Ed25519, an `alg` outside the list) are left
    /// out; a document with none left, or more than [`JWKS_KEYS_MAX`], is refused.
    pub fn parse(json: &[u8]) -> Result<JwksKeys, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWK set: {e}"))?;
        if set.keys.len() > JWKS_KEYS_MAX {
            return Err(format!(
                "{} keys, more than JWKS_KEYS_MAX ({JWKS_KEYS_MAX})",
                set.keys.len()
            ));
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let common = &jwk.common;
            let signs = common
                .public_key_use
                .as_ref()
                .is_none_or(|u| *u == PublicKeyUse::Signature)
                && common
                    .key_operations
                    .as_ref()
                    .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
            let algorithm = match common.key_algorithm.map(Algorithm::try_from) {
                None => None,
                Some(Ok(algorithm)) if ALGORITHMS.contains(&algorithm) => Some(algorithm),
                Some(_) => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let family = key.family();
            if signs && matches!(family, AlgorithmFamily::Rsa | AlgorithmFamily::Ec) {
                keys.push(VerificationKey {
                    kid: common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
        }
        if keys.is_empty() {
            return Err("no RSA or EC signature key in it".to_string());
        }
        Ok(JwksKeys { keys })
    }

    /// The keys that may have signed a token of `algorithm` whose header names `kid`: with a
    /// `kid`, the keys of that id; without, every key of the algorithm's family (as jose4j's
    /// resolver does for Kafka).
    pub fn candidates(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> impl Iterator<Item = &DecodingKey> {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .filter(move |k| k.algorithm.is_none_or(|a| a == algorithm))
            .filter(move |k| k.key.family() == algorithm.family())
            .map(|k| &k.key)
    }

    /// How many usable keys the file holds (at least one).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Reads and parses the JWKS file at `path`; errors name the flag and the file.
pub fn load(path: &Path) -> Result<JwksKeys, String> {
    let context =
        |e: &dyn std::fmt::Display| format!("--sasl-oauthbearer-jwks-file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| context(&e))?;
    let mut json = Vec::new();
    // One byte more than the limit tells a file at the limit from a larger one.
    file.take(JWKS_FILE_BYTES_MAX + 1)
        .read_to_end(&mut json)
        .map_err(|e| context(&e))?;
    if json.len() as u64 > JWKS_FILE_BYTES_MAX {
        return Err(context(&format!(
            "larger than JWKS_FILE_BYTES_MAX ({JWKS_FILE_BYTES_MAX} bytes)"
        )));
    }
    JwksKeys::parse(&json).map_err(|e| context(&e))
}

/// One shard's view of the JWKS file: the last keys that loaded.
pub struct JwksFile {
    path: PathBuf,
    keys: RefCell<Rc<JwksKeys>>,
    /// The file's modification time and length when `keys` were read (or last failed to
    /// load): the length too, as two writes within a clock tick leave the same time.
    loaded: Cell<Option<(SystemTime, u64)>>,
    checked_at: Cell<Instant>,
}

impl JwksFile {
    /// Loads the file; it must hold at least one usable key.
    pub fn open(path: PathBuf) -> Result<JwksFile, String> {
        let loaded = stamp(&path);
        let keys = load(&path)?;
        Ok(JwksFile {
            path,
            keys: RefCell::new(Rc::new(keys)),
            loaded: Cell::new(loaded),
            checked_at: Cell::new(Instant::now()),
        })
    }

    /// The current keys, read again first when the file changed (looked at once a second at
    /// most). A file that no longer loads keeps the last good keys, and says why once per
    /// change.
    pub fn keys(&self) -> Rc<JwksKeys> {
        if self.checked_at.get().elapsed() >= RELOAD_CHECK_INTERVAL {
            self.checked_at.set(Instant::now());
            let time = stamp(&self.path);
            if time != self.loaded.get() {
                self.loaded.set(time);
                match load(&self.path) {
                    Ok(keys) => {
                        tracing::info!(
                            file = %self.path.display(),
                            keys = keys.key_count(),
                            "JWKS file changed: reloaded"
                        );
                        *self.keys.borrow_mut() = Rc::new(keys);
                    }
                    Err(why) => tracing::warn!(
                        %why,
                        "JWKS file changed but does not load: the last good keys stay"
                    ),
                }
            }
        }
        self.keys.borrow().clone()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn only_signature_keys_of_public_key_algorithms_are_kept() {
        let json = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"rsa","use":"sig","alg":"RS256","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}},
                {{"kty":"RSA","kid":"hs","alg":"HS256","n":"{RSA_N}","e":"AQAB"}}
            ]}}"#
        );
        let keys = JwksKeys::parse(json.as_bytes()).expect("one usable key");
        assert_eq!(keys.key_count(), 1);
        assert_eq!(keys.candidates(Some("rsa"), Algorithm::RS256).count(), 1);
        assert_eq!(keys.candidates(None, Algorithm::PS256).count(), 0);
        assert_eq!(keys.candidates(Some("other"), Algorithm::RS256).count(), 0);
        assert_eq!(keys.candidates(Some("hmac"), Algorithm::HS256).count(), 0);
        assert_eq!(keys.candidates(Some("rsa"), Algorithm::ES256).count(), 0);
    }

    #[test]
    fn unusable_files_are_refused_naming_why() {
        let one = format!(r#"{{"kty":"RSA","n":"{RSA_N}","e":"AQAB"}}"#);
        let too_many = format!(r#"{{"keys":[{}]}}"#, vec![one; JWKS_KEYS_MAX + 1].join(","));
        for (json, expected) in [
            ("not json", "not a JWK set"),
            (r#"{"keys":[]}"#, "no RSA or EC"),
            (r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, "no RSA or EC"),
            (too_many.as_str(), "JWKS_KEYS_MAX"),
        ] {
            let error = JwksKeys::parse(json.as_bytes()).err().expect(expected);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_broken_file_keeps_the_last_good_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let good = format!(r#"{{"keys":[{{"kty":"RSA","kid":"a","n":"{RSA_N}","e":"AQAB"}}]}}"#);
        std::fs::write(&path, &good).expect("write");
        let file = JwksFile::open(path.clone()).expect("loads");
        std::fs::write(&path, "{").expect("write");
        // As if a second had passed since the last look.
        file.checked_at.set(Instant::now() - RELOAD_CHECK_INTERVAL);
        assert_eq!(
            file.keys().candidates(Some("a"), Algorithm::RS256).count(),
            1
        );
        let rotated = good.replace(r#""kid":"a""#, r#""kid":"b""#);
        std::fs::write(&path, rotated).expect("write");
        file.checked_at.set(Instant::now() - RELOAD_CHECK_INTERVAL);
        let keys = file.keys();
        assert_eq!(keys.candidates(Some("a"), Algorithm::RS256).count(), 0);
        assert_eq!(keys.candidates(Some("b"), Algorithm::RS256).count(), 1);
    }
}
