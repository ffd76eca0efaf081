//! `sluice user set | delete | list`: the users' SCRAM credentials (SASL/SCRAM, and the
//! password check of SASL/PLAIN), through AlterUserScramCredentials and
//! DescribeUserScramCredentials as `kafka-configs.sh --entity-type users` uses them.
//!
//! `set` never sends the password: it draws a random salt, runs PBKDF2 here
//! (`ScramMechanism::salted_password`) and sends the salted password, as Kafka's admin
//! client does; the broker keeps only the keys derived from it.

use std::io::{BufRead, Read};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use sluice_metadata::ScramMechanism;
use sluice_metadata::limits::{SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN};
use sluice_net::messages::alter_user_scram_credentials_request::{
    AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
};
use sluice_net::messages::describe_user_scram_credentials_request::{
    DescribeUserScramCredentialsRequest, UserName,
};
use sluice_net::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
use sluice_net::{Request, Response};
use sluice_perf::client::Connection;

use super::{Table, Target, check, run, with_message};

/// Bytes of random salt per credential: 256 bits (Kafka's admin client draws 130 random bits,
/// written in base 36).
const SALT_BYTES: usize = 32;
/// Kafka's RESOURCE_NOT_FOUND: `list NAME` of a user with no credential.
const RESOURCE_NOT_FOUND: i16 = 91;

/// `sluice user ...`
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub target: Target,
}

/// A SCRAM mechanism, as SASL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl From<Mechanism> for ScramMechanism {
    fn from(mechanism: Mechanism) -> ScramMechanism {
        match mechanism {
            Mechanism::ScramSha256 => ScramMechanism::Sha256,
            Mechanism::ScramSha512 => ScramMechanism::Sha512,
        }
    }
}

/// The user subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user's SCRAM credential, or replace its password, for one mechanism. The
    /// password is the first line of stdin unless --password gives it (which other users of
    /// the host may see in the process list).
    #[command(
        after_help = "Examples:\n  sluice user set alice --mechanism SCRAM-SHA-512 \
                            --password s3cret\n  printf 's3cret\\n' | sluice user set alice"
    )]
    Set {
        /// The user name.
        name: String,
        /// The SCRAM mechanism the credential is for.
        #[arg(long, value_enum, default_value = "SCRAM-SHA-512")]
        mechanism: Mechanism,
        /// The password. [default: the first line of stdin]
        #[arg(long)]
        password: Option<String>,
        /// PBKDF2 iterations (4096 to 16384, Kafka's bounds).
        #[arg(long, default_value_t = SCRAM_ITERATIONS_MIN)]
        iterations: u32,
    },
    /// Delete a user's SCRAM credential for one mechanism, or all of them.
    #[command(after_help = "Example:\n  sluice user delete alice --mechanism SCRAM-SHA-256")]
    Delete {
        /// The user name.
        name: String,
        /// The mechanism whose credential goes. [default: every one the user has]
        #[arg(long, value_enum)]
        mechanism: Option<Mechanism>,
    },
    /// List the users with SCRAM credentials: their mechanisms and iteration counts (never
    /// their keys).
    #[command(after_help = "Examples:\n  sluice user list\n  sluice user list alice --format json")]
    List {
        /// Only these users (each must exist). [default: every user]
        names: Vec<String>,
    },
}

/// Runs `sluice user ...`.
pub fn main(args: UserArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    match args.command {
        UserCommand::Set {
            name,
            mechanism,
            password,
            iterations,
        } => {
            let mechanism = ScramMechanism::from(mechanism);
            if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
                bail!(
                    "--iterations {iterations} is not in {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}"
                );
            }
            let password = match password {
                Some(password) => password,
                None => password_from_stdin()?,
            };
            let upsertion = upsertion(&name, mechanism, password.as_bytes(), iterations)?;
            run(&target, |conn| async move {
                alter(&conn, vec![upsertion], Vec::new()).await
            })?;
            let mut table = Table::new(&["user", "mechanism", "iterations", "status"]);
            table.row(vec![
                json!(name),
                json!(mechanism.name()),
                json!(iterations),
                json!("set"),
            ]);
            table.print(target.format)
        }
        UserCommand::Delete { name, mechanism } => {
            let deleted = run(&target, |conn| async move {
                let mechanisms = match mechanism {
                    Some(mechanism) => vec![ScramMechanism::from(mechanism)],
                    None => mechanisms_of(&conn, &name).await?,
                };
                // One request per mechanism: Kafka refuses a user named twice in one
                // request (DUPLICATE_RESOURCE).
                for mechanism in &mechanisms {
                    let deletion = ScramCredentialDeletion {
                        name: name.clone(),
                        mechanism: mechanism.id(),
                    };
                    alter(&conn, Vec::new(), vec![deletion]).await?;
                }
                Ok((name, mechanisms))
            })?;
            let (name, mechanisms) = deleted;
            let mut table = Table::new(&["user", "mechanism", "status"]);
            for mechanism in mechanisms {
                table.row(vec![json!(name), json!(mechanism.name()), json!("deleted")]);
            }
            table.print(target.format)
        }
        UserCommand::List { names } => {
            let results = run(&target, |conn| async move { describe(&conn, &names).await })?;
            let mut table = Table::new(&["user", "mechanism", "iterations"]);
            for result in results {
                for info in result.credential_infos {
                    let mechanism = ScramMechanism::from_id(info.mechanism).map_or_else(
                        || format!("unknown ({})", info.mechanism),
                        |m| m.name().to_string(),
                    );
                    table.row(vec![
                        json!(result.user),
                        json!(mechanism),
                        json!(info.iterations),
                    ]);
                }
            }
            table.print(target.format)
        }
    }
}

/// The upsertion of `name`'s credential: a fresh random salt and the salted password.
fn upsertion(
    name: &str,
    mechanism: ScramMechanism,
    password: &[u8],
    iterations: u32,
) -> anyhow::Result<ScramCredentialUpsertion> {
    let salt = random_salt()?;
    let salted_password = mechanism.salted_password(password, &salt, iterations);
    Ok(ScramCredentialUpsertion {
        name: name.to_string(),
        mechanism: mechanism.id(),
        iterations: i32::try_from(iterations).context("--iterations")?,
        salt: Bytes::from(salt),
        salted_password: Bytes::from(salted_password),
    })
}

/// `SALT_BYTES` from the kernel's random source.
fn random_salt() -> anyhow::Result<Vec<u8>> {
    const SOURCE: &str = "/dev/urandom";
    let mut salt = vec![0u8; SALT_BYTES];
    std::fs::File::open(SOURCE)
        .and_then(|mut f| f.read_exact(&mut salt))
        .with_context(|| format!("reading a salt from {SOURCE}"))?;
    Ok(salt)
}

/// The first line of stdin, without its line ending; an empty password is refused.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password: give --password, or the password as the first line of stdin");
    }
    Ok(password)
}

/// AlterUserScramCredentials; fails on the first user refused, with the broker's reason.
async fn alter(
    conn: &Connection,
    upsertions: Vec<ScramCredentialUpsertion>,
    deletions: Vec<ScramCredentialDeletion>,
) -> anyhow::Result<()> {
    let request = Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
        deletions,
        upsertions,
    });
    let Response::AlterUserScramCredentials(response) = conn.request(request).await? else {
        bail!("AlterUserScramCredentials: unexpected response type");
    };
    for r in &response.results {
        check(r.error_code, || {
            with_message(&format!("user {}", r.user), r.error_message.as_deref())
        })?;
    }
    Ok(())
}

/// DescribeUserScramCredentials of `names` (every user when empty); fails on a user refused.
async fn describe(
    conn: &Connection,
    names: &[String],
) -> anyhow::Result<Vec<DescribeUserScramCredentialsResult>> {
    let request = Request::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest {
        users: (!names.is_empty()).then(|| {
            names
                .iter()
                .map(|name| UserName { name: name.clone() })
                .collect()
        }),
    });
    let Response::DescribeUserScramCredentials(response) = conn.request(request).await? else {
        bail!("DescribeUserScramCredentials: unexpected response type");
    };
    check(response.error_code, || {
        with_message("describing users", response.error_message.as_deref())
    })?;
    for r in &response.results {
        check(r.error_code, || {
            with_message(&format!("user {}", r.user), r.error_message.as_deref())
        })?;
    }
    Ok(response.results)
}

/// The mechanisms `name` has credentials for (RESOURCE_NOT_FOUND when none).
async fn mechanisms_of(conn: &Connection, name: &str) -> anyhow::Result<Vec<ScramMechanism>> {
    let results = describe(conn, &[name.to_string()]).await?;
    let mechanisms: Vec<ScramMechanism> = results
        .iter()
        .flat_map(|r| &r.credential_infos)
        .filter_map(|info| ScramMechanism::from_id(info.mechanism))
        .collect();
    if mechanisms.is_empty() {
        check(RESOURCE_NOT_FOUND, || format!("user {name}"))?;
    }
    Ok(mechanisms)
}
