//! The ACL authorizer, as Kafka's `StandardAuthorizer` decides: super users may do
//! anything; a DENY that matches wins over any ALLOW; an ALLOW of the operation (or of one
//! implying it) allows; a resource with no ACL at all is allowed only with
//! `allow.everyone.if.no.acl.found`.
//!
//! The ACLs themselves are in the metadata image (`sluice_metadata::acls`), so every shard
//! and broker decides on the same set, and a change applies at the next request.

use std::rc::Rc;
use std::sync::Arc;

use sluice_metadata::acls::{ACL_WILDCARD, ACL_WILDCARD_PRINCIPAL, CLUSTER_RESOURCE_NAME};
use sluice_metadata::{
    AclOperation, AclPatternType, AclPermission, AclResourceType, MetadataImage,
};

/// How requests are authorized (Kafka's `authorizer.class.name`, `super.users`,
/// `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// True: every request is checked against the ACLs. False: every client may do
    /// anything, and the ACL APIs answer SECURITY_DISABLED, as Kafka without an authorizer.
    pub enabled: bool,
    /// Principals (`User:NAME`) allowed everything, whatever the ACLs say.
    pub super_users: Vec<String>,
    /// True: a resource with no ACL is open to everyone; false (Kafka's default): only to
    /// super users.
    pub allow_everyone_if_no_acl_found: bool,
}

/// One client's view of the authorizer for one request: its principal and host against the
/// image's ACLs. Cheap to clone (reference counts), so a response can be filtered with it
/// after the handler ran.
#[derive(Clone)]
pub struct Access {
    config: Arc<AuthorizerConfig>,
    image: Arc<MetadataImage>,
    principal: Rc<str>,
    host: Rc<str>,
}

/// The operations Kafka reports in `*_authorized_operations` per resource type (KIP-430).
const TOPIC_OPERATIONS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Write,
    AclOperation::Create,
    AclOperation::Delete,
    AclOperation::Alter,
    AclOperation::Describe,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
];
const GROUP_OPERATIONS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Describe,
    AclOperation::Delete,
];
const CLUSTER_OPERATIONS: &[AclOperation] = &[
    AclOperation::Create,
    AclOperation::ClusterAction,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
    AclOperation::IdempotentWrite,
    AclOperation::Alter,
    AclOperation::Describe,
];

impl Access {
    pub fn new(
        config: Arc<AuthorizerConfig>,
        image: Arc<MetadataImage>,
        principal: Rc<str>,
        host: Rc<str>,
    ) -> Self {
        Access {
            config,
            image,
            principal,
            host,
        }
    }

    /// The metadata image the ACLs were read from.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    fn is_super_user(&self) -> bool {
        self.config
            .super_users
            .iter()
            .any(|u| **u == *self.principal)
    }

    fn applies(&self, principal: &str, host: &str) -> bool {
        (principal == &*self.principal || principal == ACL_WILDCARD_PRINCIPAL)
            && (host == &*self.host || host == ACL_WILDCARD)
    }

    /// True when the client may do `operation` on the resource `name` of `resource_type`.
    pub fn allows(
        &self,
        operation: AclOperation,
        resource_type: AclResourceType,
        name: &str,
    ) -> bool {
        if !self.config.enabled || self.is_super_user() {
            return true;
        }
        let mut any_acl = false;
        let mut allowed = false;
        for entry in self.image.acl_entries_for(resource_type, name) {
            any_acl = true;
            if !self.applies(&entry.principal, &entry.host) {
                continue;
            }
            match entry.permission {
                AclPermission::Deny
                    if entry.operation == operation || entry.operation == AclOperation::All =>
                {
                    return false;
                }
                AclPermission::Allow if entry.operation.allows(operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any_acl && self.config.allow_everyone_if_no_acl_found)
    }

    pub fn allows_topic(&self, operation: AclOperation, topic: &str) -> bool {
        self.allows(operation, AclResourceType::Topic, topic)
    }

    pub fn allows_group(&self, operation: AclOperation, group: &str) -> bool {
        self.allows(operation, AclResourceType::Group, group)
    }

    pub fn allows_transactional_id(&self, operation: AclOperation, id: &str) -> bool {
        self.allows(operation, AclResourceType::TransactionalId, id)
    }

    pub fn allows_cluster(&self, operation: AclOperation) -> bool {
        self.allows(operation, AclResourceType::Cluster, CLUSTER_RESOURCE_NAME)
    }

    /// True when the client may do `operation` on some resource of `resource_type` (Kafka's
    /// `authorizeByResourceType`, which InitProducerId asks for WRITE on any topic): an ALLOW
    /// of it that no DENY covers, or no ACL of the type with
    /// `allow.everyone.if.no.acl.found`.
    pub fn allows_any(&self, operation: AclOperation, resource_type: AclResourceType) -> bool {
        if !self.config.enabled || self.is_super_user() {
            return true;
        }
        let denies = |name: &str, pattern_type: AclPatternType| {
            self.image
                .acls_of_type(resource_type)
                .any(|(pattern, entry)| {
                    entry.permission == AclPermission::Deny
                        && (entry.operation == operation || entry.operation == AclOperation::All)
                        && self.applies(&entry.principal, &entry.host)
                        && match pattern.pattern_type {
                            AclPatternType::Literal => {
                                pattern.name == ACL_WILDCARD
                                    || (pattern_type == AclPatternType::Literal
                                        && pattern.name == name)
                            }
                            AclPatternType::Prefixed => name.starts_with(&pattern.name),
                        }
                })
        };
        let mut any_acl = false;
        for (pattern, entry) in self.image.acls_of_type(resource_type) {
            any_acl = true;
            if entry.permission == AclPermission::Allow
                && entry.operation.allows(operation)
                && self.applies(&entry.principal, &entry.host)
                && !denies(&pattern.name, pattern.pattern_type)
            {
                return true;
            }
        }
        !any_acl && self.config.allow_everyone_if_no_acl_found
    }

    /// The operations the client may do on a resource, as the bit set of Kafka's
    /// `*_authorized_operations` fields (bit n: operation code n).
    pub fn authorized_operations(&self, resource_type: AclResourceType, name: &str) -> i32 {
        let operations = match resource_type {
            AclResourceType::Topic => TOPIC_OPERATIONS,
            AclResourceType::Group => GROUP_OPERATIONS,
            AclResourceType::Cluster => CLUSTER_OPERATIONS,
            _ => &[],
        };
        operations
            .iter()
            .filter(|op| self.allows(**op, resource_type, name))
            .fold(0, |bits, op| bits | 1 << op.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::{AclBinding, AclEntry, AclPattern, MetadataRecord};

    fn binding(
        resource_type: AclResourceType,
        pattern_type: AclPatternType,
        name: &str,
        principal: &str,
        host: &str,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            pattern: AclPattern {
                resource_type,
                pattern_type,
                name: name.to_string(),
            },
            entry: AclEntry {
                principal: principal.to_string(),
                host: host.to_string(),
                operation,
                permission,
            },
        }
    }

    fn image_with(bindings: Vec<AclBinding>) -> Arc<MetadataImage> {
        let image = MetadataImage::empty("c".to_string(), 0);
        let record = MetadataRecord::AlterAcls {
            created: bindings,
            deleted: Vec::new(),
        };
        Arc::new(image.apply(1, &record).expect("applies").0)
    }

    fn config(allow_everyone: bool) -> Arc<AuthorizerConfig> {
        Arc::new(AuthorizerConfig {
            enabled: true,
            super_users: vec!["User:admin".to_string()],
            allow_everyone_if_no_acl_found: allow_everyone,
        })
    }

    fn access(
        config: &Arc<AuthorizerConfig>,
        image: &Arc<MetadataImage>,
        principal: &str,
        host: &str,
    ) -> Access {
        Access::new(config.clone(), image.clone(), principal.into(), host.into())
    }

    use AclOperation::*;
    use AclPatternType::*;
    use AclPermission::*;
    use AclResourceType::Topic;

    #[test]
    fn deny_wins_and_implied_operations_allow() {
        let image = image_with(vec![
            binding(Topic, Prefixed, "orders", "User:alice", "*", Read, Allow),
            binding(
                Topic,
                Literal,
                "orders-secret",
                "User:alice",
                "*",
                Read,
                Deny,
            ),
            binding(Topic, Literal, "*", "User:*", "10.0.0.9", Write, Deny),
        ]);
        let config = config(false);
        let alice = access(&config, &image, "User:alice", "10.0.0.1");
        assert!(alice.allows_topic(Read, "orders-eu"));
        assert!(
            alice.allows_topic(Describe, "orders-eu"),
            "READ implies DESCRIBE"
        );
        assert!(!alice.allows_topic(Write, "orders-eu"));
        assert!(!alice.allows_topic(Read, "orders-secret"), "DENY wins");
        assert!(
            alice.allows_topic(Describe, "orders-secret"),
            "a READ deny leaves DESCRIBE"
        );
        assert!(
            !alice.allows_topic(Read, "payments"),
            "no ACL: denied by default"
        );
        let admin = access(&config, &image, "User:admin", "10.0.0.9");
        assert!(
            admin.allows_topic(Write, "orders-eu"),
            "super users skip ACLs"
        );
        let bob = access(&config, &image, "User:bob", "10.0.0.1");
        assert!(
            !bob.allows_topic(Read, "orders-eu"),
            "ACLs exist for it, none allow bob"
        );
    }

    #[test]
    fn allow_everyone_applies_only_where_no_acl_exists() {
        let image = image_with(vec![binding(
            Topic,
            Literal,
            "orders",
            "User:alice",
            "*",
            Read,
            Allow,
        )]);
        let config = config(true);
        let bob = access(&config, &image, "User:bob", "h");
        assert!(bob.allows_topic(Write, "payments"));
        assert!(!bob.allows_topic(Read, "orders"));
        let disabled = Arc::new(AuthorizerConfig::default());
        assert!(access(&disabled, &image, "User:bob", "h").allows_topic(Read, "orders"));
    }

    #[test]
    fn allows_any_needs_an_allow_no_deny_covers() {
        let config = config(false);
        let image = image_with(vec![binding(
            Topic,
            Prefixed,
            "logs-",
            "User:alice",
            "*",
            Write,
            Allow,
        )]);
        assert!(access(&config, &image, "User:alice", "h").allows_any(Write, Topic));
        assert!(!access(&config, &image, "User:bob", "h").allows_any(Write, Topic));
        let image = image_with(vec![
            binding(Topic, Prefixed, "logs-", "User:alice", "*", Write, Allow),
            binding(Topic, Literal, "*", "User:alice", "*", Write, Deny),
        ]);
        assert!(!access(&config, &image, "User:alice", "h").allows_any(Write, Topic));
    }

    #[test]
    fn authorized_operations_are_kafkas_bits() {
        let image = image_with(vec![binding(
            Topic,
            Literal,
            "t",
            "User:alice",
            "*",
            Read,
            Allow,
        )]);
        let config = config(false);
        let alice = access(&config, &image, "User:alice", "h");
        assert_eq!(
            alice.authorized_operations(Topic, "t"),
            1 << Read.code() | 1 << Describe.code()
        );
    }
}
