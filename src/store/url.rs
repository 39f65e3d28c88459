//! Where a store lives: [`StoreUrl`], parsed once from `store.url` or
//! `--db`, the CA file a PostgreSQL URL names ([`split_ca_file`]), and
//! [`redact_url`], the only form of a URL that reaches a log.

use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed store URL: `sqlite:PATH` (also `sqlite://PATH`) or
/// `postgres://...` (also `postgresql://...`). Its `Display` is the redacted
/// form: no password ever prints.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// The whole URL, as the PostgreSQL client takes it.
    Postgres(String),
}

/// Why a string is not a store URL. Of a string that is not a URL only its
/// scheme is shown: it may be a connection string holding a password in a
/// form no redaction can know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStoreUrl {
    #[error("the store URL ({0}) is not sqlite:PATH or postgres://...")]
    Scheme(String),
    #[error("{0:?} has no path after sqlite:")]
    NoPath(String),
}

impl StoreUrl {
    /// Parses `sqlite:PATH` or `postgres://...`.
    ///
    /// # Errors
    /// [`BadStoreUrl`] for any other form or an empty SQLite path.
    pub fn parse(url: &str) -> Result<StoreUrl, BadStoreUrl> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(BadStoreUrl::NoPath(url.to_owned()));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_owned()));
        }
        let shown = match url.split_once(':') {
            Some((scheme, rest)) if is_scheme(scheme) => {
                let slashes = if rest.starts_with("//") { "//" } else { "" };
                format!("{scheme}:{slashes}... (the rest not shown)")
            }
            _ => "not shown".to_owned(),
        };
        Err(BadStoreUrl::Scheme(shown))
    }

    /// The SQLite store at `path`.
    pub fn sqlite(path: impl AsRef<Path>) -> StoreUrl {
        StoreUrl::Sqlite(path.as_ref().to_path_buf())
    }

    /// The CA file a PostgreSQL URL trusts instead of the built-in roots
    /// (`sslrootcert=PATH`, see [`split_ca_file`]); None for SQLite.
    pub fn ca_file(&self) -> Option<PathBuf> {
        match self {
            StoreUrl::Sqlite(_) => None,
            StoreUrl::Postgres(url) => split_ca_file(url).1,
        }
    }

    /// A file kept beside the store: `PATH.<suffix>` for SQLite, else
    /// `complyd.<suffix>` in the working directory.
    pub fn beside(&self, suffix: &str) -> PathBuf {
        match self {
            StoreUrl::Sqlite(path) => {
                let mut p = path.clone().into_os_string();
                p.push(".");
                p.push(suffix);
                PathBuf::from(p)
            }
            StoreUrl::Postgres(_) => PathBuf::from(format!("complyd.{suffix}")),
        }
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = BadStoreUrl;
    fn from_str(s: &str) -> Result<StoreUrl, BadStoreUrl> {
        StoreUrl::parse(s)
    }
}

impl fmt::Display for StoreUrl {
    /// The redacted form, safe for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// libpq's name for a PostgreSQL URL's CA file.
const SSLROOTCERT: &str = "sslrootcert";

/// A PostgreSQL URL without its `sslrootcert` parameter (the PostgreSQL
/// client refuses a parameter it does not know), and the CA file that
/// parameter named: `sslrootcert=PATH`, as libpq spells it, percent-decoded.
/// `sslrootcert=system` (libpq's name for the default roots) and an empty
/// value name none: the built-in roots (`crate::tls`).
pub fn split_ca_file(url: &str) -> (String, Option<PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut named = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some((k, v)) if k == SSLROOTCERT => {
                named = Some(v);
                false
            }
            _ => true,
        })
        .collect();
    let ca_file = named
        .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        .filter(|v| !v.is_empty() && v != "system")
        .map(PathBuf::from);
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (url, ca_file)
}

/// A URL safe to log: the value of any `password` parameter (its name
/// percent-encoded or not) is replaced by `***`, then any
/// `user:password@` part by `***@`.
///
/// A parameter's value runs to the next `&`, as the PostgreSQL client reads
/// it: it may hold `?`, `@` or spaces. Then everything up to the last `@`
/// is hidden: the client reads the credentials up to the first one, but a
/// user name may hold another unencoded (`user@server`), and a password may
/// hold `?`, `/`, `#` or `@`. A query holding an `@` hides the host too:
/// more than needed, never less.
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(s) if is_scheme(&url[..s]) => url.split_at(s + 3),
        _ => ("", url),
    };
    let mut hidden = String::with_capacity(rest.len());
    for (n, part) in rest.split('&').enumerate() {
        if n > 0 {
            hidden.push('&');
        }
        // Where a parameter may begin: the part's start, or after a `?` or
        // a space (a key=value string's).
        let starts = std::iter::once(0).chain(part.match_indices(['?', ' ', '\t']).map(|(i, _)| i + 1));
        let value_at = starts
            .filter_map(|p| part[p..].split_once('=').map(|(k, _)| (p, k)))
            .find(|(_, k)| {
                percent_encoding::percent_decode_str(k).decode_utf8_lossy().trim().eq_ignore_ascii_case("password")
            })
            .map(|(p, k)| p + k.len() + 1);
        match value_at {
            Some(v) => {
                hidden.push_str(&part[..v]);
                hidden.push_str("***");
            }
            None => hidden.push_str(part),
        }
    }
    match hidden.rfind('@') {
        Some(at) => format!("{head}***{}", &hidden[at..]),
        None => format!("{head}{hidden}"),
    }
}

/// Whether `s` is a URL scheme (RFC 3986: a letter, then letters, digits,
/// `+`, `-` or `.`).
fn is_scheme(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic()) && c.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_url_never_holds_a_password() {
        for (url, want) in [
            ("postgres://complyd:s3cret@db/complyd", "postgres://***@db/complyd"),
            (
                "postgres://db/complyd?sslmode=require&password=s3cret",
                "postgres://db/complyd?sslmode=require&password=***",
            ),
            ("postgres://u:s3cret@db/x?PASSWORD=s3cret&options=-c", "postgres://***@db/x?PASSWORD=***&options=-c"),
            ("sqlite:complyd.db", "sqlite:complyd.db"),
            // A password holding what ends a part of a URL, or an `@`.
            ("postgres://u:s3?cret@db/x", "postgres://***@db/x"),
            ("postgres://u:s3/cr#et@db/x?sslmode=require", "postgres://***@db/x?sslmode=require"),
            ("postgresql://u:s3@cret@db/x", "postgresql://***@db/x"),
            // A user name holding an `@` (user@server).
            ("postgres://complyd@myserver:s3cret@db:1/x", "postgres://***@db:1/x"),
            // An `@` in the query: the host is hidden too, the password still.
            ("postgres://u:s3cret@db:5432/x?application_name=a@b", "postgres://***@b"),
            ("postgres://db:1/x?user=complyd@myserver&password=s3cret", "postgres://***@myserver&password=***"),
            // The parameter's name percent-encoded, its value holding `&`.
            ("postgres://db/x?pass%77ord=s3cret", "postgres://db/x?pass%77ord=***"),
            ("postgres://db/x?password=s3cret&ret=1", "postgres://db/x?password=***&ret=1"),
            // A password parameter's value runs to the next `&`, whatever it holds.
            ("postgres://db/x?password=s3@cret", "postgres://db/x?password=***"),
            (
                "postgres://u@db/x?password=ab@s3cret&sslmode=require",
                "postgres://***@db/x?password=***&sslmode=require",
            ),
            ("postgres://db/x?password=s3?cret", "postgres://db/x?password=***"),
            ("postgres://db/x?password=a s3cret", "postgres://db/x?password=***"),
            ("postgres://db/x?sslmode=require&password =s3cret", "postgres://db/x?sslmode=require&password =***"),
            // Not URLs: still no password.
            ("postgres:/u:s3cret@db/x", "***@db/x"),
            ("host=db user=u password=s3cret", "host=db user=u password=***"),
            ("u:s3cret@db", "***@db"),
        ] {
            assert_eq!(redact_url(url), want);
            assert!(!redact_url(url).contains("s3cret"));
            if let Ok(parsed) = StoreUrl::parse(url) {
                assert_eq!(parsed.to_string(), want);
                assert!(!format!("{parsed:?}").contains("s3cret"));
            }
        }
    }

    #[test]
    fn both_forms_parse_and_others_are_refused_without_the_password() {
        assert_eq!(StoreUrl::parse("sqlite:a/b.db"), Ok(StoreUrl::sqlite("a/b.db")));
        assert_eq!(StoreUrl::parse("sqlite:///tmp/x.db"), Ok(StoreUrl::sqlite("/tmp/x.db")));
        assert!(matches!(StoreUrl::parse("postgresql://h/db"), Ok(StoreUrl::Postgres(_))));
        assert_eq!(StoreUrl::parse("sqlite:"), Err(BadStoreUrl::NoPath("sqlite:".into())));
        for (url, shown) in [
            ("mysql://u:s3cret@h/db", "(mysql://... (the rest not shown))"),
            ("postgres:/u:s3?cret@h/db?a=file://y", "(postgres:... (the rest not shown))"),
            ("host=db password=s3cret", "(not shown)"),
        ] {
            let e = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(shown) && !e.contains("s3") && !e.contains("db"), "{e}");
        }
    }

    #[test]
    fn sslrootcert_names_the_ca_file_and_leaves_the_url() {
        let split = |u: &str| split_ca_file(u);
        assert_eq!(split("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(
            split("postgres://h/db?sslmode=require&sslrootcert=/etc/ca.pem&connect_timeout=5"),
            ("postgres://h/db?sslmode=require&connect_timeout=5".into(), Some(PathBuf::from("/etc/ca.pem")))
        );
        assert_eq!(
            split("postgres://h/db?sslrootcert=%2Fetc%2Fmy%20ca.pem"),
            ("postgres://h/db".into(), Some(PathBuf::from("/etc/my ca.pem")))
        );
        assert_eq!(split("postgres://h/db?sslrootcert=system"), ("postgres://h/db".into(), None));
        assert_eq!(split("postgres://h/db?sslrootcert=&x=1"), ("postgres://h/db?x=1".into(), None));
        let url = StoreUrl::parse("postgres://u:s3cret@h/db?sslrootcert=ca.pem").unwrap();
        assert_eq!(url.ca_file(), Some(PathBuf::from("ca.pem")));
        assert_eq!(url.to_string(), "postgres://***@h/db?sslrootcert=ca.pem");
        assert_eq!(StoreUrl::sqlite("x.db?sslrootcert=a").ca_file(), None);
    }

    #[test]
    fn files_beside_the_store() {
        assert_eq!(StoreUrl::sqlite("d/x.db").beside("deadletter.jsonl"), PathBuf::from("d/x.db.deadletter.jsonl"));
        assert_eq!(
            StoreUrl::parse("postgres://h/db").unwrap().beside("connections.json"),
            PathBuf::from("complyd.connections.json")
        );
    }
}
