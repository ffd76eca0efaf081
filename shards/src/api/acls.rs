//! DescribeAcls, CreateAcls and DeleteAcls (KIP-140): the ACL bindings kept in the metadata
//! (`sluice_metadata::acls`) that the authorizer (`security::authorizer`) reads.
//!
//! Create and Delete go through the controller as one command each (forwarded to the
//! quorum's leader in a cluster), which decides every binding or filter on its own;
//! Describe reads this broker's image. Without the authorizer (`--authorizer acl`) all
//! three answer SECURITY_DISABLED, as Kafka does without `authorizer.class.name`.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_metadata::{
    AclBinding, AclEntry, AclFilter, AclOperation, AclPattern, AclPatternType, AclPermission,
    AclResourceType, CommandOutcome, MetadataCommand, MetadataImage,
};
use sluice_net::ErrorCode;
use sluice_net::messages::create_acls_request::{AclCreation, CreateAclsRequest};
use sluice_net::messages::create_acls_response::{AclCreationResult, CreateAclsResponse};
use sluice_net::messages::delete_acls_request::{DeleteAclsFilter, DeleteAclsRequest};
use sluice_net::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl, DeleteAclsResponse,
};
use sluice_net::messages::describe_acls_request::DescribeAclsRequest;
use sluice_net::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource, DescribeAclsResponse,
};

use crate::errors::{controller_error_code, controller_error_message};
use crate::shard::Shard;

const SECURITY_DISABLED_MESSAGE: &str = "No Authorizer is configured on the broker";

/// The bindings one filter matches, grouped by resource pattern.
pub fn describe(shard: &Shard, request: DescribeAclsRequest) -> DescribeAclsResponse {
    if !shard.config.security.authorizer.enabled {
        return DescribeAclsResponse {
            error_code: ErrorCode::SecurityDisabled.code(),
            error_message: Some(SECURITY_DISABLED_MESSAGE.to_string()),
            ..Default::default()
        };
    }
    let filter = AclFilter::from_codes(
        request.resource_type_filter,
        request.resource_name_filter,
        request.pattern_type_filter,
        request.principal_filter,
        request.host_filter,
        request.operation,
        request.permission_type,
    );
    match filter {
        Ok(filter) => describe_in(&shard.image(), &filter),
        Err(message) => DescribeAclsResponse {
            error_code: ErrorCode::InvalidRequest.code(),
            error_message: Some(message),
            ..Default::default()
        },
    }
}

fn describe_in(image: &MetadataImage, filter: &AclFilter) -> DescribeAclsResponse {
    let mut resources: BTreeMap<AclPattern, Vec<AclDescription>> = BTreeMap::new();
    for binding in image.acl_bindings().filter(|b| filter.matches(b)) {
        resources
            .entry(binding.pattern)
            .or_default()
            .push(AclDescription {
                principal: binding.entry.principal,
                host: binding.entry.host,
                operation: binding.entry.operation.code(),
                permission_type: binding.entry.permission.code(),
            });
    }
    DescribeAclsResponse {
        resources: resources
            .into_iter()
            .map(|(pattern, acls)| DescribeAclsResource {
                resource_type: pattern.resource_type.code(),
                resource_name: pattern.name,
                pattern_type: pattern.pattern_type.code(),
                acls,
            })
            .collect(),
        ..Default::default()
    }
}

/// Creates the bindings, one result per creation in request order.
pub async fn create(shard: &Rc<Shard>, request: CreateAclsRequest) -> CreateAclsResponse {
    let count = request.creations.len();
    if !shard.config.security.authorizer.enabled {
        return CreateAclsResponse {
            results: vec![refused(ErrorCode::SecurityDisabled, SECURITY_DISABLED_MESSAGE); count],
            ..Default::default()
        };
    }
    // Bindings with a value Kafka lacks are refused here; the rest go to the controller.
    let parsed: Vec<Result<AclBinding, String>> =
        request.creations.into_iter().map(binding_of).collect();
    let creations: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let mut decided = if creations.is_empty() {
        Ok(Vec::new())
    } else {
        match shard
            .controller
            .submit(MetadataCommand::CreateAcls { creations })
            .await
        {
            Ok((_, CommandOutcome::AclsCreated { results })) => Ok(results),
            Ok((_, other)) => Err((
                ErrorCode::UnknownServerError,
                format!("the controller answered {other:?}"),
            )),
            Err(e) => Err((controller_error_code(&e), controller_error_message(&e))),
        }
    }
    .map(Vec::into_iter);
    let results = parsed
        .into_iter()
        .map(|p| match (p, &mut decided) {
            (Err(message), _) => refused(ErrorCode::InvalidRequest, &message),
            (Ok(_), Ok(results)) => results
                .next()
                .map(|r| AclCreationResult {
                    error_code: r.error_code,
                    error_message: r.error_message,
                })
                .unwrap_or_else(|| refused(ErrorCode::UnknownServerError, "no result")),
            (Ok(_), Err((code, message))) => refused(*code, message),
        })
        .collect();
    CreateAclsResponse {
        results,
        ..Default::default()
    }
}

/// Deletes every binding each filter matches, one result per filter listing them.
pub async fn delete(shard: &Rc<Shard>, request: DeleteAclsRequest) -> DeleteAclsResponse {
    if !shard.config.security.authorizer.enabled {
        return DeleteAclsResponse {
            filter_results: request
                .filters
                .iter()
                .map(|_| filter_refused(ErrorCode::SecurityDisabled, SECURITY_DISABLED_MESSAGE))
                .collect(),
            ..Default::default()
        };
    }
    let parsed: Vec<Result<AclFilter, String>> =
        request.filters.into_iter().map(filter_of).collect();
    let filters: Vec<AclFilter> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let mut decided = if filters.is_empty() {
        Ok(Vec::new())
    } else {
        match shard
            .controller
            .submit(MetadataCommand::DeleteAcls { filters })
            .await
        {
            Ok((_, CommandOutcome::AclsDeleted { results })) => Ok(results),
            Ok((_, other)) => Err((
                ErrorCode::UnknownServerError,
                format!("the controller answered {other:?}"),
            )),
            Err(e) => Err((controller_error_code(&e), controller_error_message(&e))),
        }
    }
    .map(Vec::into_iter);
    let filter_results = parsed
        .into_iter()
        .map(|p| match (p, &mut decided) {
            (Err(message), _) => filter_refused(ErrorCode::InvalidRequest, &message),
            (Ok(_), Ok(results)) => match results.next() {
                Some(result) => DeleteAclsFilterResult {
                    matching_acls: result.deleted.into_iter().map(matching_acl).collect(),
                    ..Default::default()
                },
                None => filter_refused(ErrorCode::UnknownServerError, "no result"),
            },
            (Ok(_), Err((code, message))) => filter_refused(*code, message),
        })
        .collect();
    DeleteAclsResponse {
        filter_results,
        ..Default::default()
    }
}

/// The binding of a creation, or why its codes are not one (INVALID_REQUEST).
fn binding_of(c: AclCreation) -> Result<AclBinding, String> {
    let resource_type = AclResourceType::from_code(c.resource_type)
        .ok_or_else(|| format!("Invalid resourceType {}", c.resource_type))?;
    let pattern_type = AclPatternType::from_code(c.resource_pattern_type)
        .ok_or_else(|| format!("Invalid patternType {}", c.resource_pattern_type))?;
    let operation = AclOperation::from_code(c.operation)
        .ok_or_else(|| format!("Invalid operation {}", c.operation))?;
    let permission = AclPermission::from_code(c.permission_type)
        .ok_or_else(|| format!("Invalid permissionType {}", c.permission_type))?;
    Ok(AclBinding {
        pattern: AclPattern {
            resource_type,
            pattern_type,
            name: c.resource_name,
        },
        entry: AclEntry {
            principal: c.principal,
            host: c.host,
            operation,
            permission,
        },
    })
}

fn filter_of(f: DeleteAclsFilter) -> Result<AclFilter, String> {
    AclFilter::from_codes(
        f.resource_type_filter,
        f.resource_name_filter,
        f.pattern_type_filter,
        f.principal_filter,
        f.host_filter,
        f.operation,
        f.permission_type,
    )
}

fn matching_acl(binding: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl {
        error_code: 0,
        error_message: None,
        resource_type: binding.pattern.resource_type.code(),
        resource_name: binding.pattern.name,
        pattern_type: binding.pattern.pattern_type.code(),
        principal: binding.entry.principal,
        host: binding.entry.host,
        operation: binding.entry.operation.code(),
        permission_type: binding.entry.permission.code(),
    }
}

fn refused(code: ErrorCode, message: &str) -> AclCreationResult {
    AclCreationResult {
        error_code: code.code(),
        error_message: Some(message.to_string()),
    }
}

fn filter_refused(code: ErrorCode, message: &str) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult {
        error_code: code.code(),
        error_message: Some(message.to_string()),
        matching_acls: Vec::new(),
    }
}
