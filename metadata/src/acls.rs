//! Access control lists (KIP-11, KIP-290): Kafka's ACL bindings, kept in the metadata so
//! that every broker authorizes against the same set, and the filters CreateAcls,
//! DescribeAcls and DeleteAcls speak in.
//!
//! A binding names a resource pattern (type, name, literal or prefixed) and an entry
//! (principal, host, operation, allow or deny). The set is indexed by resource pattern, so
//! an authorization looks up the literal name, the literal wildcard `*` and each prefix of
//! the name, never the whole set.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::limits::{ACL_BINDINGS_MAX, ACL_CHANGES_PER_COMMAND_MAX, ACL_FIELD_BYTES_MAX};

/// Kafka's error codes of per-item results (the metadata crate does not depend on the codec's).
const NONE: i16 = 0;
const INVALID_REQUEST: i16 = 42;
const POLICY_VIOLATION: i16 = 44;

/// The wildcard: a literal resource name matching every resource of its type, and a principal
/// or host matching every principal or host.
pub const ACL_WILDCARD: &str = "*";
/// The one name of the cluster resource.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";
/// The principal matching every user.
pub const ACL_WILDCARD_PRINCIPAL: &str = "User:*";

/// Kafka's `ResourceType` values that a binding may name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum AclResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl AclResourceType {
    pub const ALL: [AclResourceType; 6] = [
        AclResourceType::Topic,
        AclResourceType::Group,
        AclResourceType::Cluster,
        AclResourceType::TransactionalId,
        AclResourceType::DelegationToken,
        AclResourceType::User,
    ];

    /// The type of Kafka's code, None for UNKNOWN (0), ANY (1) and codes Kafka lacks.
    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn code(self) -> i8 {
        match self {
            AclResourceType::Topic => 2,
            AclResourceType::Group => 3,
            AclResourceType::Cluster => 4,
            AclResourceType::TransactionalId => 5,
            AclResourceType::DelegationToken => 6,
            AclResourceType::User => 7,
        }
    }
}

/// Kafka's `PatternType` values that a binding may have.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum AclPatternType {
    /// The name is the resource's name, or `*` for every resource of the type.
    Literal,
    /// The name is a prefix of the resources' names.
    Prefixed,
}

impl AclPatternType {
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            3 => Some(AclPatternType::Literal),
            4 => Some(AclPatternType::Prefixed),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            AclPatternType::Literal => 3,
            AclPatternType::Prefixed => 4,
        }
    }
}

/// Kafka's `AclOperation` values that a binding may name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl AclOperation {
    pub const ALL: [AclOperation; 13] = [
        AclOperation::All,
        AclOperation::Read,
        AclOperation::Write,
        AclOperation::Create,
        AclOperation::Delete,
        AclOperation::Alter,
        AclOperation::Describe,
        AclOperation::ClusterAction,
        AclOperation::DescribeConfigs,
        AclOperation::AlterConfigs,
        AclOperation::IdempotentWrite,
        AclOperation::CreateTokens,
        AclOperation::DescribeTokens,
    ];

    /// The operation of Kafka's code, None for UNKNOWN (0), ANY (1) and codes Kafka lacks.
    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    pub fn code(self) -> i8 {
        match self {
            AclOperation::All => 2,
            AclOperation::Read => 3,
            AclOperation::Write => 4,
            AclOperation::Create => 5,
            AclOperation::Delete => 6,
            AclOperation::Alter => 7,
            AclOperation::Describe => 8,
            AclOperation::ClusterAction => 9,
            AclOperation::DescribeConfigs => 10,
            AclOperation::AlterConfigs => 11,
            AclOperation::IdempotentWrite => 12,
            AclOperation::CreateTokens => 13,
            AclOperation::DescribeTokens => 14,
        }
    }

    /// True when an ALLOW of `self` allows `asked`: ALL allows everything, and (as in
    /// Kafka) READ, WRITE, DELETE and ALTER imply DESCRIBE, ALTER_CONFIGS implies
    /// DESCRIBE_CONFIGS. A DENY denies only its own operation (or everything, for ALL).
    pub fn allows(self, asked: AclOperation) -> bool {
        self == asked
            || self == AclOperation::All
            || (asked == AclOperation::Describe
                && matches!(
                    self,
                    AclOperation::Read
                        | AclOperation::Write
                        | AclOperation::Delete
                        | AclOperation::Alter
                ))
            || (asked == AclOperation::DescribeConfigs && self == AclOperation::AlterConfigs)
    }
}

/// Kafka's `AclPermissionType` values that a binding may have.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum AclPermission {
    Deny,
    Allow,
}

impl AclPermission {
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(AclPermission::Deny),
            3 => Some(AclPermission::Allow),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            AclPermission::Deny => 2,
            AclPermission::Allow => 3,
        }
    }
}

/// Who may do what from where, on the resources of one pattern.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct AclEntry {
    /// `type:name`, e.g. `User:alice`, or `User:*` for every user.
    pub principal: String,
    /// A client's address, or `*` for every address.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// The resources a binding applies to.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct AclPattern {
    pub resource_type: AclResourceType,
    pub pattern_type: AclPatternType,
    pub name: String,
}

/// One ACL: a resource pattern and an entry.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct AclBinding {
    pub pattern: AclPattern,
    pub entry: AclEntry,
}

/// A resource type in a filter: one type, or any (Kafka's ANY, code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ResourceTypeFilter {
    Any,
    Is(AclResourceType),
}

/// A pattern type in a filter (Kafka's `PatternType` with ANY and MATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PatternTypeFilter {
    /// Any pattern type; a name given must equal the binding's.
    Any,
    /// The bindings that apply to the resource named: its literal name, the literal
    /// wildcard, and every prefix of it.
    Match,
    Is(AclPatternType),
}

/// Which bindings DescribeAcls shows and DeleteAcls removes (Kafka's `AclBindingFilter`).
/// A field that is None or Any matches every binding.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AclFilter {
    pub resource_type: ResourceTypeFilter,
    pub name: Option<String>,
    pub pattern_type: PatternTypeFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<AclOperation>,
    pub permission: Option<AclPermission>,
}

impl AclFilter {
    /// The filter of Kafka's codes, or the message of INVALID_REQUEST naming the bad code
    /// (UNKNOWN, or a value Kafka lacks).
    #[allow(clippy::too_many_arguments)]
    pub fn from_codes(
        resource_type: i8,
        name: Option<String>,
        pattern_type: i8,
        principal: Option<String>,
        host: Option<String>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        const ANY: i8 = 1;
        const MATCH: i8 = 2;
        let resource_type = match resource_type {
            ANY => ResourceTypeFilter::Any,
            code => ResourceTypeFilter::Is(
                AclResourceType::from_code(code)
                    .ok_or_else(|| format!("invalid resource type filter {code}"))?,
            ),
        };
        let pattern_type = match pattern_type {
            ANY => PatternTypeFilter::Any,
            MATCH => PatternTypeFilter::Match,
            code => PatternTypeFilter::Is(
                AclPatternType::from_code(code)
                    .ok_or_else(|| format!("invalid pattern type filter {code}"))?,
            ),
        };
        let operation = match operation {
            ANY => None,
            code => Some(
                AclOperation::from_code(code)
                    .ok_or_else(|| format!("invalid operation filter {code}"))?,
            ),
        };
        let permission = match permission {
            ANY => None,
            code => Some(
                AclPermission::from_code(code)
                    .ok_or_else(|| format!("invalid permission type filter {code}"))?,
            ),
        };
        Ok(AclFilter {
            resource_type,
            name,
            pattern_type,
            principal,
            host,
            operation,
            permission,
        })
    }

    /// True when `binding` is one of the filter's, as Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let pattern = &binding.pattern;
        if let ResourceTypeFilter::Is(t) = self.resource_type
            && t != pattern.resource_type
        {
            return false;
        }
        if let PatternTypeFilter::Is(p) = self.pattern_type
            && p != pattern.pattern_type
        {
            return false;
        }
        if let Some(name) = &self.name {
            let name_matches = match self.pattern_type {
                PatternTypeFilter::Any | PatternTypeFilter::Is(_) => *name == pattern.name,
                PatternTypeFilter::Match => match pattern.pattern_type {
                    AclPatternType::Literal => {
                        *name == pattern.name || pattern.name == ACL_WILDCARD
                    }
                    AclPatternType::Prefixed => name.starts_with(&pattern.name),
                },
            };
            if !name_matches {
                return false;
            }
        }
        let entry = &binding.entry;
        self.principal
            .as_ref()
            .is_none_or(|p| *p == entry.principal)
            && self.host.as_ref().is_none_or(|h| *h == entry.host)
            && self.operation.is_none_or(|o| o == entry.operation)
            && self.permission.is_none_or(|p| p == entry.permission)
    }
}

/// One creation's result, in request order: NONE or Kafka's error with its message.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AclCreationResult {
    pub error_code: i16,
    pub error_message: Option<String>,
}

/// One deletion filter's result, in request order: the bindings it removed.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AclDeletionResult {
    pub deleted: Vec<AclBinding>,
}

/// The ACLs of the image, by resource pattern: behind an `Arc`, so that cloning the image per
/// command copies none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AclSet {
    by_pattern: Arc<BTreeMap<AclPattern, Vec<AclEntry>>>,
    len: usize,
}

impl AclSet {
    pub(crate) fn from_bindings(bindings: Vec<AclBinding>) -> Result<AclSet, String> {
        let mut set = AclSet::default();
        set.apply(&bindings, &[])?;
        Ok(set)
    }

    /// Every binding, ordered by pattern, for a snapshot and for DescribeAcls.
    pub(crate) fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.by_pattern.iter().flat_map(|(pattern, entries)| {
            entries.iter().map(|entry| AclBinding {
                pattern: pattern.clone(),
                entry: entry.clone(),
            })
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn contains(&self, binding: &AclBinding) -> bool {
        self.by_pattern
            .get(&binding.pattern)
            .is_some_and(|entries| entries.contains(&binding.entry))
    }

    /// The entries of every pattern that applies to the resource `name` of `resource_type`:
    /// its literal name, the literal wildcard, and the prefixes of `name`.
    pub(crate) fn entries_for<'a>(
        &'a self,
        resource_type: AclResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclEntry> + 'a {
        let literal = |n: &str| AclPattern {
            resource_type,
            pattern_type: AclPatternType::Literal,
            name: n.to_string(),
        };
        let exact = self.by_pattern.get(&literal(name));
        let wildcard = (name != ACL_WILDCARD)
            .then(|| self.by_pattern.get(&literal(ACL_WILDCARD)))
            .flatten();
        let prefixed = self.prefixes_of(resource_type, name).into_iter().flatten();
        exact.into_iter().chain(wildcard).flatten().chain(prefixed)
    }

    /// The entries of the prefixed patterns of `resource_type` that `name` starts with.
    ///
    /// Walks down from the name instead of scanning every prefixed pattern sorting before it
    /// (thousands, in a large set): the greatest pattern not above the bound is either a
    /// prefix of the name (kept; the next candidates are shorter) or diverges from it at some
    /// byte, below which no longer prefix can sort; either way the bound shortens, so this
    /// takes at most one step per prefix of the name, and usually one or two.
    fn prefixes_of(&self, resource_type: AclResourceType, name: &str) -> Vec<&Vec<AclEntry>> {
        let mut found = Vec::new();
        let mut bound = AclPattern {
            resource_type,
            pattern_type: AclPatternType::Prefixed,
            name: name.to_string(),
        };
        while let Some((pattern, entries)) = self.by_pattern.range(..=&bound).next_back() {
            if pattern.resource_type != resource_type
                || pattern.pattern_type != AclPatternType::Prefixed
            {
                break;
            }
            let next_len = if name.starts_with(&pattern.name) {
                found.push(entries);
                if pattern.name.is_empty() {
                    break;
                }
                pattern.name.len() - 1
            } else {
                // Not a prefix, and not above the name: it diverges below it at the first
                // byte they do not share, so every prefix still to find is within that.
                name.bytes()
                    .zip(pattern.name.bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            // Prefixes of the name end at its char boundaries.
            let next_len = (0..=next_len)
                .rev()
                .find(|&len| name.is_char_boundary(len))
                .unwrap_or(0);
            bound.name.truncate(next_len);
        }
        found
    }

    /// True when some binding of `resource_type` exists (Kafka's authorizeByResourceType).
    pub(crate) fn bindings_of_type(
        &self,
        resource_type: AclResourceType,
    ) -> impl Iterator<Item = (&AclPattern, &AclEntry)> {
        self.by_pattern
            .iter()
            .filter(move |(pattern, _)| pattern.resource_type == resource_type)
            .flat_map(|(pattern, entries)| entries.iter().map(move |e| (pattern, e)))
    }

    /// Adds `created` (already present ones are kept once) and removes `deleted` (each must
    /// be present): a replayed record that does not fit is corruption.
    pub(crate) fn apply(
        &mut self,
        created: &[AclBinding],
        deleted: &[AclBinding],
    ) -> Result<(), String> {
        let map = Arc::make_mut(&mut self.by_pattern);
        for binding in deleted {
            let entries = map
                .get_mut(&binding.pattern)
                .ok_or_else(|| format!("no ACL {binding:?} to delete"))?;
            let at = entries
                .iter()
                .position(|e| *e == binding.entry)
                .ok_or_else(|| format!("no ACL {binding:?} to delete"))?;
            entries.remove(at);
            if entries.is_empty() {
                map.remove(&binding.pattern);
            }
            self.len -= 1;
        }
        for binding in created {
            let entries = map.entry(binding.pattern.clone()).or_default();
            if !entries.contains(&binding.entry) {
                entries.push(binding.entry.clone());
                self.len += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let counted: usize = self.by_pattern.values().map(Vec::len).sum();
        if counted != self.len {
            return Err(format!("ACL count {} but {counted} held", self.len));
        }
        if self.by_pattern.values().any(Vec::is_empty) {
            return Err("an ACL pattern with no entry".to_string());
        }
        Ok(())
    }
}

/// What CreateAcls writes (the new bindings) and answers (one result per creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedCreations {
    pub created: Vec<AclBinding>,
    pub results: Vec<AclCreationResult>,
}

/// Decides a CreateAcls against the set, binding by binding, as Kafka's
/// `AclControlManager.createAcls`: a binding that does not validate is INVALID_REQUEST, one
/// already present succeeds without a change, a new one past `ACL_BINDINGS_MAX`
/// POLICY_VIOLATION. Too many creations refuse the whole request (the Err).
pub(crate) fn plan_creations(
    set: &AclSet,
    creations: &[AclBinding],
) -> Result<PlannedCreations, String> {
    if creations.len() > ACL_CHANGES_PER_COMMAND_MAX {
        return Err(format!(
            "{} ACL creations in one request; at most {ACL_CHANGES_PER_COMMAND_MAX}",
            creations.len()
        ));
    }
    let mut created: Vec<AclBinding> = Vec::new();
    let mut results = Vec::with_capacity(creations.len());
    for binding in creations {
        let result = match validate_binding(binding) {
            Err(message) => refused(INVALID_REQUEST, message),
            Ok(()) if set.contains(binding) || created.contains(binding) => accepted(),
            Ok(()) if set.len() + created.len() >= ACL_BINDINGS_MAX => refused(
                POLICY_VIOLATION,
                format!("the cluster holds {ACL_BINDINGS_MAX} ACLs, the most it may"),
            ),
            Ok(()) => {
                created.push(binding.clone());
                accepted()
            }
        };
        results.push(result);
    }
    Ok(PlannedCreations { created, results })
}

/// What DeleteAcls removes, and one result per filter with the bindings it matched (a
/// binding two filters match is removed once and listed in both).
pub(crate) fn plan_deletions(
    set: &AclSet,
    filters: &[AclFilter],
) -> Result<(Vec<AclBinding>, Vec<AclDeletionResult>), String> {
    if filters.len() > ACL_CHANGES_PER_COMMAND_MAX {
        return Err(format!(
            "{} ACL filters in one request; at most {ACL_CHANGES_PER_COMMAND_MAX}",
            filters.len()
        ));
    }
    let mut deleted: Vec<AclBinding> = Vec::new();
    let mut results = Vec::with_capacity(filters.len());
    for filter in filters {
        let matched: Vec<AclBinding> = set.bindings().filter(|b| filter.matches(b)).collect();
        for binding in &matched {
            if !deleted.contains(binding) {
                deleted.push(binding.clone());
            }
        }
        results.push(AclDeletionResult { deleted: matched });
    }
    Ok((deleted, results))
}

/// Kafka's checks of a new binding (`AclControlManager.validateNewAcl`), and Sluice's bounds.
fn validate_binding(binding: &AclBinding) -> Result<(), String> {
    let AclBinding { pattern, entry } = binding;
    if pattern.name.is_empty() {
        return Err("Resource name should not be empty".to_string());
    }
    if pattern.resource_type == AclResourceType::Cluster
        && (pattern.name != CLUSTER_RESOURCE_NAME
            || pattern.pattern_type != AclPatternType::Literal)
    {
        return Err(format!(
            "the cluster resource is the literal {CLUSTER_RESOURCE_NAME:?}, not {:?}",
            pattern.name
        ));
    }
    if !entry.principal.contains(':') {
        return Err(format!(
            "Could not parse principal from `{}` (no colon is present separating the \
             principal type from the principal name)",
            entry.principal
        ));
    }
    if entry.host.is_empty() {
        return Err("Host should not be empty".to_string());
    }
    for (what, field) in [
        ("resource name", &pattern.name),
        ("principal", &entry.principal),
        ("host", &entry.host),
    ] {
        if field.len() > ACL_FIELD_BYTES_MAX {
            return Err(format!(
                "the {what} is {} bytes; at most {ACL_FIELD_BYTES_MAX}",
                field.len()
            ));
        }
    }
    Ok(())
}

fn accepted() -> AclCreationResult {
    AclCreationResult {
        error_code: NONE,
        error_message: None,
    }
}

fn refused(error_code: i16, message: String) -> AclCreationResult {
    AclCreationResult {
        error_code,
        error_message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        resource_type: AclResourceType,
        pattern_type: AclPatternType,
        name: &str,
        principal: &str,
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
                host: ACL_WILDCARD.to_string(),
                operation,
                permission,
            },
        }
    }

    fn topic(pattern_type: AclPatternType, name: &str, principal: &str) -> AclBinding {
        binding(
            AclResourceType::Topic,
            pattern_type,
            name,
            principal,
            AclOperation::Read,
            AclPermission::Allow,
        )
    }

    #[test]
    fn the_prefixes_of_a_name_are_those_a_scan_of_every_pattern_finds() {
        // Random prefixed patterns of topics and groups over a small alphabet (one letter
        // of two bytes), against random names: the walk finds exactly the patterns a scan
        // of the whole set keeps.
        let mut seed: u64 = 0x5eed_ac15_0000_0001;
        println!("seed {seed:#x}");
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = ['a', 'b', 'é', 'z'];
        let word = |len: u64, next: &mut dyn FnMut(u64) -> u64| -> String {
            (0..len).map(|_| alphabet[next(4) as usize]).collect()
        };
        for _ in 0..50 {
            let mut bindings = Vec::new();
            for _ in 0..next(40) {
                let resource_type = if next(4) == 0 {
                    AclResourceType::Group
                } else {
                    AclResourceType::Topic
                };
                let len = 1 + next(5);
                let name = word(len, &mut next);
                bindings.push(binding(
                    resource_type,
                    AclPatternType::Prefixed,
                    &name,
                    "User:p",
                    AclOperation::Read,
                    AclPermission::Allow,
                ));
            }
            let set = AclSet::from_bindings(bindings.clone()).unwrap();
            for _ in 0..50 {
                let len = next(7);
                let name = word(len, &mut next);
                // The same entries, longest prefix first (the walk goes down from the name).
                let walked: Vec<*const Vec<AclEntry>> = set
                    .prefixes_of(AclResourceType::Topic, &name)
                    .into_iter()
                    .map(std::ptr::from_ref)
                    .collect();
                let mut scanned: Vec<(&String, *const Vec<AclEntry>)> = set
                    .by_pattern
                    .iter()
                    .filter(|(p, _)| {
                        p.resource_type == AclResourceType::Topic
                            && p.pattern_type == AclPatternType::Prefixed
                            && name.starts_with(&p.name)
                    })
                    .map(|(p, entries)| (&p.name, std::ptr::from_ref(entries)))
                    .collect();
                scanned.reverse();
                let expected: Vec<*const Vec<AclEntry>> = scanned.iter().map(|s| s.1).collect();
                assert_eq!(walked, expected, "{name}: {scanned:?}");
            }
        }
    }

    #[test]
    fn entries_for_finds_the_literal_the_wildcard_and_every_prefix() {
        let set = AclSet::from_bindings(vec![
            topic(AclPatternType::Literal, "orders", "User:a"),
            topic(AclPatternType::Literal, "*", "User:b"),
            topic(AclPatternType::Prefixed, "ord", "User:c"),
            topic(AclPatternType::Prefixed, "o", "User:d"),
            topic(AclPatternType::Prefixed, "orders-eu", "User:e"),
            topic(AclPatternType::Prefixed, "p", "User:f"),
            topic(AclPatternType::Literal, "order", "User:g"),
        ])
        .unwrap();
        let mut principals: Vec<&str> = set
            .entries_for(AclResourceType::Topic, "orders")
            .map(|e| e.principal.as_str())
            .collect();
        principals.sort();
        assert_eq!(principals, ["User:a", "User:b", "User:c", "User:d"]);
        assert_eq!(set.entries_for(AclResourceType::Group, "orders").count(), 0);
        assert_eq!(set.len(), 7);
        set.check_invariants().unwrap();
    }

    #[test]
    fn creations_validate_and_duplicates_change_nothing() {
        let set =
            AclSet::from_bindings(vec![topic(AclPatternType::Literal, "t", "User:a")]).unwrap();
        let creations = vec![
            topic(AclPatternType::Literal, "t", "User:a"),
            topic(AclPatternType::Literal, "t", "alice"),
            topic(AclPatternType::Literal, "", "User:a"),
            binding(
                AclResourceType::Cluster,
                AclPatternType::Literal,
                "other",
                "User:a",
                AclOperation::Alter,
                AclPermission::Allow,
            ),
            topic(AclPatternType::Prefixed, "t", "User:b"),
            topic(AclPatternType::Prefixed, "t", "User:b"),
        ];
        let planned = plan_creations(&set, &creations).unwrap();
        let codes: Vec<i16> = planned.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                NONE,
                INVALID_REQUEST,
                INVALID_REQUEST,
                INVALID_REQUEST,
                NONE,
                NONE
            ]
        );
        assert_eq!(
            planned.created,
            vec![topic(AclPatternType::Prefixed, "t", "User:b")]
        );
    }

    #[test]
    fn filters_match_as_kafka_does() {
        let bindings = [
            topic(AclPatternType::Literal, "orders", "User:a"),
            topic(AclPatternType::Literal, "*", "User:b"),
            topic(AclPatternType::Prefixed, "ord", "User:c"),
            topic(AclPatternType::Literal, "other", "User:d"),
        ];
        let filter = |pattern_type: i8, name: Option<&str>| {
            AclFilter::from_codes(2, name.map(str::to_string), pattern_type, None, None, 1, 1)
                .unwrap()
        };
        let matched = |f: &AclFilter| -> Vec<&str> {
            bindings
                .iter()
                .filter(|b| f.matches(b))
                .map(|b| b.entry.principal.as_str())
                .collect()
        };
        // MATCH: what applies to the topic "orders".
        assert_eq!(
            matched(&filter(2, Some("orders"))),
            ["User:a", "User:b", "User:c"]
        );
        // ANY with a name: exactly that name, any pattern type.
        assert_eq!(matched(&filter(1, Some("ord"))), ["User:c"]);
        assert_eq!(matched(&filter(3, None)), ["User:a", "User:b", "User:d"]);
        assert!(AclFilter::from_codes(0, None, 1, None, None, 1, 1).is_err());
        assert!(AclFilter::from_codes(2, None, 1, None, None, 0, 1).is_err());
    }

    #[test]
    fn deletions_remove_every_binding_a_filter_matches_once() {
        let set = AclSet::from_bindings(vec![
            topic(AclPatternType::Literal, "t", "User:a"),
            topic(AclPatternType::Literal, "t", "User:b"),
        ])
        .unwrap();
        let any = AclFilter::from_codes(1, None, 1, None, None, 1, 1).unwrap();
        let only_a =
            AclFilter::from_codes(1, None, 1, Some("User:a".to_string()), None, 1, 1).unwrap();
        let (deleted, results) = plan_deletions(&set, &[any, only_a]).unwrap();
        assert_eq!(deleted.len(), 2);
        assert_eq!(results[0].deleted.len(), 2);
        assert_eq!(results[1].deleted.len(), 1);
        let mut after = set.clone();
        after.apply(&[], &deleted).unwrap();
        assert!(after.is_empty());
        assert!(after.apply(&[], &deleted).is_err());
    }

    #[test]
    fn implied_operations_are_kafkas() {
        assert!(AclOperation::Read.allows(AclOperation::Describe));
        assert!(AclOperation::AlterConfigs.allows(AclOperation::DescribeConfigs));
        assert!(AclOperation::All.allows(AclOperation::ClusterAction));
        assert!(!AclOperation::Describe.allows(AclOperation::Read));
        assert!(!AclOperation::Create.allows(AclOperation::Describe));
    }
}
