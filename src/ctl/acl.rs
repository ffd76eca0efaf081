//! `sluice acl create | delete | list`: the ACLs of `--authorizer acl`, through CreateAcls,
//! DeleteAcls and DescribeAcls as `kafka-acls.sh` and `rpk acl` use them.
//!
//! The CLI speaks plaintext as an unauthenticated client: on a broker with ACLs, its
//! principal (`User:ANONYMOUS`) needs ALTER (create, delete) or DESCRIBE (list) on the
//! cluster, or to be one of `--super-users`.

use anyhow::bail;
use serde_json::json;
use sluice_metadata::acls::{ACL_WILDCARD, CLUSTER_RESOURCE_NAME};
use sluice_metadata::acls::{AclOperation, AclPatternType, AclPermission, AclResourceType};
use sluice_net::messages::create_acls_request::{AclCreation, CreateAclsRequest};
use sluice_net::messages::delete_acls_request::{DeleteAclsFilter, DeleteAclsRequest};
use sluice_net::messages::describe_acls_request::DescribeAclsRequest;
use sluice_net::{Request, Response};

use super::{Table, Target, check, run, with_message};

/// Kafka's code for "any" in a filter's resource type, pattern type, operation and
/// permission.
const FILTER_ANY: i8 = 1;
/// Kafka's MATCH pattern type: the literal name, `*` and the prefixes that apply.
const PATTERN_MATCH: i8 = 2;

/// `sluice acl ...`
#[derive(Debug, clap::Args)]
pub struct AclArgs {
    #[command(subcommand)]
    pub command: AclCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The resources an ACL names (or a filter matches): any number of each.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResourceArgs {
    /// A topic (`*`: every topic).
    #[arg(long, value_name = "NAME")]
    topic: Vec<String>,
    /// A consumer group (`*`: every group).
    #[arg(long, value_name = "NAME")]
    group: Vec<String>,
    /// A transactional id (`*`: every one).
    #[arg(long, value_name = "ID")]
    transactional_id: Vec<String>,
    /// The cluster (the resource of cluster-wide operations: CREATE, ALTER, IDEMPOTENT_WRITE,
    /// DESCRIBE_CONFIGS, ...).
    #[arg(long)]
    cluster: bool,
}

/// An operation: as Kafka's protocol names it (`idempotent_write`, any case), as
/// kafka-acls.sh does (`IdempotentWrite`), or in kebab case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OperationArg {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    #[value(aliases = ["cluster-action", "clusteraction"])]
    ClusterAction,
    #[value(aliases = ["describe-configs", "describeconfigs"])]
    DescribeConfigs,
    #[value(aliases = ["alter-configs", "alterconfigs"])]
    AlterConfigs,
    #[value(aliases = ["idempotent-write", "idempotentwrite"])]
    IdempotentWrite,
    #[value(aliases = ["create-tokens", "createtokens"])]
    CreateTokens,
    #[value(aliases = ["describe-tokens", "describetokens"])]
    DescribeTokens,
}

/// How a filter matches the ACLs' resource names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PatternFilterArg {
    /// ACLs of exactly the name given, as a literal name.
    Literal,
    /// ACLs of exactly the name given, as a prefix.
    Prefixed,
    /// ACLs that apply to the name: its literal ACLs, `*`, and the prefixes of it.
    Match,
    /// ACLs of the name given, literal or prefixed.
    Any,
}

/// Principal, host, operations and permission of a filter.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// Only ACLs of this principal, e.g. User:alice.
    #[arg(long)]
    principal: Option<String>,
    /// Only ACLs of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only ACLs of these operations. [default: any]
    #[arg(
        long = "operation",
        value_enum,
        ignore_case = true,
        value_name = "OPERATION"
    )]
    operations: Vec<OperationArg>,
    /// Only ALLOW ACLs.
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Only DENY ACLs.
    #[arg(long)]
    deny: bool,
}

/// The ACL subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Create ACLs: each operation for the principal on each resource named.
    #[command(
        after_help = "Examples:\n  sluice acl create --principal User:alice --operation read --operation describe --topic orders --group billing\n  \
                      sluice acl create --principal User:loader --operation write --topic logs- --prefixed\n  \
                      sluice acl create --principal User:bob --operation all --topic '*' --deny --host 10.0.0.7"
    )]
    Create {
        #[command(flatten)]
        resources: ResourceArgs,
        /// Who: `User:NAME` (`User:*`: everyone).
        #[arg(long)]
        principal: String,
        /// From where: an IP address, or `*` for anywhere.
        #[arg(long, default_value = ACL_WILDCARD)]
        host: String,
        /// What the principal may (or, with --deny, may not) do.
        #[arg(
            long = "operation",
            value_enum,
            ignore_case = true,
            required = true,
            value_name = "OPERATION"
        )]
        operations: Vec<OperationArg>,
        /// The names are prefixes: the ACLs apply to every resource whose name starts so.
        #[arg(long)]
        prefixed: bool,
        /// Deny the operations instead of allowing them (a DENY wins over any ALLOW).
        #[arg(long)]
        deny: bool,
    },
    /// Delete the ACLs the filter matches (every part not given matches anything).
    #[command(
        after_help = "Examples:\n  sluice acl delete --principal User:alice --topic orders\n  \
                      sluice acl delete --topic logs- --pattern prefixed"
    )]
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// How resource names match. [default: literal, as kafka-acls.sh --remove]
        #[arg(long, value_enum, default_value = "literal")]
        pattern: PatternFilterArg,
    },
    /// List the ACLs the filter matches (every part not given matches anything).
    #[command(
        after_help = "Examples:\n  sluice acl list\n  sluice acl list --principal User:alice\n  \
                      sluice acl list --topic orders --pattern match"
    )]
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// How resource names match. [default: any]
        #[arg(long, value_enum, default_value = "any")]
        pattern: PatternFilterArg,
    },
}

/// Runs `sluice acl ...`.
pub fn main(args: AclArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    match args.command {
        AclCommand::Create {
            resources,
            principal,
            host,
            operations,
            prefixed,
            deny,
        } => {
            let named = resources.named();
            if named.is_empty() {
                bail!("name a resource: --topic, --group, --transactional-id or --cluster");
            }
            let pattern = if prefixed {
                AclPatternType::Prefixed
            } else {
                AclPatternType::Literal
            };
            let permission = if deny {
                AclPermission::Deny
            } else {
                AclPermission::Allow
            };
            let mut creations = Vec::new();
            for (resource_type, resource_name) in &named {
                for operation in &operations {
                    creations.push(AclCreation {
                        resource_type: resource_type.code(),
                        resource_name: resource_name.clone(),
                        resource_pattern_type: pattern.code(),
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: operation.operation().code(),
                        permission_type: permission.code(),
                    });
                }
            }
            let request = Request::CreateAcls(CreateAclsRequest {
                creations: creations.clone(),
            });
            run(&target, |conn| async move {
                let Response::CreateAcls(response) = conn.request(request).await? else {
                    bail!("CreateAcls: unexpected response type");
                };
                for result in &response.results {
                    check(result.error_code, || {
                        with_message("creating ACLs", result.error_message.as_deref())
                    })?;
                }
                Ok(())
            })?;
            let mut table = binding_table(true);
            for c in &creations {
                table.row(binding_row(
                    c.resource_type,
                    &c.resource_name,
                    c.resource_pattern_type,
                    &c.principal,
                    &c.host,
                    c.operation,
                    c.permission_type,
                    Some("created"),
                ));
            }
            table.print(target.format)
        }
        AclCommand::Delete { filter, pattern } => {
            if filter.resources.named().is_empty() && filter.principal.is_none() {
                // A filter of neither would delete every ACL of the others' kind at once.
                bail!(
                    "name what to delete: a resource (--topic, --group, --transactional-id, --cluster) or --principal"
                );
            }
            let filters = filter.filters(pattern);
            let request = Request::DeleteAcls(DeleteAclsRequest {
                filters: filters.clone(),
            });
            let results = run(&target, |conn| async move {
                let Response::DeleteAcls(response) = conn.request(request).await? else {
                    bail!("DeleteAcls: unexpected response type");
                };
                Ok(response.filter_results)
            })?;
            let mut table = binding_table(true);
            for result in &results {
                check(result.error_code, || {
                    with_message("deleting ACLs", result.error_message.as_deref())
                })?;
                for acl in &result.matching_acls {
                    let status = if acl.error_code == 0 {
                        "deleted".to_string()
                    } else {
                        sluice_perf::client::error_name(acl.error_code)
                    };
                    table.row(binding_row(
                        acl.resource_type,
                        &acl.resource_name,
                        acl.pattern_type,
                        &acl.principal,
                        &acl.host,
                        acl.operation,
                        acl.permission_type,
                        Some(&status),
                    ));
                }
            }
            table.print(target.format)
        }
        AclCommand::List { filter, pattern } => {
            let filters = filter.filters(pattern);
            let resources = run(&target, |conn| async move {
                let mut resources = Vec::new();
                for f in filters {
                    let request = Request::DescribeAcls(DescribeAclsRequest {
                        resource_type_filter: f.resource_type_filter,
                        resource_name_filter: f.resource_name_filter,
                        pattern_type_filter: f.pattern_type_filter,
                        principal_filter: f.principal_filter,
                        host_filter: f.host_filter,
                        operation: f.operation,
                        permission_type: f.permission_type,
                    });
                    let Response::DescribeAcls(response) = conn.request(request).await? else {
                        bail!("DescribeAcls: unexpected response type");
                    };
                    check(response.error_code, || {
                        with_message("listing ACLs", response.error_message.as_deref())
                    })?;
                    resources.extend(response.resources);
                }
                Ok(resources)
            })?;
            let mut rows = Vec::new();
            for resource in &resources {
                for acl in &resource.acls {
                    rows.push(binding_row(
                        resource.resource_type,
                        &resource.resource_name,
                        resource.pattern_type,
                        &acl.principal,
                        &acl.host,
                        acl.operation,
                        acl.permission_type,
                        None,
                    ));
                }
            }
            // Several filters may match one ACL: print it once.
            rows.sort_by_key(|row| serde_json::Value::Array(row.clone()).to_string());
            rows.dedup();
            let mut table = binding_table(false);
            for row in rows {
                table.row(row);
            }
            table.print(target.format)
        }
    }
}

impl ResourceArgs {
    /// The resources named, as (type, name).
    fn named(&self) -> Vec<(AclResourceType, String)> {
        let mut named = Vec::new();
        for (resource_type, names) in [
            (AclResourceType::Topic, &self.topic),
            (AclResourceType::Group, &self.group),
            (AclResourceType::TransactionalId, &self.transactional_id),
        ] {
            named.extend(names.iter().map(|name| (resource_type, name.clone())));
        }
        if self.cluster {
            named.push((AclResourceType::Cluster, CLUSTER_RESOURCE_NAME.to_string()));
        }
        named
    }
}

impl FilterArgs {
    /// One filter per resource named (any resource when none is) and operation given.
    fn filters(&self, pattern: PatternFilterArg) -> Vec<DeleteAclsFilter> {
        let pattern_type_filter = match pattern {
            PatternFilterArg::Literal => AclPatternType::Literal.code(),
            PatternFilterArg::Prefixed => AclPatternType::Prefixed.code(),
            PatternFilterArg::Match => PATTERN_MATCH,
            PatternFilterArg::Any => FILTER_ANY,
        };
        let permission_type = match (self.allow, self.deny) {
            (true, _) => AclPermission::Allow.code(),
            (_, true) => AclPermission::Deny.code(),
            _ => FILTER_ANY,
        };
        let resources: Vec<(i8, Option<String>)> = match self.resources.named() {
            named if named.is_empty() => vec![(FILTER_ANY, None)],
            named => named
                .into_iter()
                .map(|(t, name)| (t.code(), Some(name)))
                .collect(),
        };
        let operations: Vec<i8> = match self.operations.as_slice() {
            [] => vec![FILTER_ANY],
            given => given.iter().map(|o| o.operation().code()).collect(),
        };
        let mut filters = Vec::new();
        for (resource_type_filter, resource_name_filter) in &resources {
            for operation in &operations {
                filters.push(DeleteAclsFilter {
                    resource_type_filter: *resource_type_filter,
                    resource_name_filter: resource_name_filter.clone(),
                    pattern_type_filter,
                    principal_filter: self.principal.clone(),
                    host_filter: self.host.clone(),
                    operation: *operation,
                    permission_type,
                });
            }
        }
        filters
    }
}

impl OperationArg {
    fn operation(self) -> AclOperation {
        match self {
            OperationArg::All => AclOperation::All,
            OperationArg::Read => AclOperation::Read,
            OperationArg::Write => AclOperation::Write,
            OperationArg::Create => AclOperation::Create,
            OperationArg::Delete => AclOperation::Delete,
            OperationArg::Alter => AclOperation::Alter,
            OperationArg::Describe => AclOperation::Describe,
            OperationArg::ClusterAction => AclOperation::ClusterAction,
            OperationArg::DescribeConfigs => AclOperation::DescribeConfigs,
            OperationArg::AlterConfigs => AclOperation::AlterConfigs,
            OperationArg::IdempotentWrite => AclOperation::IdempotentWrite,
            OperationArg::CreateTokens => AclOperation::CreateTokens,
            OperationArg::DescribeTokens => AclOperation::DescribeTokens,
        }
    }
}

/// The table of ACL bindings, with a status column for create and delete.
fn binding_table(with_status: bool) -> Table {
    let mut columns = vec![
        "principal",
        "host",
        "resource_type",
        "resource_name",
        "pattern",
        "operation",
        "permission",
    ];
    if with_status {
        columns.push("status");
    }
    Table::new(&columns)
}

/// One binding's row, its codes by name (a code the CLI does not know, as its number).
#[allow(clippy::too_many_arguments)]
fn binding_row(
    resource_type: i8,
    resource_name: &str,
    pattern_type: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
    status: Option<&str>,
) -> Vec<serde_json::Value> {
    let resource_type = match AclResourceType::from_code(resource_type) {
        Some(AclResourceType::Topic) => "topic".to_string(),
        Some(AclResourceType::Group) => "group".to_string(),
        Some(AclResourceType::Cluster) => "cluster".to_string(),
        Some(AclResourceType::TransactionalId) => "transactional_id".to_string(),
        Some(AclResourceType::DelegationToken) => "delegation_token".to_string(),
        Some(AclResourceType::User) => "user".to_string(),
        None => resource_type.to_string(),
    };
    let pattern = match AclPatternType::from_code(pattern_type) {
        Some(AclPatternType::Literal) => "literal".to_string(),
        Some(AclPatternType::Prefixed) => "prefixed".to_string(),
        None => pattern_type.to_string(),
    };
    let operation = AclOperation::from_code(operation)
        .and_then(|o| {
            use clap::ValueEnum;
            OperationArg::value_variants()
                .iter()
                .find(|arg| arg.operation() == o)
                .and_then(|arg| arg.to_possible_value())
                .map(|v| v.get_name().to_string())
        })
        .unwrap_or_else(|| operation.to_string());
    let permission = match AclPermission::from_code(permission) {
        Some(AclPermission::Allow) => "allow".to_string(),
        Some(AclPermission::Deny) => "deny".to_string(),
        None => permission.to_string(),
    };
    let mut row = vec![
        json!(principal),
        json!(host),
        json!(resource_type),
        json!(resource_name),
        json!(pattern),
        json!(operation),
        json!(permission),
    ];
    if let Some(status) = status {
        row.push(json!(status));
    }
    row
}
