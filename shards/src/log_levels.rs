//! The broker's log levels, changeable at run time as Kafka's BROKER_LOGGER resource is:
//! DescribeConfigs lists the loggers, IncrementalAlterConfigs sets or resets one. The binary
//! that installs the log subscriber implements it; like Kafka's, a change lasts until the
//! broker stops.

use std::fmt::Debug;

/// Levels a logger may be set to (Kafka's log4j names; FATAL is taken as ERROR, OFF as off).
pub const LOG_LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"];

/// The name of the logger every other one falls back to.
pub const ROOT_LOGGER: &str = "root";

/// Loggers and their levels, changeable while the broker runs.
pub trait LogLevels: Debug + Send + Sync {
    /// Every logger with a level of its own, the root logger first, as (name, level).
    fn levels(&self) -> Vec<(String, String)>;
    /// Sets `logger` (a module path such as `sluice_shards::connection`, or the root logger) to
    /// `level`, one of [`LOG_LEVELS`]; None puts it back to the root logger's level.
    fn set(&self, logger: &str, level: Option<&str>) -> Result<(), String>;
}
