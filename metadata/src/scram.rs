//! SCRAM credentials (RFC 5802, RFC 7677; Kafka's KIP-554): what the broker keeps of each
//! user's password, per mechanism, so that SASL/SCRAM (and SASL/PLAIN's check) can
//! authenticate a client without the password ever being stored.
//!
//! AlterUserScramCredentials brings a salted password (the client ran PBKDF2); the controller
//! turns it into a StoredKey and a ServerKey (`ScramCredential::from_salted_password`) and only
//! those, with the salt and the iteration count, reach the log, the image and snapshots.
//! `plan_alterations` decides each user's alteration on its own (Kafka's `ScramControlManager`):
//! the response has one result per user, and the accepted ones go into one record.

use std::collections::BTreeMap;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::limits::{
    SCRAM_ALTERATIONS_PER_COMMAND_MAX, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN,
    SCRAM_SALT_BYTES_MAX, SCRAM_USER_NAME_BYTES_MAX, SCRAM_USERS_MAX,
};

/// Kafka's SCRAM mechanisms, with Kafka's ids (1, 2) as in AlterUserScramCredentials.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677), Kafka's id 1.
    Sha256,
    /// SCRAM-SHA-512, Kafka's id 2.
    Sha512,
}

impl ScramMechanism {
    /// Every mechanism, in id order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The mechanism of Kafka's id (1 or 2); None for 0 (Kafka's UNKNOWN) and anything else.
    pub fn from_id(id: i8) -> Option<Self> {
        match id {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's id of the mechanism (AlterUserScramCredentials, DescribeUserScramCredentials).
    pub fn id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of a SASL mechanism name ("SCRAM-SHA-256" / "SCRAM-SHA-512", exactly, as
    /// SaslHandshake names them).
    pub fn from_name(name: &str) -> Option<Self> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Bytes of the hash's output: the length of a salted password, a StoredKey and a
    /// ServerKey.
    pub fn digest_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    /// SaltedPassword = Hi(password, salt, iterations), PBKDF2 with this mechanism's HMAC
    /// (RFC 5802, section 2.2): what a client sends in AlterUserScramCredentials.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest_bytes()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }

    /// HMAC(key, data) with this mechanism's hash (RFC 5802's HMAC): the exchange's
    /// ClientSignature = HMAC(StoredKey, AuthMessage) and ServerSignature = HMAC(ServerKey,
    /// AuthMessage).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => hmac_of::<Hmac<Sha256>>(key, data),
            ScramMechanism::Sha512 => hmac_of::<Hmac<Sha512>>(key, data),
        }
    }

    /// H(data) with this mechanism's hash (RFC 5802's H): StoredKey = H(ClientKey).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// What the broker keeps of a user's password (RFC 5802): never the password itself.
#[derive(Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScramCredential {
    /// The salt the client's PBKDF2 ran with; sent to the client in the server-first message.
    pub salt: Vec<u8>,
    /// H(ClientKey): checks the ClientProof.
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key"): signs the server-final message.
    pub server_key: Vec<u8>,
    /// PBKDF2's iteration count, between `SCRAM_ITERATIONS_MIN` and `SCRAM_ITERATIONS_MAX`.
    pub iterations: u32,
}

/// Never prints the keys or the salt, as Kafka's `ScramCredentialValue` hides them: a debug log
/// line must not help an offline guess of the password.
impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt", &"[hidden]")
            .field("stored_key", &"[hidden]")
            .field("server_key", &"[hidden]")
            .field("iterations", &self.iterations)
            .finish()
    }
}

impl ScramCredential {
    /// From AlterUserScramCredentials' salted password: ClientKey = HMAC(salted, "Client Key"),
    /// StoredKey = H(ClientKey), ServerKey = HMAC(salted, "Server Key").
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        salted_password: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// From a clear password (for the CLI and for PLAIN's check): SaltedPassword =
    /// PBKDF2-HMAC(password, salt, iterations).
    pub fn from_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        password: &[u8],
        iterations: u32,
    ) -> Self {
        let salted = mechanism.salted_password(password, &salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, &salted, iterations)
    }

    /// True when `password` is the one this credential was made from (SASL/PLAIN's check):
    /// its ServerKey is recomputed with this salt and iteration count and compared in constant
    /// time, so the comparison's duration tells nothing of the key.
    pub fn matches_password(&self, mechanism: ScramMechanism, password: &[u8]) -> bool {
        let salted = mechanism.salted_password(password, &self.salt, self.iterations);
        match mechanism {
            ScramMechanism::Sha256 => verify::<Hmac<Sha256>>(&salted, &self.server_key),
            ScramMechanism::Sha512 => verify::<Hmac<Sha512>>(&salted, &self.server_key),
        }
    }

    /// Why this credential cannot be one the controller made for `mechanism`, if it cannot:
    /// the bounds `plan_alterations` enforces, checked again on snapshots and after applies.
    pub(crate) fn check(&self, mechanism: ScramMechanism) -> Result<(), String> {
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&self.iterations) {
            return Err(format!("{} iterations", self.iterations));
        }
        if self.salt.is_empty() || self.salt.len() > SCRAM_SALT_BYTES_MAX {
            return Err(format!("a salt of {} bytes", self.salt.len()));
        }
        let digest = mechanism.digest_bytes();
        if self.stored_key.len() != digest || self.server_key.len() != digest {
            return Err(format!(
                "keys of {} and {} bytes for {}",
                self.stored_key.len(),
                self.server_key.len(),
                mechanism.name()
            ));
        }
        Ok(())
    }
}

/// AlterUserScramCredentials' upsertion, as the client sent it (checked by
/// `plan_alterations`).
#[derive(Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScramUpsertion {
    pub user: String,
    /// Kafka's mechanism id (1: SCRAM-SHA-256, 2: SCRAM-SHA-512).
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    /// PBKDF2(password, salt, iterations) with the mechanism's HMAC; never stored.
    pub salted_password: Vec<u8>,
}

/// Hides the salted password, which would let anyone who reads it authenticate as the user.
impl std::fmt::Debug for ScramUpsertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramUpsertion")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .field("salt", &"[hidden]")
            .field("salted_password", &"[hidden]")
            .finish()
    }
}

/// AlterUserScramCredentials' deletion, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScramDeletion {
    pub user: String,
    /// Kafka's mechanism id (1: SCRAM-SHA-256, 2: SCRAM-SHA-512).
    pub mechanism: i8,
}

/// One credential as the log and snapshots carry it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScramUserCredential {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub credential: ScramCredential,
}

/// One user's result of an AlterUserScramCredentials (its response has one per user).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScramUserResult {
    pub user: String,
    /// Kafka's error code: 0, UNACCEPTABLE_CREDENTIAL (93), UNSUPPORTED_SASL_MECHANISM (33),
    /// RESOURCE_NOT_FOUND (91), DUPLICATE_RESOURCE (92) or POLICY_VIOLATION (44, past
    /// `SCRAM_USERS_MAX`).
    pub error_code: i16,
    pub error_message: Option<String>,
}

/// Every user's credentials, by user name and mechanism.
pub type ScramUsers = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// The credentials of the image: behind an `Arc`, so that cloning the image per command copies
/// none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScramCredentials {
    pub(crate) users: Arc<ScramUsers>,
}

/// Kafka's error codes of per-user results (the metadata crate does not depend on the codec's).
const NONE: i16 = 0;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const POLICY_VIOLATION: i16 = 44;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// What `plan_alterations` decided: the credentials to write and to remove, and one result per
/// user in request order (deletions first, as Kafka reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedAlterations {
    pub upserted: Vec<ScramUserCredential>,
    pub deleted: Vec<(String, ScramMechanism)>,
    pub results: Vec<ScramUserResult>,
}

/// Decides an AlterUserScramCredentials against the credentials there are, user by user, as
/// Kafka's `ScramControlManager.alterCredentials` does: a user named twice in the request
/// (deletions and upsertions together) is refused DUPLICATE_RESOURCE once, whatever its other
/// alterations; an empty or too long name or a bad salt, salted password or iteration count is
/// UNACCEPTABLE_CREDENTIAL; an unknown mechanism UNSUPPORTED_SASL_MECHANISM; deleting a
/// credential that does not exist RESOURCE_NOT_FOUND; a new user past `SCRAM_USERS_MAX`
/// POLICY_VIOLATION. More than `SCRAM_ALTERATIONS_PER_COMMAND_MAX` alterations refuse the whole
/// request (the Err).
pub(crate) fn plan_alterations(
    users: &ScramUsers,
    upsertions: &[ScramUpsertion],
    deletions: &[ScramDeletion],
) -> Result<PlannedAlterations, String> {
    let count = upsertions.len() + deletions.len();
    if count > SCRAM_ALTERATIONS_PER_COMMAND_MAX {
        return Err(format!(
            "{count} SCRAM credential alterations in one request, more than \
             {SCRAM_ALTERATIONS_PER_COMMAND_MAX} (SCRAM_ALTERATIONS_PER_COMMAND_MAX)"
        ));
    }
    // Users named more than once are refused whole: which alteration would win is the
    // client's mistake to fix, not ours to guess.
    let mut times_named: BTreeMap<&str, usize> = BTreeMap::new();
    let names = deletions
        .iter()
        .map(|d| d.user.as_str())
        .chain(upsertions.iter().map(|u| u.user.as_str()));
    for name in names.clone() {
        *times_named.entry(name).or_default() += 1;
    }
    let mut planned = PlannedAlterations {
        upserted: Vec::new(),
        deleted: Vec::new(),
        results: Vec::new(),
    };
    let mut refused: BTreeMap<&str, (i16, String)> = BTreeMap::new();
    for (name, times) in &times_named {
        if *times > 1 {
            refused.insert(
                name,
                (
                    DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request".to_string(),
                ),
            );
        }
    }
    // Users whose every credential the accepted deletions remove: they make room under
    // SCRAM_USERS_MAX for new users of the same request.
    let mut users_left = users.len();
    for deletion in deletions {
        if refused.contains_key(deletion.user.as_str()) {
            continue;
        }
        match check_deletion(users, deletion) {
            Ok(mechanism) => {
                let held = users.get(&deletion.user).map_or(0, BTreeMap::len);
                if held == 1 {
                    users_left -= 1;
                }
                planned.deleted.push((deletion.user.clone(), mechanism));
            }
            Err(error) => {
                refused.insert(&deletion.user, error);
            }
        }
    }
    for upsertion in upsertions {
        if refused.contains_key(upsertion.user.as_str()) {
            continue;
        }
        match check_upsertion(upsertion) {
            Ok((mechanism, iterations)) => {
                if !users.contains_key(&upsertion.user) {
                    if users_left >= SCRAM_USERS_MAX {
                        refused.insert(
                            &upsertion.user,
                            (
                                POLICY_VIOLATION,
                                format!(
                                    "the cluster has {SCRAM_USERS_MAX} SCRAM users \
                                     (SCRAM_USERS_MAX); delete one before adding {}",
                                    upsertion.user
                                ),
                            ),
                        );
                        continue;
                    }
                    users_left += 1;
                }
                planned.upserted.push(ScramUserCredential {
                    user: upsertion.user.clone(),
                    mechanism,
                    credential: ScramCredential::from_salted_password(
                        mechanism,
                        upsertion.salt.clone(),
                        &upsertion.salted_password,
                        iterations,
                    ),
                });
            }
            Err(error) => {
                refused.insert(&upsertion.user, error);
            }
        }
    }
    // One result per user, in the order the request first names them.
    let mut answered: BTreeMap<&str, ()> = BTreeMap::new();
    for name in names {
        if answered.insert(name, ()).is_some() {
            continue;
        }
        let (error_code, error_message) = match refused.get(name) {
            Some((code, message)) => (*code, Some(message.clone())),
            None => (NONE, None),
        };
        planned.results.push(ScramUserResult {
            user: name.to_string(),
            error_code,
            error_message,
        });
    }
    Ok(planned)
}

impl ScramCredentials {
    /// Builds the credentials of a snapshot, refusing any the controller could not have made.
    pub(crate) fn from_parts(parts: Vec<ScramUserCredential>) -> Result<Self, String> {
        let mut users = ScramUsers::new();
        for part in parts {
            let held = users.entry(part.user.clone()).or_default();
            if held.insert(part.mechanism, part.credential).is_some() {
                return Err(format!(
                    "SCRAM credential of {} for {} listed twice",
                    part.user,
                    part.mechanism.name()
                ));
            }
        }
        let credentials = ScramCredentials {
            users: Arc::new(users),
        };
        credentials.check_invariants()?;
        Ok(credentials)
    }

    /// Every credential, for a snapshot.
    pub(crate) fn to_parts(&self) -> Vec<ScramUserCredential> {
        self.users
            .iter()
            .flat_map(|(user, held)| {
                held.iter()
                    .map(|(mechanism, credential)| ScramUserCredential {
                        user: user.clone(),
                        mechanism: *mechanism,
                        credential: credential.clone(),
                    })
            })
            .collect()
    }

    /// Applies a planned record: removes `deleted` (each must exist) and writes `upserted`.
    pub(crate) fn apply(
        &mut self,
        upserted: &[ScramUserCredential],
        deleted: &[(String, ScramMechanism)],
    ) -> Result<(), String> {
        let users = Arc::make_mut(&mut self.users);
        for (user, mechanism) in deleted {
            let held = users
                .get_mut(user)
                .ok_or_else(|| format!("no SCRAM credential of user {user} to delete"))?;
            held.remove(mechanism).ok_or_else(|| {
                format!(
                    "no {} credential of user {user} to delete",
                    mechanism.name()
                )
            })?;
            if held.is_empty() {
                users.remove(user);
            }
        }
        for upsert in upserted {
            upsert.credential.check(upsert.mechanism)?;
            users
                .entry(upsert.user.clone())
                .or_default()
                .insert(upsert.mechanism, upsert.credential.clone());
        }
        Ok(())
    }

    /// The credentials' invariants: a bounded number of users, each with a valid name and at
    /// least one credential, each credential within the bounds the controller enforces.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.users.len() > SCRAM_USERS_MAX {
            return Err(format!("{} SCRAM users", self.users.len()));
        }
        for (user, held) in self.users.iter() {
            if user.is_empty() || user.len() > SCRAM_USER_NAME_BYTES_MAX {
                return Err(format!("a SCRAM user name of {} bytes", user.len()));
            }
            if held.is_empty() {
                return Err(format!("SCRAM user {user} has no credential"));
            }
            for (mechanism, credential) in held {
                credential
                    .check(*mechanism)
                    .map_err(|e| format!("SCRAM credential of {user}: {e}"))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------

fn hmac_of<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length (longer ones are hashed first): this cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC(salted, "Server Key") == `server_key`, compared in constant time.
fn verify<M: Mac + KeyInit>(salted: &[u8], server_key: &[u8]) -> bool {
    let mut mac = <M as KeyInit>::new_from_slice(salted).expect("HMAC accepts keys of any length");
    mac.update(b"Server Key");
    mac.verify_slice(server_key).is_ok()
}

fn check_name(user: &str) -> Result<(), (i16, String)> {
    if user.is_empty() {
        return Err((
            UNACCEPTABLE_CREDENTIAL,
            "Username must not be empty".to_string(),
        ));
    }
    if user.len() > SCRAM_USER_NAME_BYTES_MAX {
        return Err((
            UNACCEPTABLE_CREDENTIAL,
            format!(
                "a user name of {} bytes is longer than {SCRAM_USER_NAME_BYTES_MAX} \
                 (SCRAM_USER_NAME_BYTES_MAX)",
                user.len()
            ),
        ));
    }
    Ok(())
}

fn check_mechanism(id: i8) -> Result<ScramMechanism, (i16, String)> {
    ScramMechanism::from_id(id).ok_or_else(|| {
        (
            UNSUPPORTED_SASL_MECHANISM,
            format!("Unknown SCRAM mechanism {id}"),
        )
    })
}

fn check_deletion(
    users: &ScramUsers,
    deletion: &ScramDeletion,
) -> Result<ScramMechanism, (i16, String)> {
    check_name(&deletion.user)?;
    let mechanism = check_mechanism(deletion.mechanism)?;
    let exists = users
        .get(&deletion.user)
        .is_some_and(|held| held.contains_key(&mechanism));
    if !exists {
        return Err((
            RESOURCE_NOT_FOUND,
            "Attempt to delete a user credential that does not exist".to_string(),
        ));
    }
    Ok(mechanism)
}

/// The upsertion's mechanism and iteration count, if it is acceptable. Beyond Kafka's checks
/// (name, mechanism, iterations) the salt must be 1 to `SCRAM_SALT_BYTES_MAX` bytes and the
/// salted password as long as the mechanism's hash: Kafka takes any, and a client that sent a
/// wrong one would only learn it when its user fails to authenticate.
fn check_upsertion(upsertion: &ScramUpsertion) -> Result<(ScramMechanism, u32), (i16, String)> {
    check_name(&upsertion.user)?;
    let mechanism = check_mechanism(upsertion.mechanism)?;
    let unacceptable = |message: String| Err((UNACCEPTABLE_CREDENTIAL, message));
    let iterations = match u32::try_from(upsertion.iterations) {
        Ok(i) if i < SCRAM_ITERATIONS_MIN => return unacceptable("Too few iterations".to_string()),
        Ok(i) if i > SCRAM_ITERATIONS_MAX => {
            return unacceptable("Too many iterations".to_string());
        }
        Ok(i) => i,
        Err(_) => return unacceptable("Too few iterations".to_string()),
    };
    if upsertion.salt.is_empty() || upsertion.salt.len() > SCRAM_SALT_BYTES_MAX {
        return unacceptable(format!(
            "a salt of {} bytes is not 1 to {SCRAM_SALT_BYTES_MAX} (SCRAM_SALT_BYTES_MAX)",
            upsertion.salt.len()
        ));
    }
    if upsertion.salted_password.len() != mechanism.digest_bytes() {
        return unacceptable(format!(
            "a salted password of {} bytes; {} makes {}",
            upsertion.salted_password.len(),
            mechanism.name(),
            mechanism.digest_bytes()
        ));
    }
    Ok((mechanism, iterations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    /// RFC 7677, section 3: user "user", password "pencil". The RFC gives the server's
    /// signature (v=) and the client's proof (p=) of one exchange; both follow from the
    /// credential, so the ServerKey and the StoredKey are checked through them.
    #[test]
    fn rfc_7677_sha_256_vector() {
        let credential = ScramCredential::from_password(
            ScramMechanism::Sha256,
            b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
            b"pencil",
            4096,
        );
        let auth_message = b"n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,\
            i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let m = ScramMechanism::Sha256;
        // ServerSignature = HMAC(ServerKey, AuthMessage): the server-final message's v=.
        assert_eq!(
            m.hmac(&credential.server_key, auth_message),
            b64("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) = StoredKey.
        let signature = m.hmac(&credential.stored_key, auth_message);
        let proof = b64("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        assert_eq!(m.hash(&client_key), credential.stored_key);
        assert_eq!(credential.iterations, 4096);
        assert!(credential.matches_password(m, b"pencil"));
        assert!(!credential.matches_password(m, b"pencil "));
    }

    /// SCRAM-SHA-512: expected bytes computed independently with Python's
    /// `hashlib.pbkdf2_hmac("sha512", b"pencil", salt, 4096)`, `hmac` and `hashlib.sha512`.
    #[test]
    fn sha_512_vector() {
        let m = ScramMechanism::Sha512;
        let salt = b"sluice-scram-512-test-salt".to_vec();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        assert_eq!(
            salted,
            hex(
                "11dbbfaf05c24dfade0743ba80f24526c01364be530a5c817531693571b90ae1\
                 db622e95c1e0803d52678b7a8c54c2441e819e76ac9fcba789bd94507449c5e6"
            )
        );
        let credential = ScramCredential::from_password(m, salt.clone(), b"pencil", 4096);
        assert_eq!(
            credential.stored_key,
            hex(
                "a89d8d84bcbfd0578a306686cadd575889b4ced510e6373bc8b8380f6fdfd55b\
                 00d20b9afc1d16865d08c8825a12603d16a545dfac48281e0d7c82bd65fb2d52"
            )
        );
        assert_eq!(
            credential.server_key,
            hex(
                "5e4ee3167e143dc134429bd47d146a6f6509a60d98113162447b66d81d1f4c2f\
                 dd0c7da979c1af28ef93bdeff39d1bcabddcbc4f1af6233e54bca3d617bcb682"
            )
        );
        assert_eq!(
            ScramCredential::from_salted_password(m, salt, &salted, 4096),
            credential
        );
        assert!(credential.matches_password(m, b"pencil"));
        assert!(!credential.matches_password(ScramMechanism::Sha256, b"pencil"));
        assert_eq!(credential.check(m), Ok(()));
        assert!(credential.check(ScramMechanism::Sha256).is_err());
    }

    #[test]
    fn mechanisms_by_id_and_name() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_id(m.id()), Some(m));
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(ScramMechanism::Sha256.id(), 1);
        assert_eq!(ScramMechanism::Sha512.name(), "SCRAM-SHA-512");
        assert_eq!(ScramMechanism::from_id(0), None);
        assert_eq!(ScramMechanism::from_id(3), None);
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
    }

    #[test]
    fn debug_hides_keys_and_salted_passwords() {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, vec![7; 16], b"pw", 4096);
        let shown = format!("{credential:?}");
        assert!(
            shown.contains("[hidden]") && shown.contains("4096"),
            "{shown}"
        );
        assert!(!shown.contains(&format!("{:?}", credential.stored_key)));
        let upsertion = upsert("u", 1, 4096);
        let shown = format!("{upsertion:?}");
        assert!(!shown.contains(&format!("{:?}", upsertion.salted_password)));
    }

    fn upsert(user: &str, mechanism: i8, iterations: i32) -> ScramUpsertion {
        let digest = ScramMechanism::from_id(mechanism).map_or(32, |m| m.digest_bytes());
        ScramUpsertion {
            user: user.to_string(),
            mechanism,
            iterations,
            salt: vec![1; 32],
            salted_password: vec![2; digest],
        }
    }

    fn delete(user: &str, mechanism: i8) -> ScramDeletion {
        ScramDeletion {
            user: user.to_string(),
            mechanism,
        }
    }

    fn codes(planned: &PlannedAlterations) -> Vec<(&str, i16)> {
        planned
            .results
            .iter()
            .map(|r| (r.user.as_str(), r.error_code))
            .collect()
    }

    fn users_of(names: &[(&str, ScramMechanism)]) -> ScramUsers {
        let mut credentials = ScramCredentials::default();
        let upserted: Vec<ScramUserCredential> = names
            .iter()
            .map(|(user, mechanism)| ScramUserCredential {
                user: user.to_string(),
                mechanism: *mechanism,
                // From a salted password: no PBKDF2, so ten thousand users take no time.
                credential: ScramCredential::from_salted_password(
                    *mechanism,
                    vec![3; 8],
                    &vec![4; mechanism.digest_bytes()],
                    4096,
                ),
            })
            .collect();
        credentials.apply(&upserted, &[]).unwrap();
        Arc::unwrap_or_clone(credentials.users)
    }

    #[test]
    fn each_user_is_accepted_or_refused_on_its_own() {
        let users = users_of(&[("old", ScramMechanism::Sha256)]);
        let planned = plan_alterations(
            &users,
            &[
                upsert("ok", 2, 4096),
                upsert("", 1, 4096),
                upsert("few", 1, 4095),
                upsert("many", 1, 16_385),
                upsert("negative", 1, -1),
                upsert("mech", 0, 4096),
                upsert("mech3", 3, 4096),
                upsert("twice", 1, 4096),
                upsert("max", 1, 16_384),
            ],
            &[
                delete("old", 1),
                delete("missing", 1),
                delete("old-512", 2),
                delete("twice", 2),
                delete("badmech", 9),
            ],
        )
        .unwrap();
        assert_eq!(
            codes(&planned),
            vec![
                ("old", NONE),
                ("missing", RESOURCE_NOT_FOUND),
                ("old-512", RESOURCE_NOT_FOUND),
                ("twice", DUPLICATE_RESOURCE),
                ("badmech", UNSUPPORTED_SASL_MECHANISM),
                ("ok", NONE),
                ("", UNACCEPTABLE_CREDENTIAL),
                ("few", UNACCEPTABLE_CREDENTIAL),
                ("many", UNACCEPTABLE_CREDENTIAL),
                ("negative", UNACCEPTABLE_CREDENTIAL),
                ("mech", UNSUPPORTED_SASL_MECHANISM),
                ("mech3", UNSUPPORTED_SASL_MECHANISM),
                ("max", NONE),
            ]
        );
        assert!(
            planned
                .results
                .iter()
                .all(|r| (r.error_code == NONE) == r.error_message.is_none())
        );
        assert_eq!(
            planned.deleted,
            vec![("old".to_string(), ScramMechanism::Sha256)]
        );
        let upserted: Vec<(&str, ScramMechanism, u32)> = planned
            .upserted
            .iter()
            .map(|u| (u.user.as_str(), u.mechanism, u.credential.iterations))
            .collect();
        assert_eq!(
            upserted,
            vec![
                ("ok", ScramMechanism::Sha512, 4096),
                ("max", ScramMechanism::Sha256, 16_384)
            ]
        );
        // The stored keys are the ones the salted password makes, not the salted password.
        let ok = &planned.upserted[0].credential;
        assert_eq!(
            *ok,
            ScramCredential::from_salted_password(
                ScramMechanism::Sha512,
                vec![1; 32],
                &[2; 64],
                4096
            )
        );
    }

    /// Kafka refuses a user named twice, even for two mechanisms, with one result.
    #[test]
    fn a_user_named_twice_is_refused_once() {
        let planned = plan_alterations(
            &ScramUsers::new(),
            &[
                upsert("u", 1, 4096),
                upsert("u", 2, 4096),
                upsert("v", 1, 4096),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            codes(&planned),
            vec![("u", DUPLICATE_RESOURCE), ("v", NONE)]
        );
        assert_eq!(planned.upserted.len(), 1);
    }

    #[test]
    fn bad_salts_and_salted_passwords_are_unacceptable() {
        let mut empty_salt = upsert("a", 1, 4096);
        empty_salt.salt.clear();
        let mut long_salt = upsert("b", 1, 4096);
        long_salt.salt = vec![0; SCRAM_SALT_BYTES_MAX + 1];
        let mut short = upsert("c", 2, 4096);
        short.salted_password.truncate(32);
        let long_name = upsert(&"n".repeat(SCRAM_USER_NAME_BYTES_MAX + 1), 1, 4096);
        let planned = plan_alterations(
            &ScramUsers::new(),
            &[empty_salt, long_salt, short, long_name],
            &[],
        )
        .unwrap();
        assert!(
            planned
                .results
                .iter()
                .all(|r| r.error_code == UNACCEPTABLE_CREDENTIAL),
            "{:?}",
            planned.results
        );
        assert!(planned.upserted.is_empty());
    }

    #[test]
    fn too_many_alterations_refuse_the_request() {
        let many: Vec<ScramDeletion> = (0..=SCRAM_ALTERATIONS_PER_COMMAND_MAX)
            .map(|i| delete(&format!("u{i}"), 1))
            .collect();
        let refused = plan_alterations(&ScramUsers::new(), &[], &many).unwrap_err();
        assert!(
            refused.contains("SCRAM_ALTERATIONS_PER_COMMAND_MAX"),
            "{refused}"
        );
    }

    #[test]
    fn new_users_past_the_limit_are_refused_but_deletions_make_room() {
        let names: Vec<String> = (0..SCRAM_USERS_MAX).map(|i| format!("u{i}")).collect();
        let full = users_of(
            &names
                .iter()
                .map(|n| (n.as_str(), ScramMechanism::Sha256))
                .collect::<Vec<_>>(),
        );
        let planned =
            plan_alterations(&full, &[upsert("new", 1, 4096), upsert("u1", 2, 4096)], &[]).unwrap();
        assert_eq!(
            codes(&planned),
            vec![("new", POLICY_VIOLATION), ("u1", NONE)]
        );
        let message = planned.results[0].error_message.as_deref().unwrap_or("");
        assert!(message.contains("SCRAM_USERS_MAX"), "{message}");
        let planned =
            plan_alterations(&full, &[upsert("new", 1, 4096)], &[delete("u0", 1)]).unwrap();
        assert_eq!(codes(&planned), vec![("u0", NONE), ("new", NONE)]);
    }

    #[test]
    fn apply_upserts_replaces_and_deletes_per_user_and_mechanism() {
        let mut credentials = ScramCredentials::default();
        let one = |user: &str, m: ScramMechanism, iterations: u32| ScramUserCredential {
            user: user.to_string(),
            mechanism: m,
            credential: ScramCredential::from_password(m, vec![5; 8], b"pw", iterations),
        };
        credentials
            .apply(
                &[
                    one("a", ScramMechanism::Sha256, 4096),
                    one("a", ScramMechanism::Sha512, 4096),
                    one("b", ScramMechanism::Sha256, 4096),
                ],
                &[],
            )
            .unwrap();
        credentials
            .apply(
                &[one("a", ScramMechanism::Sha256, 8192)],
                &[("b".to_string(), ScramMechanism::Sha256)],
            )
            .unwrap();
        assert_eq!(credentials.check_invariants(), Ok(()));
        let a = &credentials.users["a"];
        assert_eq!(a[&ScramMechanism::Sha256].iterations, 8192);
        assert_eq!(a[&ScramMechanism::Sha512].iterations, 4096);
        assert!(
            !credentials.users.contains_key("b"),
            "a user with none left is gone"
        );
        // A deletion of what is not there is a record that does not fit: refused.
        assert!(
            credentials
                .apply(&[], &[("b".to_string(), ScramMechanism::Sha256)])
                .is_err()
        );
        // The parts of a snapshot give the same credentials back.
        let back = ScramCredentials::from_parts(credentials.to_parts()).unwrap();
        assert_eq!(back, credentials);
        let mut twice = credentials.to_parts();
        twice.push(twice[0].clone());
        assert!(ScramCredentials::from_parts(twice).is_err());
        let mut bad = credentials.to_parts();
        bad[0].credential.iterations = 1;
        assert!(ScramCredentials::from_parts(bad).is_err());
    }
}
