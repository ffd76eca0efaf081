//! The broker's log filter behind a reload handle, so that IncrementalAlterConfigs on Kafka's
//! BROKER_LOGGER resource can change a logger's level while the broker runs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sluice_shards::log_levels::{LogLevels, ROOT_LOGGER};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::reload::Handle;

/// Loggers with a level of their own, on top of the root level, rebuilt into an `EnvFilter`
/// at each change.
pub struct ReloadableLevels<S> {
    handle: Handle<EnvFilter, S>,
    /// "root" → level, then module path → level.
    levels: Mutex<BTreeMap<String, String>>,
}

impl<S> std::fmt::Debug for ReloadableLevels<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableLevels")
            .field("levels", &self.levels)
            .finish()
    }
}

impl<S> ReloadableLevels<S> {
    /// Levels starting from `initial`, a filter such as `SLUICE_LOG` holds
    /// (`info,sluice_shards=debug`): a bare level is the root's, `target=level` a logger's.
    /// Directives of another shape (span filters) are kept out of run-time changes.
    pub fn new(handle: Handle<EnvFilter, S>, initial: &str) -> ReloadableLevels<S> {
        let mut levels = BTreeMap::new();
        levels.insert(ROOT_LOGGER.to_string(), "INFO".to_string());
        for directive in initial.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) if !target.contains(['[', '{']) => {
                    levels.insert(target.to_string(), level.to_uppercase());
                }
                None => {
                    levels.insert(ROOT_LOGGER.to_string(), directive.to_uppercase());
                }
                Some(_) => {}
            }
        }
        ReloadableLevels {
            handle,
            levels: Mutex::new(levels),
        }
    }
}

/// The `EnvFilter` directive of a Kafka level name.
fn directive_level(level: &str) -> &'static str {
    match level {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "OFF" => "off",
        _ => "error",
    }
}

impl<S: 'static> LogLevels for ReloadableLevels<S>
where
    Handle<EnvFilter, S>: Send + Sync,
{
    fn levels(&self) -> Vec<(String, String)> {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let root = levels.get(ROOT_LOGGER).cloned().unwrap_or_default();
        std::iter::once((ROOT_LOGGER.to_string(), root))
            .chain(
                levels
                    .iter()
                    .filter(|(name, _)| *name != ROOT_LOGGER)
                    .map(|(n, l)| (n.clone(), l.clone())),
            )
            .collect()
    }

    fn set(&self, logger: &str, level: Option<&str>) -> Result<(), String> {
        if logger.contains([',', '=', '[', '{', ' ']) {
            return Err(format!("{logger:?} is not a logger name"));
        }
        let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = levels.clone();
        match level {
            Some(level) => {
                next.insert(logger.to_string(), level.to_string());
            }
            None => {
                next.remove(logger);
            }
        }
        let root = next.get(ROOT_LOGGER).map_or("info", |l| directive_level(l));
        let mut filter = root.to_string();
        for (name, level) in next.iter().filter(|(n, _)| *n != ROOT_LOGGER) {
            filter.push_str(&format!(",{name}={}", directive_level(level)));
        }
        let filter = EnvFilter::try_new(&filter).map_err(|e| format!("{filter:?}: {e}"))?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        *levels = next;
        Ok(())
    }
}
