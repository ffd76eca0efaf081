//! DescribeClientQuotas and AlterClientQuotas (KIP-546): the client quotas kept in the
//! metadata (`sluice_metadata::quotas`) and enforced by every shard (`crate::quota`).
//!
//! Alter goes through the controller as one command (forwarded to the quorum's leader in a
//! cluster), which accepts or refuses each entity on its own and writes the accepted ones in
//! one record; with `validate_only` the same plan runs against this broker's image and nothing
//! is written. Describe reads this broker's image, as a Kafka broker reads its metadata cache.

use std::rc::Rc;

use sluice_metadata::quotas::{self, RawComponent};
use sluice_metadata::{
    CommandOutcome, MetadataCommand, QuotaAlteration, QuotaEntityResult, QuotaValue,
};
use sluice_net::ErrorCode;
use sluice_net::messages::alter_client_quotas_request::AlterClientQuotasRequest;
use sluice_net::messages::alter_client_quotas_response::{
    AlterClientQuotasResponse, EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use sluice_net::messages::describe_client_quotas_request::DescribeClientQuotasRequest;
use sluice_net::messages::describe_client_quotas_response::{
    DescribeClientQuotasResponse, EntityData, EntryData, ValueData,
};

use crate::errors::{controller_error_code, controller_error_message};
use crate::shard::Shard;

/// The entities the request's filter matches, with their values, or the whole request's error.
pub fn describe(
    shard: &Shard,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    describe_in(shard.image().client_quotas(), request)
}

/// Applies the alterations through the controller (or only checks them, `validate_only`) and
/// answers one result per entity; a controller that refuses or fails the whole request gives
/// every entity its error.
pub async fn alter(
    shard: &Rc<Shard>,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let validate_only = request.validate_only;
    let alterations = alterations_of(request);
    let entities: Vec<_> = alterations.iter().map(|a| a.entity.clone()).collect();
    let results = if validate_only {
        // The plan writes nothing: run it here against this broker's image.
        match quotas::plan_alterations(shard.image().client_quotas(), &alterations) {
            Ok(planned) => planned.results,
            Err(message) => every_entity_refused(entities, ErrorCode::InvalidRequest, message),
        }
    } else {
        match shard
            .controller
            .submit(MetadataCommand::AlterClientQuotas { alterations })
            .await
        {
            Ok((_, CommandOutcome::ClientQuotasAltered { results })) => results,
            Ok((_, other)) => every_entity_refused(
                entities,
                ErrorCode::UnknownServerError,
                format!("the controller answered {other:?}"),
            ),
            Err(e) => every_entity_refused(
                entities,
                controller_error_code(&e),
                controller_error_message(&e),
            ),
        }
    };
    AlterClientQuotasResponse {
        throttle_time_ms: 0,
        entries: results
            .into_iter()
            .map(|r| AlteredEntry {
                error_code: r.error_code,
                error_message: r.error_message,
                entity: r
                    .entity
                    .into_iter()
                    .map(|(entity_type, entity_name)| AlteredEntity {
                        entity_type,
                        entity_name,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Describe against one image's quotas (what `describe` does on the shard's).
fn describe_in(
    entities: &sluice_metadata::QuotaEntities,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let components: Vec<RawComponent> = request
        .components
        .into_iter()
        .map(|c| (c.entity_type, c.match_type, c.match_))
        .collect();
    match quotas::describe(entities, &components, request.strict) {
        Ok(matched) => DescribeClientQuotasResponse {
            throttle_time_ms: 0,
            error_code: 0,
            error_message: None,
            entries: Some(
                matched
                    .into_iter()
                    .map(|(entity, values)| EntryData {
                        entity: entity
                            .components()
                            .into_iter()
                            .map(|(kind, name)| EntityData {
                                entity_type: kind.to_string(),
                                entity_name: name.map(str::to_string),
                            })
                            .collect(),
                        values: values
                            .iter()
                            .map(|(key, value)| ValueData {
                                key: key.name().to_string(),
                                value: value.get(),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
        },
        Err((error_code, message)) => DescribeClientQuotasResponse {
            throttle_time_ms: 0,
            error_code,
            error_message: Some(message),
            entries: None,
        },
    }
}

/// The request's entries as the controller's alterations (a removal is a `None` value).
fn alterations_of(request: AlterClientQuotasRequest) -> Vec<QuotaAlteration> {
    request
        .entries
        .into_iter()
        .map(|entry| QuotaAlteration {
            entity: entry
                .entity
                .into_iter()
                .map(|e| (e.entity_type, e.entity_name))
                .collect(),
            ops: entry
                .ops
                .into_iter()
                .map(|op| (op.key, (!op.remove).then(|| QuotaValue::new(op.value))))
                .collect(),
        })
        .collect()
}

fn every_entity_refused(
    entities: Vec<sluice_metadata::quotas::RawEntity>,
    code: ErrorCode,
    message: String,
) -> Vec<QuotaEntityResult> {
    entities
        .into_iter()
        .map(|entity| QuotaEntityResult {
            entity,
            error_code: code.code(),
            error_message: Some(message.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_net::messages::alter_client_quotas_request::{
        EntityData as AlterEntity, EntryData as AlterEntry, OpData,
    };
    use sluice_net::messages::describe_client_quotas_request::ComponentData;

    #[test]
    fn alterations_carry_removals_as_none_and_describe_reads_them_back() {
        let request = AlterClientQuotasRequest {
            entries: vec![AlterEntry {
                entity: vec![
                    AlterEntity {
                        entity_type: "user".to_string(),
                        entity_name: Some("alice".to_string()),
                    },
                    AlterEntity {
                        entity_type: "client-id".to_string(),
                        entity_name: None,
                    },
                ],
                ops: vec![
                    OpData {
                        key: "producer_byte_rate".to_string(),
                        value: 1024.0,
                        remove: false,
                    },
                    OpData {
                        key: "consumer_byte_rate".to_string(),
                        value: 0.0,
                        remove: true,
                    },
                ],
            }],
            validate_only: false,
        };
        let alterations = alterations_of(request);
        assert_eq!(alterations[0].ops[1].1, None);
        let planned = quotas::plan_alterations(&Default::default(), &alterations).unwrap();
        let image = sluice_metadata::MetadataImage::empty("c".to_string(), 1);
        let (image, _) = image
            .apply(
                1,
                &sluice_metadata::MetadataRecord::AlterClientQuotas {
                    changes: planned.changes,
                },
            )
            .unwrap();
        let response = describe_in(
            image.client_quotas(),
            DescribeClientQuotasRequest {
                components: vec![ComponentData {
                    entity_type: "client-id".to_string(),
                    match_type: 1,
                    match_: None,
                }],
                strict: false,
            },
        );
        let entries = response.entries.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].entity[0].entity_name.as_deref(), Some("alice"));
        assert_eq!(entries[0].entity[1].entity_name, None);
        assert_eq!(entries[0].values[0].key, "producer_byte_rate");
        assert_eq!(entries[0].values[0].value, 1024.0);
        let refused = describe_in(
            image.client_quotas(),
            DescribeClientQuotasRequest {
                components: vec![ComponentData {
                    entity_type: "user".to_string(),
                    match_type: 0,
                    match_: None,
                }],
                strict: false,
            },
        );
        assert_eq!(refused.error_code, ErrorCode::InvalidRequest.code());
        assert!(refused.entries.is_none());
    }
}
