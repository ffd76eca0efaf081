//! A seeded fault suite with a history checker (issue 20). This first part is the checker
//! (`chaos/checker.rs`, pure): it holds a history of sends, acks, failures, reads, group
//! offset commits and transaction outcomes to the rules: each acknowledged record read
//! exactly once at its acknowledged offset, dense offsets, per-key order, failed sends absent
//! or present once, committed offsets never backwards, read_committed never showing aborted
//! data.

#[path = "chaos/checker.rs"]
mod checker;
