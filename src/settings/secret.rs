//! Secrets: the stream password and the admin token. They are never flags
//! and never printed: a [`Secret`] prints as `***`, and an error says where
//! a secret was looked for, never what it holds.

use super::file::{BatchJobSettings, HttpSettings, StreamSettings};
use std::fmt;
use std::path::Path;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself: only for building a header or comparing a token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl StreamSettings {
    /// The password: the first line of `password_file`, or the variable named
    /// by `password_env`.
    ///
    /// # Errors
    /// Where it was looked for and why it was not found (never the value).
    pub fn password(&self) -> Result<Secret, String> {
        if let Some(path) = &self.password_file {
            return read_secret_file(path, "stream.password_file");
        }
        if self.password_env.is_empty() {
            return Err("stream: no password source: set stream.password_file or stream.password_env".to_owned());
        }
        match std::env::var(&self.password_env) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            _ => Err(format!(
                "stream: the password is missing: set the environment variable {} (stream.password_env) or stream.password_file",
                self.password_env
            )),
        }
    }
}

impl HttpSettings {
    /// The admin token: None when none is configured (the endpoint is off).
    ///
    /// # Errors
    /// A configured source that holds no token (never the value).
    pub fn admin_token(&self) -> Result<Option<Secret>, String> {
        if let Some(path) = &self.admin_token_file {
            return read_secret_file(path, "http.admin_token_file").map(Some);
        }
        if self.admin_token_env.is_empty() {
            return Ok(None);
        }
        match std::env::var(&self.admin_token_env) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(format!(
                "http.admin_token_env names {}, which is not set: set it, or clear http.admin_token_env to turn the admin endpoint off",
                self.admin_token_env
            )),
        }
    }
}

impl BatchJobSettings {
    /// The X API bearer token: the first line of `bearer_token_file`, or the
    /// variable named by `bearer_token_env`.
    ///
    /// # Errors
    /// Where it was looked for and why it was not found (never the value).
    pub fn bearer_token(&self) -> Result<Secret, String> {
        if let Some(path) = &self.bearer_token_file {
            return read_secret_file(path, "batch_job.bearer_token_file");
        }
        match std::env::var(&self.bearer_token_env) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
            _ => Err(format!(
                "batch_job: the bearer token is missing: set the environment variable {} (batch_job.bearer_token_env) or batch_job.bearer_token_file",
                if self.bearer_token_env.is_empty() { "(none named)" } else { &self.bearer_token_env }
            )),
        }
    }
}

/// The first line of a secret file.
fn read_secret_file(path: &Path, key: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{key} {}: empty", path.display()));
    }
    Ok(Secret(line.to_owned()))
}
