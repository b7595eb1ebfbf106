//! `[engine]`: the database file (relative to the config file's folder)
//! how long events are kept, and when a commit reaches the disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use crate::config::raw::RawEngine;
use crate::config::{EngineConfig, Synchronous};

/// Shortest retention: resume needs a window.
const MIN_RETENTION: Duration = Duration::from_secs(60);
/// Longest retention (ten years).
const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

impl Validator<'_, '_> {
    /// `[engine]`; a relative `database` is resolved against the folder of
    /// the config file at `path`.
    pub(super) fn engine(&mut self, path: &Path, raw: &RawEngine) -> EngineConfig {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let database = match &raw.database {
            Some(d) if d.get_ref().trim().is_empty() => {
                self.push(
                    d,
                    "engine.database",
                    "must not be empty; e.g. \"livestrom.db\"",
                );
                PathBuf::from("livestrom.db")
            }
            Some(d) => PathBuf::from(d.get_ref()),
            None => PathBuf::from("livestrom.db"),
        };
        EngineConfig {
            database: if database.is_absolute() {
                database
            } else {
                base.join(database)
            },
            retention: self.duration(
                &raw.retention,
                "engine.retention",
                Duration::from_secs(7 * 86_400),
                (MIN_RETENTION, MAX_RETENTION),
            ),
            synchronous: match &raw.synchronous {
                None => Synchronous::Normal,
                Some(v) => match v.get_ref().trim().to_ascii_lowercase().as_str() {
                    "normal" => Synchronous::Normal,
                    "full" => Synchronous::Full,
                    _ => {
                        self.push(
                            v,
                            "engine.synchronous",
                            "must be \"normal\" (the default) or \"full\" (every commit synced to disk)",
                        );
                        Synchronous::Normal
                    }
                },
            },
        }
    }
}
