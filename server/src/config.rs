//! Server settings: defaults, overridden by the TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// How hard a storage commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync before acknowledging: an acknowledged change survives a crash. The product setting.
    #[default]
    Immediate,
    /// No fsync. Exists only for like-for-like benchmarks against servers that never fsync.
    None,
}

/// Server settings. Build with `Config { field, ..Config::default() }` or [`Config::load`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Largest WebSocket message (and frame) accepted from a peer.
    pub max_message_bytes: usize,
    pub durability: Durability,
    /// Base of webhook URLs registered at providers (stored; used by bridges later).
    pub public_url: Option<String>,
    /// How long a document with no interested peer stays resident (stored; used by the engine later).
    pub doc_idle_evict: Duration,
    /// Region for phone number normalization (stored; used by the record model later).
    pub default_phone_region: Option<String>,
    /// WebSocket keep-alive ping interval (not a config key: 5 s, shortened by tests).
    pub ping_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3030)),
            data_dir: PathBuf::from("./driftless-data"),
            max_message_bytes: 16 * 1024 * 1024,
            durability: Durability::Immediate,
            public_url: None,
            doc_idle_evict: Duration::from_secs(5 * 60),
            ping_interval: crate::ws::PING_INTERVAL,
            default_phone_region: None,
        }
    }
}

/// Why a configuration was refused. Every variant names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors and unknown keys (the TOML message names the key and shows the line).
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    InvalidValue { key: &'static str, message: String },
    #[error("config section `{key}` is not supported yet; remove it to start")]
    NotSupported { key: &'static str },
}

/// Values given on the command line; `Some` wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// The file as written. Every value is taken raw so errors can name their key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<toml::Value>,
    data_dir: Option<toml::Value>,
    public_url: Option<toml::Value>,
    max_message_bytes: Option<toml::Value>,
    doc_idle_evict: Option<toml::Value>,
    default_phone_region: Option<toml::Value>,
    durability: Option<toml::Value>,
    auth: Option<toml::Value>,
    limits: Option<toml::Value>,
    bridges: Option<toml::Value>,
    policies: Option<toml::Value>,
}

impl Config {
    /// Defaults, then the file at `path` (if any), then `overrides`.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml_str(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: path.to_owned(),
                        message,
                    },
                    other => other,
                })?
            }
            None => Self::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(data_dir) = overrides.data_dir {
            config.data_dir = data_dir;
        }
        Ok(config)
    }

    /// Defaults overridden by the TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })?;
        // Later issues add these sections; accepting them silently would pretend they work.
        for (key, present) in [
            ("auth", file.auth.is_some()),
            ("limits", file.limits.is_some()),
            ("bridges", file.bridges.is_some()),
            ("policies", file.policies.is_some()),
        ] {
            if present {
                return Err(ConfigError::NotSupported { key });
            }
        }

        let mut config = Self::default();
        if let Some(v) = file.listen {
            let s = expect_str("listen", &v)?;
            config.listen = s.parse().map_err(|_| ConfigError::InvalidValue {
                key: "listen",
                message: format!("`{s}` is not a socket address like \"127.0.0.1:3030\""),
            })?;
        }
        if let Some(v) = file.data_dir {
            let s = expect_str("data_dir", &v)?;
            if s.is_empty() {
                return Err(invalid("data_dir", "must not be empty"));
            }
            config.data_dir = PathBuf::from(s);
        }
        if let Some(v) = file.public_url {
            let s = expect_str("public_url", &v)?;
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                return Err(invalid(
                    "public_url",
                    format!("`{s}` must start with http:// or https://"),
                ));
            }
            config.public_url = Some(s.trim_end_matches('/').to_owned());
        }
        if let Some(v) = file.max_message_bytes {
            let n = v.as_integer().ok_or_else(|| {
                invalid("max_message_bytes", "must be an integer number of bytes")
            })?;
            config.max_message_bytes =
                usize::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid("max_message_bytes", format!("{n} is not a positive size"))
                })?;
        }
        if let Some(v) = file.doc_idle_evict {
            let s = expect_str("doc_idle_evict", &v)?;
            config.doc_idle_evict =
                parse_duration(s).map_err(|message| invalid("doc_idle_evict", message))?;
        }
        if let Some(v) = file.default_phone_region {
            let s = expect_str("default_phone_region", &v)?;
            if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(
                    "default_phone_region",
                    format!("`{s}` is not a two-letter region code like \"US\""),
                ));
            }
            config.default_phone_region = Some(s.to_owned());
        }
        if let Some(v) = file.durability {
            config.durability = match expect_str("durability", &v)? {
                "immediate" => Durability::Immediate,
                "none" => Durability::None,
                other => {
                    return Err(invalid(
                        "durability",
                        format!("`{other}` is not one of \"immediate\", \"none\""),
                    ));
                }
            };
        }
        Ok(config)
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key,
        message: message.into(),
    }
}

fn expect_str<'v>(key: &'static str, value: &'v toml::Value) -> Result<&'v str, ConfigError> {
    value.as_str().ok_or_else(|| {
        invalid(
            key,
            format!("expected a string, found {}", value.type_str()),
        )
    })
}

/// Parses "500ms", "30s", "5m", "1h": a whole number and one unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("`{s}` has no unit; write it like \"500ms\", \"30s\", \"5m\" or \"1h\"")
    })?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let seconds = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{s}` is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!(
            "`{s}` has unknown unit `{unit}`; use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let config = Config::from_toml_str(
            r#"
            listen = "0.0.0.0:4000"
            data_dir = "/var/lib/driftless"
            public_url = "https://sync.example.com/"
            max_message_bytes = 1024
            doc_idle_evict = "30s"
            default_phone_region = "US"
            durability = "none"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:4000".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/driftless"));
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://sync.example.com")
        );
        assert_eq!(config.max_message_bytes, 1024);
        assert_eq!(config.doc_idle_evict, Duration::from_secs(30));
        assert_eq!(config.default_phone_region.as_deref(), Some("US"));
        assert_eq!(config.durability, Durability::None);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = Config::from_toml_str("").unwrap();
        let default = Config::default();
        assert_eq!(config.listen, default.listen);
        assert_eq!(config.data_dir, default.data_dir);
        assert_eq!(config.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(config.durability, Durability::Immediate);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("doc_idle_evict = \"5 minutes\"", "doc_idle_evict"),
            ("doc_idle_evict = \"5\"", "doc_idle_evict"),
            ("listen = \"localhost\"", "listen"),
            ("max_message_bytes = \"big\"", "max_message_bytes"),
            ("max_message_bytes = -1", "max_message_bytes"),
            ("durability = \"eventual\"", "durability"),
            ("data_dir = 3", "data_dir"),
            ("public_url = \"sync.example.com\"", "public_url"),
        ] {
            let err = Config::from_toml_str(text).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn later_sections_are_refused() {
        for (text, key) in [
            ("[auth]\nsecret_env = \"X\"", "auth"),
            ("[limits]", "limits"),
            ("[[bridges]]\nid = \"a\"", "bridges"),
            ("[[policies]]\nfield = \"phones\"", "policies"),
        ] {
            let err = Config::from_toml_str(text).unwrap_err();
            assert!(matches!(err, ConfigError::NotSupported { .. }), "{err}");
            assert!(err.to_string().contains(key), "{err}");
            assert!(err.to_string().contains("not supported yet"), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "ms", "5", "1.5s", "5d", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("driftless.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:4000\"\ndata_dir = \"/from/file\"\n",
        )
        .unwrap();

        let from_file = Config::load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(from_file.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(from_file.data_dir, PathBuf::from("/from/file"));

        let flags = Overrides {
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            data_dir: Some(PathBuf::from("/from/flag")),
        };
        let both = Config::load(Some(&path), flags.clone()).unwrap();
        assert_eq!(both.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(both.data_dir, PathBuf::from("/from/flag"));

        let no_file = Config::load(None, flags).unwrap();
        assert_eq!(no_file.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(
            no_file.max_message_bytes,
            Config::default().max_message_bytes
        );
    }

    #[test]
    fn parse_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let err = Config::load(Some(&path), Overrides::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.toml") && text.contains("colour"),
            "{text}"
        );
    }
}
