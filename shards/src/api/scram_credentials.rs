//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the users' SCRAM
//! credentials, kept in the metadata (`sluice_metadata::scram`) and read from the image by the
//! SASL exchange.
//!
//! Alter goes through the controller as one command (forwarded to the quorum's leader in a
//! cluster), which accepts or refuses each user on its own and writes the accepted ones in
//! one record; Describe reads this broker's image, as a Kafka broker reads its metadata cache.
//! Describe shows each credential's mechanism and iteration count, never its salt or keys.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataImage, ScramDeletion, ScramUpsertion, ScramUserResult,
};
use sluice_net::ErrorCode;
use sluice_net::messages::alter_user_scram_credentials_request::AlterUserScramCredentialsRequest;
use sluice_net::messages::alter_user_scram_credentials_response::{
    AlterUserScramCredentialsResponse, AlterUserScramCredentialsResult,
};
use sluice_net::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
use sluice_net::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResponse, DescribeUserScramCredentialsResult,
};

use crate::errors::{controller_error_code, controller_error_message};
use crate::shard::Shard;

/// Describes the named users' credentials, or every user's when none is named (null or
/// empty, as Kafka has it).
pub fn describe(
    shard: &Shard,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    describe_in(&shard.image(), request)
}

/// Applies the upsertions and deletions through the controller and answers one result per
/// user named; a controller that refuses or fails the whole request gives every user its
/// error.
pub async fn alter(
    shard: &Rc<Shard>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let users = users_named(&request);
    let command = command_of(request);
    let results = match shard.controller.submit(command).await {
        Ok((_, CommandOutcome::ScramCredentialsAltered { results })) => results,
        Ok((_, other)) => every_user_refused(
            users,
            ErrorCode::UnknownServerError,
            format!("the controller answered {other:?}"),
        ),
        Err(e) => every_user_refused(
            users,
            controller_error_code(&e),
            controller_error_message(&e),
        ),
    };
    response_of(results)
}

/// Describe against one image (what `describe` does on the shard's).
fn describe_in(
    image: &MetadataImage,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let named: Vec<String> = request
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.name)
        .collect();
    let results = if named.is_empty() {
        image
            .scram_users()
            .map(|(user, _)| described(image, user))
            .collect()
    } else {
        // Kafka answers a user named twice DUPLICATE_RESOURCE, once.
        let mut times: BTreeMap<&str, usize> = BTreeMap::new();
        for name in &named {
            *times.entry(name).or_default() += 1;
        }
        let mut results = Vec::with_capacity(times.len());
        for name in &named {
            let Some(count) = times.remove(name.as_str()) else {
                continue; // answered at its first mention
            };
            results.push(if count > 1 {
                DescribeUserScramCredentialsResult {
                    user: name.clone(),
                    error_code: ErrorCode::DuplicateResource.code(),
                    error_message: Some(format!(
                        "Cannot describe SCRAM credentials for the same user twice in a single \
                         request: {name}"
                    )),
                    credential_infos: Vec::new(),
                }
            } else {
                described(image, name)
            });
        }
        results
    };
    DescribeUserScramCredentialsResponse {
        throttle_time_ms: 0,
        error_code: 0,
        error_message: None,
        results,
    }
}

/// One user's mechanisms and iteration counts, or RESOURCE_NOT_FOUND.
fn described(image: &MetadataImage, user: &str) -> DescribeUserScramCredentialsResult {
    match image.scram_user(user) {
        Some(held) => DescribeUserScramCredentialsResult {
            user: user.to_string(),
            error_code: 0,
            error_message: None,
            credential_infos: held
                .iter()
                .map(|(mechanism, credential)| CredentialInfo {
                    mechanism: mechanism.id(),
                    // Bounded by SCRAM_ITERATIONS_MAX, far below i32::MAX.
                    iterations: i32::try_from(credential.iterations).unwrap_or(i32::MAX),
                })
                .collect(),
        },
        None => DescribeUserScramCredentialsResult {
            user: user.to_string(),
            error_code: ErrorCode::ResourceNotFound.code(),
            error_message: Some(format!(
                "Attempt to describe a user credential that does not exist: {user}"
            )),
            credential_infos: Vec::new(),
        },
    }
}

/// The request as a metadata command: the controller checks everything.
fn command_of(request: AlterUserScramCredentialsRequest) -> MetadataCommand {
    MetadataCommand::AlterScramCredentials {
        upsertions: request
            .upsertions
            .into_iter()
            .map(|u| ScramUpsertion {
                user: u.name,
                mechanism: u.mechanism,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            })
            .collect(),
        deletions: request
            .deletions
            .into_iter()
            .map(|d| ScramDeletion {
                user: d.name,
                mechanism: d.mechanism,
            })
            .collect(),
    }
}

/// Every user the request names, once each, in the order it first names them (deletions
/// first, as the controller reads them).
fn users_named(request: &AlterUserScramCredentialsRequest) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    let names = request
        .deletions
        .iter()
        .map(|d| &d.name)
        .chain(request.upsertions.iter().map(|u| &u.name));
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if seen.insert(name.as_str()) {
            users.push(name.clone());
        }
    }
    users
}

fn every_user_refused(
    users: Vec<String>,
    code: ErrorCode,
    message: String,
) -> Vec<ScramUserResult> {
    users
        .into_iter()
        .map(|user| ScramUserResult {
            user,
            error_code: code.code(),
            error_message: Some(message.clone()),
        })
        .collect()
}

fn response_of(results: Vec<ScramUserResult>) -> AlterUserScramCredentialsResponse {
    AlterUserScramCredentialsResponse {
        throttle_time_ms: 0,
        results: results
            .into_iter()
            .map(|r| AlterUserScramCredentialsResult {
                user: r.user,
                error_code: r.error_code,
                error_message: r.error_message,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::{MetadataRecord, ScramCredential, ScramMechanism, ScramUserCredential};
    use sluice_net::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use sluice_net::messages::describe_user_scram_credentials_request::UserName;

    /// A user's result: name, error code, (mechanism, iterations) of each credential.
    type Described = (String, i16, Vec<(i8, i32)>);

    fn image_with(users: &[(&str, ScramMechanism, u32)]) -> MetadataImage {
        let image = MetadataImage::empty("c".to_string(), 1);
        let record = MetadataRecord::AlterScramCredentials {
            upserted: users
                .iter()
                .map(|(user, mechanism, iterations)| ScramUserCredential {
                    user: user.to_string(),
                    mechanism: *mechanism,
                    credential: ScramCredential::from_password(
                        *mechanism,
                        b"salt".to_vec(),
                        b"pw",
                        *iterations,
                    ),
                })
                .collect(),
            deleted: Vec::new(),
        };
        image.apply(1, &record).unwrap().0
    }

    fn named(users: Option<&[&str]>) -> DescribeUserScramCredentialsRequest {
        DescribeUserScramCredentialsRequest {
            users: users.map(|u| {
                u.iter()
                    .map(|name| UserName {
                        name: name.to_string(),
                    })
                    .collect()
            }),
        }
    }

    fn summary(response: &DescribeUserScramCredentialsResponse) -> Vec<Described> {
        response
            .results
            .iter()
            .map(|r| {
                (
                    r.user.clone(),
                    r.error_code,
                    r.credential_infos
                        .iter()
                        .map(|c| (c.mechanism, c.iterations))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn describe_every_user_when_none_is_named() {
        let image = image_with(&[
            ("bob", ScramMechanism::Sha512, 8192),
            ("alice", ScramMechanism::Sha256, 4096),
            ("alice", ScramMechanism::Sha512, 4096),
        ]);
        let expected = vec![
            ("alice".to_string(), 0, vec![(1, 4096), (2, 4096)]),
            ("bob".to_string(), 0, vec![(2, 8192)]),
        ];
        assert_eq!(summary(&describe_in(&image, named(None))), expected);
        assert_eq!(summary(&describe_in(&image, named(Some(&[])))), expected);
        let empty = MetadataImage::empty("c".to_string(), 1);
        assert!(describe_in(&empty, named(None)).results.is_empty());
    }

    #[test]
    fn describe_named_users_unknown_and_duplicate() {
        let image = image_with(&[("alice", ScramMechanism::Sha256, 4096)]);
        let response = describe_in(
            &image,
            named(Some(&["nobody", "alice", "dup", "dup", "dup"])),
        );
        assert_eq!(
            summary(&response),
            vec![
                (
                    "nobody".to_string(),
                    ErrorCode::ResourceNotFound.code(),
                    vec![]
                ),
                ("alice".to_string(), 0, vec![(1, 4096)]),
                (
                    "dup".to_string(),
                    ErrorCode::DuplicateResource.code(),
                    vec![]
                ),
            ]
        );
        assert!(response.results[0].error_message.is_some());
        assert_eq!(response.error_code, 0);
    }

    #[test]
    fn alter_request_becomes_one_command_and_every_user_gets_a_result() {
        let request = AlterUserScramCredentialsRequest {
            deletions: vec![ScramCredentialDeletion {
                name: "gone".to_string(),
                mechanism: 1,
            }],
            upsertions: vec![
                ScramCredentialUpsertion {
                    name: "new".to_string(),
                    mechanism: 2,
                    iterations: 4096,
                    salt: bytes::Bytes::from_static(b"salt"),
                    salted_password: bytes::Bytes::from(vec![9; 64]),
                },
                ScramCredentialUpsertion {
                    name: "gone".to_string(),
                    mechanism: 2,
                    iterations: 4096,
                    salt: bytes::Bytes::from_static(b"salt"),
                    salted_password: bytes::Bytes::from(vec![9; 64]),
                },
            ],
        };
        assert_eq!(users_named(&request), vec!["gone", "new"]);
        let MetadataCommand::AlterScramCredentials {
            upsertions,
            deletions,
        } = command_of(request)
        else {
            panic!("not a SCRAM command");
        };
        assert_eq!(upsertions.len(), 2);
        assert_eq!(upsertions[0].salted_password, vec![9; 64]);
        assert_eq!(deletions[0].user, "gone");
        let refused = every_user_refused(
            vec!["a".to_string(), "b".to_string()],
            ErrorCode::BrokerNotAvailable,
            "stopped".to_string(),
        );
        let response = response_of(refused);
        assert_eq!(response.results.len(), 2);
        assert!(
            response
                .results
                .iter()
                .all(|r| r.error_code == ErrorCode::BrokerNotAvailable.code())
        );
    }
}
