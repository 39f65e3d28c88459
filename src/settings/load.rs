//! Reading the configuration: the TOML file, then `COMPLYD_SECTION__KEY`
//! environment overrides, into [`Settings`], with every unknown key and
//! every value of the wrong type listed at once.

use super::{ConfigErrors, Settings};
use std::path::Path;

impl Settings {
    /// Loads `path` (TOML), then `COMPLYD_SECTION__KEY` environment
    /// overrides (e.g. `COMPLYD_STORE__URL`, `COMPLYD_STREAM__USERNAME`).
    /// Variables without `__` (`COMPLYD_LOG`, the password variable) are not
    /// configuration keys and are left alone.
    ///
    /// # Errors
    /// [`ConfigErrors`] naming every unknown key and every value of the
    /// wrong type at once.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
        let (s, problems) = Settings::load_lenient(path)?;
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// [`Settings::load`] that goes on past unknown keys and values of
    /// the wrong type: the settings read (defaults where a value was
    /// refused) and every such problem, so that `validate` can list them
    /// with the others.
    ///
    /// # Errors
    /// A file that is missing or is not TOML (nothing more can be checked).
    pub fn load_lenient(path: Option<&Path>) -> Result<(Settings, Vec<String>), ConfigErrors> {
        let mut b = config::Config::builder();
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigErrors(vec![format!("{}: no such config file", p.display())]));
            }
            b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
        }
        let overrides: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.strip_prefix("COMPLYD_").is_some_and(|rest| rest.contains("__")))
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("COMPLYD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let cfg = b.build().map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        let tree: serde_json::Value = cfg.try_deserialize().map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        Ok(Settings::from_tree(tree))
    }

    /// Typed settings from a parsed tree: unknown keys are listed and
    /// dropped, then each value of the wrong type is listed and replaced by
    /// its default, so one pass reports every such problem.
    pub fn from_tree(mut tree: serde_json::Value) -> (Settings, Vec<String>) {
        let mut problems = Vec::new();
        let known = serde_json::to_value(Settings::default()).unwrap_or_default();
        drop_unknown_keys(&known, &mut tree, "", &mut problems);
        // Each refused value is removed (its default applies) and the rest
        // read again: at most one round per key.
        for _ in 0..256 {
            match serde_path_to_error::deserialize::<_, Settings>(&tree) {
                Ok(s) => return (s, problems),
                Err(e) => {
                    let at = e.path().to_string();
                    problems.push(format!("{at}: {}", e.inner()));
                    if !remove_path(&mut tree, &at) {
                        break;
                    }
                }
            }
        }
        (Settings::default(), problems)
    }

    /// Parses TOML text (tests, embedded defaults).
    ///
    /// # Errors
    /// The TOML error, or every unknown key and refused value.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigErrors> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        Settings::from_table(table)
    }

    /// Typed settings from a parsed TOML table (the demo's file, once its
    /// `[sim]` section is taken out).
    ///
    /// # Errors
    /// Every unknown key and refused value.
    pub fn from_table(table: toml::Table) -> Result<Settings, ConfigErrors> {
        let tree = serde_json::to_value(table).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        match Settings::from_tree(tree) {
            (s, p) if p.is_empty() => Ok(s),
            (_, p) => Err(ConfigErrors(p)),
        }
    }
}

/// Lists (and removes) every key of `got` that `known` (the defaults) does
/// not have, with the keys its section does have.
fn drop_unknown_keys(known: &serde_json::Value, got: &mut serde_json::Value, prefix: &str, problems: &mut Vec<String>) {
    let (Some(k), Some(g)) = (known.as_object(), got.as_object_mut()) else { return };
    let unknown: Vec<String> = g.keys().filter(|key| !k.contains_key(key.as_str())).cloned().collect();
    for key in unknown {
        g.remove(&key);
        let valid: Vec<&str> = k.keys().map(String::as_str).collect();
        if prefix.is_empty() {
            problems.push(format!("unknown section [{key}] (sections: {})", valid.join(", ")));
        } else {
            problems.push(format!(
                "unknown key {prefix}{key} (keys of [{}]: {})",
                prefix.trim_end_matches('.'),
                valid.join(", ")
            ));
        }
    }
    for (key, value) in g.iter_mut() {
        if let Some(kv) = k.get(key).filter(|v| v.is_object()) {
            drop_unknown_keys(kv, value, &format!("{prefix}{key}."), problems);
        }
    }
}

/// Removes the value at a dotted path (`stream.idle_timeout_ms`, or
/// `stream.partitions[2]`'s whole key); false when there is nothing to remove.
fn remove_path(tree: &mut serde_json::Value, path: &str) -> bool {
    let keys: Vec<&str> =
        path.split('.').map(|k| k.split('[').next().unwrap_or(k)).filter(|k| !k.is_empty() && *k != "?").collect();
    let Some((last, parents)) = keys.split_last() else { return false };
    let mut node = tree;
    for k in parents {
        match node.get_mut(*k) {
            Some(n) => node = n,
            None => return false,
        }
    }
    node.as_object_mut().is_some_and(|o| o.remove(*last).is_some())
}
