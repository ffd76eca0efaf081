//! The broker's log levels, changeable at run time as Kafka's BROKER_LOGGER resource is:
//! DescribeConfigs lists the loggers, IncrementalAlterConfigs sets or resets one. The binary
//! that installs the log subscriber implements it. Unlike Kafka's, a change outlives a
//! restart, as the broker's other dynamic configs do: the changes are kept in
//! `DATA_DIR/log-levels` ([`keep_change`]) and applied again at start ([`restore`]), over
//! the start-up filter (`SLUICE_LOG`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

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

/// The file in the data dir that keeps the levels changed at run time: one `logger=LEVEL`
/// line per logger set, `logger=` for one put back to the root logger's level.
pub const LOG_LEVELS_FILE: &str = "log-levels";

/// Records in `DATA_DIR/log-levels` that `logger` was set to `level` (None: put back to the
/// root logger's), replacing the file atomically.
pub fn keep_change(data_dir: &Path, logger: &str, level: Option<&str>) -> io::Result<()> {
    // Shards change loggers concurrently: one read-modify-write at a time.
    static CHANGING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = CHANGING.lock().unwrap_or_else(PoisonError::into_inner);
    let path = data_dir.join(LOG_LEVELS_FILE);
    let mut changes = match fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(error) => return Err(error),
    };
    changes.insert(logger.to_string(), level.unwrap_or_default().to_string());
    let text: String = changes
        .iter()
        .map(|(logger, level)| format!("{logger}={level}\n"))
        .collect();
    sluice_metadata::write_atomically(data_dir, LOG_LEVELS_FILE, text.as_bytes())
        .map_err(io::Error::other)
}

/// Applies the changes kept in `DATA_DIR/log-levels`, if any, to `levels`. Returns the
/// loggers whose kept level could not be applied, with why.
pub fn restore(levels: &dyn LogLevels, data_dir: &Path) -> io::Result<Vec<String>> {
    let text = match fs::read_to_string(data_dir.join(LOG_LEVELS_FILE)) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut refused = Vec::new();
    for (logger, level) in parse(&text) {
        let level = (!level.is_empty()).then_some(level);
        let valid = level
            .as_deref()
            .is_none_or(|level| LOG_LEVELS.contains(&level));
        let applied = if valid {
            levels.set(&logger, level.as_deref())
        } else {
            Err(format!("{level:?} is not a log level"))
        };
        if let Err(why) = applied {
            refused.push(format!("{logger}: {why}"));
        }
    }
    Ok(refused)
}

/// The `logger=LEVEL` lines of the file; lines of another shape are skipped.
fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(logger, _)| !logger.trim().is_empty())
        .map(|(logger, level)| (logger.trim().to_string(), level.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Levels in a map, as the binary's reloadable filter keeps them.
    #[derive(Debug, Default)]
    struct MapLevels(Mutex<BTreeMap<String, String>>);

    impl LogLevels for MapLevels {
        fn levels(&self) -> Vec<(String, String)> {
            let levels = self.0.lock().unwrap();
            levels.iter().map(|(n, l)| (n.clone(), l.clone())).collect()
        }

        fn set(&self, logger: &str, level: Option<&str>) -> Result<(), String> {
            let mut levels = self.0.lock().unwrap();
            match level {
                Some(level) => levels.insert(logger.to_string(), level.to_string()),
                None => levels.remove(logger),
            };
            Ok(())
        }
    }

    #[test]
    fn kept_changes_are_applied_again_over_the_start_up_levels() {
        let dir = tempfile::tempdir().unwrap();
        keep_change(dir.path(), "sluice_shards::connection", Some("DEBUG")).unwrap();
        keep_change(dir.path(), "openraft", None).unwrap();
        keep_change(dir.path(), ROOT_LOGGER, Some("WARN")).unwrap();
        keep_change(dir.path(), "sluice_shards::connection", Some("TRACE")).unwrap();
        let levels = MapLevels::default();
        levels.set("openraft", Some("OFF")).unwrap();
        assert_eq!(restore(&levels, dir.path()).unwrap(), Vec::<String>::new());
        assert_eq!(
            levels.levels(),
            [
                (ROOT_LOGGER.to_string(), "WARN".to_string()),
                ("sluice_shards::connection".to_string(), "TRACE".to_string()),
            ]
        );
    }

    #[test]
    fn no_file_changes_nothing_and_a_bad_level_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let levels = MapLevels::default();
        assert!(restore(&levels, dir.path()).unwrap().is_empty());
        fs::write(
            dir.path().join(LOG_LEVELS_FILE),
            "a=LOUD\nnot a line\nb=INFO\n",
        )
        .unwrap();
        let refused = restore(&levels, dir.path()).unwrap();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("a: "), "{refused:?}");
        assert_eq!(levels.levels(), [("b".to_string(), "INFO".to_string())]);
    }
}
