//! Server settings: defaults, overridden by the TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use driftless_bridges::google::client::{
    DEFAULT_API_BASE as GOOGLE_API_BASE, DEFAULT_TOKEN_URL as GOOGLE_TOKEN_URL,
    Secret as GoogleSecret,
};
use driftless_bridges::graph::client::{
    DEFAULT_API_BASE as GRAPH_API_BASE, DEFAULT_TOKEN_URL as GRAPH_TOKEN_URL,
};
use driftless_bridges::hubspot::client::{
    DEFAULT_API_BASE as HUBSPOT_API_BASE, DEFAULT_TOKEN_URL as HUBSPOT_TOKEN_URL,
    Secret as HubSpotSecret,
};
use driftless_bridges::salesforce::client::{
    DEFAULT_TOKEN_URL as SALESFORCE_TOKEN_URL, normalize_api_version,
};
use driftless_bridges::salesforce::wire::{
    DEFAULT_API_VERSION as SALESFORCE_API_VERSION, SObjectType, is_field_name,
};
use serde::Deserialize;

use crate::auth::{Keys, MIN_SECRET_BYTES, Secret};

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
    /// Base of webhook URLs registered at providers (Google Calendar push channels so far).
    pub public_url: Option<String>,
    /// How long a document nothing happens to stays in memory (open or not; an open one is
    /// reloaded on its next message).
    pub doc_idle_evict: Duration,
    /// The same for small documents (up to 1,000 operations and changes), which reload in about a
    /// millisecond or less; at most `doc_idle_evict`.
    pub small_doc_idle_evict: Duration,
    /// Region for phone number normalization (stored; used by the record model later).
    pub default_phone_region: Option<String>,
    /// WebSocket keep-alive ping interval (not a config key: 5 s, shortened by tests).
    pub ping_interval: Duration,
    /// `[auth]`: `None` is open development mode (every peer in workspace `default`).
    pub auth: Option<AuthConfig>,
    /// `[limits]`.
    pub limits: Limits,
    /// `serve --allow-anonymous`: open mode may listen on a non-loopback address.
    pub allow_anonymous: bool,
    /// `[[bridges]]`: provider bridges (CalDAV / CardDAV so far).
    pub bridges: Vec<BridgeConfig>,
    /// `[[policies]]`: which source decides a field of a record type. Checked against `bridges`
    /// at startup ([`validate_policies`]).
    pub policies: Vec<Policy>,
}

/// Who decides a field (`authority` of a `[[policies]]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// This bridge's value wins; for `field = "deleted"`, its provider delete tombstones the
    /// record even while other bridges still hold it.
    Bridge(String),
    /// The newest edit wins: provider modification time, or the app change's time (see
    /// `bridge/latest.rs` and docs/configuration.md).
    Latest,
}

/// One `[[policies]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `calendar_event` or `contact`.
    pub record_type: String,
    /// A top-level field of the record type (see [`policy_fields`]), or `deleted`.
    pub field: String,
    pub authority: Authority,
}

/// The fields of `record_type` a `[[policies]]` entry may name: the top-level fields of the
/// record (contracts: "Record documents"; containers count as one field) and `deleted` (the delete
/// authority). `None`: not a record type bridges sync.
pub fn policy_fields(record_type: &str) -> Option<&'static [&'static str]> {
    match record_type {
        driftless_crdt_model::CALENDAR_EVENT => Some(&[
            "title",
            "location",
            "status",
            "ical_uid",
            "description",
            "start",
            "end",
            "recurrence",
            "overrides",
            "organizer",
            "attendees",
            "deleted",
        ]),
        driftless_crdt_model::CONTACT => Some(&[
            "name",
            "organization",
            "job_title",
            "notes",
            "company",
            "emails",
            "phones",
            "deleted",
        ]),
        _ => None,
    }
}

/// The record type a bridge of `kind` syncs.
pub fn bridge_record_type(kind: BridgeKind) -> &'static str {
    match kind {
        BridgeKind::CalDav | BridgeKind::GoogleCalendar | BridgeKind::MicrosoftGraph => {
            driftless_crdt_model::CALENDAR_EVENT
        }
        BridgeKind::CardDav | BridgeKind::HubSpot | BridgeKind::MicrosoftGraphContacts => {
            driftless_crdt_model::CONTACT
        }
        BridgeKind::Salesforce => driftless_crdt_model::CONTACT,
    }
}

/// A hubspot bridge's `objects` (default: contacts only): a non-empty array of distinct
/// `contacts`, `companies`, `deals`, kept in that order.
fn hubspot_objects(
    value: Option<toml::Value>,
) -> Result<Vec<driftless_bridges::hubspot::webhook::ObjectType>, String> {
    use driftless_bridges::hubspot::webhook::ObjectType;
    let Some(value) = value else {
        return Ok(vec![ObjectType::Contact]);
    };
    let toml::Value::Array(items) = value else {
        return Err(format!(
            "must be an array of strings, not {}",
            value.type_str()
        ));
    };
    let mut out = Vec::new();
    for item in items {
        let object = match item.as_str() {
            Some("contacts") => ObjectType::Contact,
            Some("companies") => ObjectType::Company,
            Some("deals") => ObjectType::Deal,
            _ => {
                return Err(format!(
                    "`{item}` is not one of \"contacts\", \"companies\", \"deals\""
                ));
            }
        };
        if out.contains(&object) {
            return Err(format!("`{item}` is listed twice"));
        }
        out.push(object);
    }
    if out.is_empty() {
        return Err("must name at least one object type".into());
    }
    out.sort_by_key(|o| match o {
        ObjectType::Company => 0,
        ObjectType::Contact => 1,
        ObjectType::Deal => 2,
    });
    Ok(out)
}

/// Checks `[[policies]]` against the record model and `bridges`: a known record type and field,
/// an authority that is "latest" or a configured bridge syncing that record type, and at most one
/// entry per (record type, field). Errors name the entry (0-based index) and the key.
pub fn validate_policies(policies: &[Policy], bridges: &[BridgeConfig]) -> Result<(), ConfigError> {
    for (index, policy) in policies.iter().enumerate() {
        let err = |key: &str, message: String| ConfigError::Policy {
            index,
            key: key.to_owned(),
            message,
        };
        let Some(fields) = policy_fields(&policy.record_type) else {
            return Err(err(
                "record_type",
                format!(
                    "`{}` is not a record type bridges sync (calendar_event, contact)",
                    policy.record_type
                ),
            ));
        };
        if !fields.contains(&policy.field.as_str()) {
            return Err(err(
                "field",
                format!(
                    "`{}` is not a field of {} (one of: {})",
                    policy.field,
                    policy.record_type,
                    fields.join(", ")
                ),
            ));
        }
        if let Authority::Bridge(id) = &policy.authority {
            let Some(bridge) = bridges.iter().find(|b| &b.id == id) else {
                return Err(err(
                    "authority",
                    format!("`{id}` is neither \"latest\" nor the id of a [[bridges]] entry"),
                ));
            };
            let syncs = match (&bridge.kind, &bridge.salesforce) {
                (BridgeKind::Salesforce, Some(sf)) => sf.object.record_type(),
                _ => bridge_record_type(bridge.kind),
            };
            if syncs != policy.record_type {
                return Err(err(
                    "authority",
                    format!(
                        "bridge `{id}` ({}) syncs {syncs} records, not {}",
                        bridge.kind.as_str(),
                        policy.record_type
                    ),
                ));
            }
        }
        if let Some(earlier) = policies[..index]
            .iter()
            .position(|p| p.record_type == policy.record_type && p.field == policy.field)
        {
            return Err(err(
                "field",
                format!(
                    "{}.{} already has a policy (entry {earlier}); one authority per field",
                    policy.record_type, policy.field
                ),
            ));
        }
    }
    Ok(())
}

/// The provider kind of a `[[bridges]]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    CalDav,
    CardDav,
    GoogleCalendar,
    /// HubSpot CRM contacts.
    HubSpot,
    /// Microsoft Graph calendar events (`calendarView/delta`) of one mailbox.
    MicrosoftGraph,
    /// Microsoft Graph contacts (`contacts/delta`) of one mailbox: `kind = "microsoft_graph"`
    /// with `resource = "contacts"` (one bridge syncs one record type).
    MicrosoftGraphContacts,
    /// Salesforce records of one sObject type (Contact).
    Salesforce,
}

impl BridgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CalDav => "caldav",
            Self::CardDav => "carddav",
            Self::GoogleCalendar => "google_calendar",
            Self::HubSpot => "hubspot",
            Self::MicrosoftGraph | Self::MicrosoftGraphContacts => "microsoft_graph",
            Self::Salesforce => "salesforce",
        }
    }
}

/// One `[[bridges]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    /// `[a-z0-9-]+`, unique: used in URLs and as the key of `links`.
    pub id: String,
    pub kind: BridgeKind,
    /// The workspace its documents are created in.
    pub workspace: String,
    pub poll_interval: Duration,
    /// A round removing more than this fraction of the linked records needs confirmation.
    pub max_delete_fraction: f64,
    /// The collection URL (calendar or address book); empty for other kinds.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The settings of a `google_calendar` bridge (`None` for other kinds).
    pub google: Option<GoogleCalendarConfig>,
    /// The settings of a `hubspot` bridge (`None` for other kinds).
    pub hubspot: Option<HubSpotBridgeConfig>,
    /// The settings of a `microsoft_graph` bridge (`None` for other kinds).
    pub graph: Option<GraphBridgeConfig>,
    /// The settings of a `salesforce` bridge (`None` for other kinds).
    pub salesforce: Option<SalesforceBridgeConfig>,
}

/// The keys of a `kind = "salesforce"` entry: the org, the connected app's OAuth keys (secrets
/// read from the environment variables the entry names; their `Debug` is `<redacted>`), and
/// what to sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceBridgeConfig {
    /// `https://MyDomain.my.salesforce.com`.
    pub instance_url: String,
    /// `v62.0` (normalized).
    pub api_version: String,
    pub client_id: String,
    /// `None` when the connected app does not require the secret for refreshes.
    pub client_secret: Option<GoogleSecret>,
    pub refresh_token: GoogleSecret,
    /// The OAuth token endpoint (default: `login.salesforce.com`).
    pub token_url: String,
    /// The sObject synced (`object`, default Contact).
    pub object: SObjectType,
    /// An external-id field holding the driftless document id (`id_field`): creates become
    /// upserts on it, so a retried create never duplicates.
    pub id_field: Option<String>,
    /// How long a round waits after `REQUEST_LIMIT_EXCEEDED` (`request_limit_wait`, default 15m).
    pub request_limit_wait: Duration,
}

/// How a `hubspot` bridge authenticates: a private app's token, or OAuth.
#[derive(Debug, Clone, PartialEq)]
pub enum HubSpotAuthConfig {
    /// `access_token_env`.
    AccessToken(HubSpotSecret),
    /// `client_id`, `client_secret_env`, `refresh_token_env`, `token_url`.
    OAuth {
        client_id: String,
        refresh_token: HubSpotSecret,
        token_url: String,
    },
}

/// The keys of a `kind = "hubspot"` entry. Secrets are read from the environment variables the
/// entry names; their `Debug` is `<redacted>`.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotBridgeConfig {
    pub auth: HubSpotAuthConfig,
    /// The app's client secret (`client_secret_env`): the OAuth client secret and the key of
    /// webhook signatures. Without it `POST /webhooks/hubspot/{bridge}` answers 404.
    pub client_secret: Option<HubSpotSecret>,
    /// The API root (default: `https://api.hubapi.com`).
    pub api_base: String,
    /// A unique-value contact property holding the driftless document id (`id_property`):
    /// exact lookups after a lost create answer. Without it the lookup searches by email.
    pub id_property: Option<String>,
    /// The object types synced (`objects = ["contacts", "companies", "deals"]`; default contacts
    /// only), each by its own runner under this bridge id (see `docs/configuration.md`).
    pub objects: Vec<driftless_bridges::hubspot::webhook::ObjectType>,
}

/// The keys of a `kind = "microsoft_graph"` entry. The mailbox is the user the refresh token
/// was issued for (`/me`), the calendar its default calendar; the secrets are read from the
/// environment variables the entry names and their `Debug` is `<redacted>`.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphBridgeConfig {
    pub client_id: String,
    /// `None` for a public client (no `client_secret_env`).
    pub client_secret: Option<GoogleSecret>,
    pub refresh_token: GoogleSecret,
    /// The OAuth2 token endpoint (default: the `common` tenant's v2.0 endpoint).
    pub token_url: String,
    /// The Graph root (default: `https://graph.microsoft.com/v1.0`).
    pub api_base: String,
    /// The synced window is `[now - window_past, now + window_future)`.
    pub window_past: Duration,
    pub window_future: Duration,
    /// The top-level `public_url` (set when the file is loaded): change notifications are
    /// subscribed to `{public_url}/webhooks/graph/{id}`. `None`: polling only.
    pub public_url: Option<String>,
}

/// The keys of a `kind = "google_calendar"` entry. The secrets are read from the environment
/// variables the entry names; their `Debug` is `<redacted>`.
#[derive(Debug, Clone, PartialEq)]
pub struct GoogleCalendarConfig {
    /// The calendar (`primary` or a calendar id).
    pub calendar_id: String,
    pub client_id: String,
    pub client_secret: GoogleSecret,
    pub refresh_token: GoogleSecret,
    /// The OAuth2 token endpoint (default: Google's).
    pub token_url: String,
    /// The Calendar API root (default: `https://www.googleapis.com/calendar/v3/`).
    pub api_base: String,
}

/// `[auth]`: the signing secrets, read from the environment at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub keys: Keys,
    /// The variable the current secret came from (for messages; never the secret).
    pub secret_env: String,
    pub previous_secret_env: Option<String>,
    /// How long a ticket from `POST /v1/tickets` is accepted.
    pub ticket_ttl: Duration,
}

impl AuthConfig {
    /// Auth with this secret and default settings (tests, embedding).
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            keys: Keys {
                current: Secret::new(secret),
                previous: None,
            },
            secret_env: "DRIFTLESS_SECRET".into(),
            previous_secret_env: None,
            ticket_ttl: Duration::from_secs(300),
        }
    }
}

/// `[limits]`: what one connection, IP, workspace or document may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections_per_workspace: usize,
    pub max_connections_per_ip: usize,
    /// Token bucket on frames received per connection: refill rate and burst.
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Token bucket on bytes received per connection: refill rate and burst (the burst is at least
    /// `max_message_bytes`, so a maximal message always fits).
    pub bytes_per_second: u64,
    pub byte_burst: u64,
    /// Largest document (compressed Automerge bytes).
    pub max_document_bytes: u64,
    /// Frames queued for one connection before it counts as a slow reader and is closed.
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections_per_workspace: 10_000,
            max_connections_per_ip: 256,
            messages_per_second: 10_000,
            message_burst: 20_000,
            bytes_per_second: 16 * 1024 * 1024,
            byte_burst: 32 * 1024 * 1024,
            max_document_bytes: 256 * 1024 * 1024,
            outbound_queue: 1024,
        }
    }
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
            small_doc_idle_evict: Duration::from_secs(2),
            ping_interval: crate::ws::PING_INTERVAL,
            default_phone_region: None,
            auth: None,
            limits: Limits::default(),
            allow_anonymous: false,
            bridges: Vec::new(),
            policies: Vec::new(),
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
    /// A bad `[[bridges]]` entry: names the entry (index and id) and the key.
    #[error("config `[[bridges]]` entry {index}{id}: key `{key}`: {message}")]
    Bridge {
        index: usize,
        /// ` (id "x")` when the entry has a readable id, else empty.
        id: String,
        key: String,
        message: String,
    },
    /// A bad `[[policies]]` entry: names the entry (0-based index) and the key.
    #[error("config `[[policies]]` entry {index}: key `{key}`: {message}")]
    Policy {
        index: usize,
        key: String,
        message: String,
    },
    #[error("config key `{key}`: environment variable {var} {problem}")]
    Env {
        key: &'static str,
        var: String,
        problem: String,
    },
}

/// Values given on the command line; `Some` wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `--allow-anonymous`.
    pub allow_anonymous: bool,
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
    small_doc_idle_evict: Option<toml::Value>,
    default_phone_region: Option<toml::Value>,
    durability: Option<toml::Value>,
    auth: Option<toml::Value>,
    limits: Option<toml::Value>,
    bridges: Option<toml::Value>,
    policies: Option<toml::Value>,
}

impl Config {
    /// `default_phone_region` (validated at load), US when unset.
    pub fn phone_region(&self) -> driftless_crdt_model::identity::PhoneRegion {
        self.default_phone_region
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or_default()
    }

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
        config.allow_anonymous |= overrides.allow_anonymous;
        Ok(config)
    }

    /// Defaults overridden by the TOML text; secrets come from the process environment.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str_env(text, &|name| std::env::var(name).ok())
    }

    /// [`Config::from_toml_str`] with `env` standing in for the process environment.
    pub fn from_toml_str_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })?;
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
        if let Some(v) = file.small_doc_idle_evict {
            let s = expect_str("small_doc_idle_evict", &v)?;
            config.small_doc_idle_evict =
                parse_duration(s).map_err(|message| invalid("small_doc_idle_evict", message))?;
        }
        if let Some(v) = file.default_phone_region {
            let s = expect_str("default_phone_region", &v)?;
            if s.len() != 2
                || !s.bytes().all(|b| b.is_ascii_uppercase())
                || s.parse::<driftless_crdt_model::identity::PhoneRegion>()
                    .is_err()
            {
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
        if let Some(v) = file.auth {
            config.auth = Some(parse_auth(v, env)?);
        }
        if let Some(v) = file.limits {
            config.limits = parse_limits(v)?;
        }
        if let Some(v) = file.bridges {
            config.bridges = parse_bridges(v, env)?;
        }
        // Graph subscriptions call back at `public_url`.
        for graph in config.bridges.iter_mut().filter_map(|b| b.graph.as_mut()) {
            graph.public_url.clone_from(&config.public_url);
        }
        if let Some(v) = file.policies {
            config.policies = parse_policies(v)?;
            validate_policies(&config.policies, &config.bridges)?;
        }
        Ok(config)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    secret_env: Option<toml::Value>,
    previous_secret_env: Option<toml::Value>,
    ticket_ttl: Option<toml::Value>,
}

fn section<T: serde::de::DeserializeOwned>(
    name: &'static str,
    v: toml::Value,
) -> Result<T, ConfigError> {
    v.try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: format!("[{name}]: {e}"),
        })
}

fn read_secret(
    key: &'static str,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    if value.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::Env {
            key,
            var: var.to_owned(),
            problem: format!(
                "holds a secret shorter than {MIN_SECRET_BYTES} bytes; use e.g. `openssl rand -base64 48`"
            ),
        });
    }
    Ok(Some(Secret::new(value.into_bytes())))
}

fn parse_auth(
    v: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AuthConfig, ConfigError> {
    let file: AuthFile = section("auth", v)?;
    let secret_env = match &file.secret_env {
        Some(v) => expect_str("auth.secret_env", v)?.to_owned(),
        None => return Err(invalid("auth.secret_env", "is required in [auth]")),
    };
    let current =
        read_secret("auth.secret_env", &secret_env, env)?.ok_or_else(|| ConfigError::Env {
            key: "auth.secret_env",
            var: secret_env.clone(),
            problem: "is not set".into(),
        })?;
    let previous_secret_env = file
        .previous_secret_env
        .as_ref()
        .map(|v| expect_str("auth.previous_secret_env", v).map(str::to_owned))
        .transpose()?;
    // An unset previous secret is normal (no rotation in progress).
    let previous = match &previous_secret_env {
        Some(var) => read_secret("auth.previous_secret_env", var, env)?,
        None => None,
    };
    let mut ticket_ttl = Duration::from_secs(300);
    if let Some(v) = &file.ticket_ttl {
        let s = expect_str("auth.ticket_ttl", v)?;
        ticket_ttl = parse_duration(s).map_err(|m| invalid("auth.ticket_ttl", m))?;
        if ticket_ttl < Duration::from_secs(10) || ticket_ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "auth.ticket_ttl",
                format!("`{s}` must be between 10s and 1h"),
            ));
        }
    }
    Ok(AuthConfig {
        keys: Keys { current, previous },
        secret_env,
        previous_secret_env,
        ticket_ttl,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_connections_per_workspace: Option<toml::Value>,
    max_connections_per_ip: Option<toml::Value>,
    messages_per_second: Option<toml::Value>,
    message_burst: Option<toml::Value>,
    bytes_per_second: Option<toml::Value>,
    byte_burst: Option<toml::Value>,
    max_document_bytes: Option<toml::Value>,
    outbound_queue: Option<toml::Value>,
}

fn positive(key: &'static str, v: &Option<toml::Value>) -> Result<Option<u64>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let n = v
        .as_integer()
        .ok_or_else(|| invalid(key, "must be a positive integer"))?;
    u64::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| invalid(key, format!("{n} is not a positive integer")))
}

fn parse_limits(v: toml::Value) -> Result<Limits, ConfigError> {
    let f: LimitsFile = section("limits", v)?;
    let mut l = Limits::default();
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let to_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    if let Some(n) = positive(
        "limits.max_connections_per_workspace",
        &f.max_connections_per_workspace,
    )? {
        l.max_connections_per_workspace = to_usize(n);
    }
    if let Some(n) = positive("limits.max_connections_per_ip", &f.max_connections_per_ip)? {
        l.max_connections_per_ip = to_usize(n);
    }
    if let Some(n) = positive("limits.messages_per_second", &f.messages_per_second)? {
        l.messages_per_second = to_u32(n);
    }
    if let Some(n) = positive("limits.message_burst", &f.message_burst)? {
        l.message_burst = to_u32(n);
    }
    if let Some(n) = positive("limits.bytes_per_second", &f.bytes_per_second)? {
        l.bytes_per_second = n;
    }
    if let Some(n) = positive("limits.byte_burst", &f.byte_burst)? {
        l.byte_burst = n;
    }
    if let Some(n) = positive("limits.max_document_bytes", &f.max_document_bytes)? {
        l.max_document_bytes = n;
    }
    if let Some(n) = positive("limits.outbound_queue", &f.outbound_queue)? {
        l.outbound_queue = to_usize(n);
    }
    Ok(l)
}

/// Parses `[[bridges]]`; every error names the entry (0-based index and id) and the key.
fn parse_bridges(
    v: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<BridgeConfig>, ConfigError> {
    let toml::Value::Array(entries) = v else {
        return Err(invalid(
            "bridges",
            "must be an array of tables: write each entry as [[bridges]]",
        ));
    };
    let mut out: Vec<BridgeConfig> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let bridge = parse_bridge(index, entry, env)?;
        if out.iter().any(|b| b.id == bridge.id) {
            return Err(ConfigError::Bridge {
                index,
                id: format!(" (id {:?})", bridge.id),
                key: "id".into(),
                message: "is used by an earlier entry; bridge ids must be unique".into(),
            });
        }
        out.push(bridge);
    }
    Ok(out)
}

fn parse_bridge(
    index: usize,
    entry: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BridgeConfig, ConfigError> {
    let toml::Value::Table(mut table) = entry else {
        return Err(ConfigError::Bridge {
            index,
            id: String::new(),
            key: "bridges".into(),
            message: "each entry must be a table".into(),
        });
    };
    let id_label = match table.get("id") {
        Some(toml::Value::String(s)) => format!(" (id {s:?})"),
        _ => String::new(),
    };
    let err = |key: &str, message: String| ConfigError::Bridge {
        index,
        id: id_label.clone(),
        key: key.to_owned(),
        message,
    };
    let mut string = |key: &str, required: bool| -> Result<Option<String>, ConfigError> {
        match table.remove(key) {
            None if required => Err(err(key, "is required".into())),
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(err(
                key,
                format!("must be a string, not {}", other.type_str()),
            )),
        }
    };
    let id = string("id", true)?.unwrap_or_default();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err("id", format!("`{id}` must match [a-z0-9-]+")));
    }
    let kind_text = string("kind", true)?.unwrap_or_default();
    let mut kind = match kind_text.as_str() {
        "caldav" => BridgeKind::CalDav,
        "carddav" => BridgeKind::CardDav,
        "google_calendar" => BridgeKind::GoogleCalendar,
        "hubspot" => BridgeKind::HubSpot,
        "microsoft_graph" => BridgeKind::MicrosoftGraph,
        "salesforce" => BridgeKind::Salesforce,
        other => {
            return Err(err(
                "kind",
                format!(
                    "`{other}` is not one of caldav, carddav, google_calendar, microsoft_graph, \
                     hubspot, salesforce"
                ),
            ));
        }
    };
    let workspace = string("workspace", false)?
        .unwrap_or_else(|| driftless_client_protocol::engine::DEFAULT_WORKSPACE.to_owned());
    if workspace.is_empty() {
        return Err(err("workspace", "must not be empty".into()));
    }
    let poll_interval = match string("poll_interval", false)? {
        None => Duration::from_secs(30),
        Some(s) => parse_duration(&s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                err(
                    "poll_interval",
                    format!("`{s}` is not a positive duration like \"30s\""),
                )
            })?,
    };
    let mut hubspot = None;
    let mut graph = None;
    let mut salesforce = None;
    let (url, username, password, google) = if kind == BridgeKind::Salesforce {
        salesforce = Some(parse_salesforce(&mut table, env, &err)?);
        (String::new(), None, None, None)
    } else if kind == BridgeKind::MicrosoftGraph {
        let mut required = |key: &str| -> Result<String, ConfigError> {
            let value = string(key, true)?.unwrap_or_default();
            if value.is_empty() {
                return Err(err(key, "must not be empty".into()));
            }
            Ok(value)
        };
        let client_id = required("client_id")?;
        let refresh_token_env = required("refresh_token_env")?;
        let client_secret_env = string("client_secret_env", false)?;
        // What the bridge syncs: calendar events (the default) or contacts.
        match string("resource", false)?.as_deref() {
            None | Some("calendar") => {}
            Some("contacts") => kind = BridgeKind::MicrosoftGraphContacts,
            Some(other) => {
                return Err(err(
                    "resource",
                    format!("`{other}` is not one of calendar, contacts"),
                ));
            }
        }
        let mut endpoint = |key: &str, default: &str| -> Result<String, ConfigError> {
            let value = string(key, false)?.unwrap_or_else(|| default.to_owned());
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(err(
                    key,
                    format!("`{value}` must be an http:// or https:// URL"),
                ));
            }
            Ok(value)
        };
        let token_url = endpoint("token_url", GRAPH_TOKEN_URL)?;
        let api_base = endpoint("api_base", GRAPH_API_BASE)?;
        let mut window = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            match string(key, false)? {
                None => Ok(default),
                Some(s) => parse_duration(&s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        err(
                            key,
                            format!("`{s}` is not a positive duration like \"90d\""),
                        )
                    }),
            }
        };
        let window_past = window("window_past", Duration::from_secs(30 * 86_400))?;
        let window_future = window("window_future", Duration::from_secs(365 * 86_400))?;
        // Only the variable's name is ever shown, never its value.
        let secret = |key: &str, var: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .map(GoogleSecret::new)
                .ok_or_else(|| {
                    err(
                        key,
                        format!("environment variable {var} is not set (or empty)"),
                    )
                })
        };
        let client_secret = match client_secret_env {
            Some(var) if var.is_empty() => {
                return Err(err("client_secret_env", "must not be empty".into()));
            }
            Some(var) => Some(secret("client_secret_env", &var)?),
            None => None,
        };
        graph = Some(GraphBridgeConfig {
            client_id,
            client_secret,
            refresh_token: secret("refresh_token_env", &refresh_token_env)?,
            token_url,
            api_base,
            window_past,
            window_future,
            public_url: None,
        });
        (String::new(), None, None, None)
    } else if kind == BridgeKind::HubSpot {
        // Only a variable's name is ever shown, never its value.
        let secret = |key: &str, var: &str| {
            env(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| HubSpotSecret::new(v.trim()))
                .ok_or_else(|| {
                    err(
                        key,
                        format!("environment variable {var} is not set (or empty)"),
                    )
                })
        };
        let nonempty = |key: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
            match v {
                Some(s) if s.trim().is_empty() => Err(err(key, "must not be empty".into())),
                other => Ok(other),
            }
        };
        let access_token_env = nonempty("access_token_env", string("access_token_env", false)?)?;
        let client_id = nonempty("client_id", string("client_id", false)?)?;
        let client_secret_env = nonempty("client_secret_env", string("client_secret_env", false)?)?;
        let refresh_token_env = nonempty("refresh_token_env", string("refresh_token_env", false)?)?;
        let token_url = string("token_url", false)?;
        let api_base = string("api_base", false)?.unwrap_or_else(|| HUBSPOT_API_BASE.to_owned());
        let id_property = nonempty("id_property", string("id_property", false)?)?;
        let objects = hubspot_objects(table.remove("objects")).map_err(|m| err("objects", m))?;
        for (key, value) in [
            ("api_base", Some(&api_base)),
            ("token_url", token_url.as_ref()),
        ] {
            if let Some(value) = value
                && !(value.starts_with("http://") || value.starts_with("https://"))
            {
                return Err(err(
                    key,
                    format!("`{value}` must be an http:// or https:// URL"),
                ));
            }
        }
        let client_secret = client_secret_env
            .as_deref()
            .map(|var| secret("client_secret_env", var))
            .transpose()?;
        let auth = match (access_token_env, client_id, refresh_token_env) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(err(
                    "access_token_env",
                    "give either access_token_env or the OAuth keys (client_id, \
                     client_secret_env, refresh_token_env), not both"
                        .into(),
                ));
            }
            (Some(var), None, None) => {
                if token_url.is_some() {
                    return Err(err(
                        "token_url",
                        "is only used with OAuth (client_id, refresh_token_env)".into(),
                    ));
                }
                HubSpotAuthConfig::AccessToken(secret("access_token_env", &var)?)
            }
            (None, Some(client_id), Some(refresh_var)) => {
                if client_secret.is_none() {
                    return Err(err(
                        "client_secret_env",
                        "is required with OAuth (client_id, refresh_token_env)".into(),
                    ));
                }
                HubSpotAuthConfig::OAuth {
                    client_id,
                    refresh_token: secret("refresh_token_env", &refresh_var)?,
                    token_url: token_url.unwrap_or_else(|| HUBSPOT_TOKEN_URL.to_owned()),
                }
            }
            (None, Some(_), None) => {
                return Err(err(
                    "refresh_token_env",
                    "is required with client_id (OAuth)".into(),
                ));
            }
            (None, None, Some(_)) => {
                return Err(err(
                    "client_id",
                    "is required with refresh_token_env (OAuth)".into(),
                ));
            }
            (None, None, None) => {
                return Err(err(
                    "access_token_env",
                    "a hubspot bridge needs access_token_env or the OAuth keys (client_id, \
                     client_secret_env, refresh_token_env)"
                        .into(),
                ));
            }
        };
        hubspot = Some(HubSpotBridgeConfig {
            auth,
            client_secret,
            api_base,
            id_property,
            objects,
        });
        (String::new(), None, None, None)
    } else if kind == BridgeKind::GoogleCalendar {
        let mut required = |key: &str| -> Result<String, ConfigError> {
            let value = string(key, true)?.unwrap_or_default();
            if value.is_empty() {
                return Err(err(key, "must not be empty".into()));
            }
            Ok(value)
        };
        let calendar_id = required("calendar_id")?;
        let client_id = required("client_id")?;
        let client_secret_env = required("client_secret_env")?;
        let refresh_token_env = required("refresh_token_env")?;
        let mut endpoint = |key: &str, default: &str| -> Result<String, ConfigError> {
            let value = string(key, false)?.unwrap_or_else(|| default.to_owned());
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(err(
                    key,
                    format!("`{value}` must be an http:// or https:// URL"),
                ));
            }
            Ok(value)
        };
        let token_url = endpoint("token_url", GOOGLE_TOKEN_URL)?;
        let api_base = endpoint("api_base", GOOGLE_API_BASE)?;
        // Only the variable's name is ever shown, never its value.
        let secret = |key: &str, var: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .map(GoogleSecret::new)
                .ok_or_else(|| {
                    err(
                        key,
                        format!("environment variable {var} is not set (or empty)"),
                    )
                })
        };
        let google = GoogleCalendarConfig {
            calendar_id,
            client_id,
            client_secret: secret("client_secret_env", &client_secret_env)?,
            refresh_token: secret("refresh_token_env", &refresh_token_env)?,
            token_url,
            api_base,
        };
        (String::new(), None, None, Some(google))
    } else {
        let url = string("url", true)?.unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                "url",
                format!("`{url}` must be an http:// or https:// collection URL"),
            ));
        }
        let username = string("username", false)?;
        let password = string("password", false)?;
        let password_env = string("password_env", false)?;
        let password = match (password, password_env) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "password_env",
                    "give either password or password_env, not both".into(),
                ));
            }
            (Some(p), None) => Some(p),
            (None, Some(var)) => Some(env(&var).ok_or_else(|| {
                err(
                    "password_env",
                    format!("environment variable {var} is not set"),
                )
            })?),
            (None, None) => None,
        };
        (url, username, password, None)
    };
    let max_delete_fraction = match table.remove("max_delete_fraction") {
        None => 0.2,
        Some(toml::Value::Float(f)) if (0.0..=1.0).contains(&f) => f,
        Some(toml::Value::Integer(i)) if (0..=1).contains(&i) => i as f64,
        Some(other) => {
            return Err(err(
                "max_delete_fraction",
                format!("`{other}` must be a number between 0 and 1"),
            ));
        }
    };
    if let Some(key) = table.keys().next() {
        return Err(err(
            key,
            format!("is not a known key of a {} bridge", kind.as_str()),
        ));
    }
    Ok(BridgeConfig {
        id,
        kind,
        workspace,
        poll_interval,
        max_delete_fraction,
        url,
        username,
        password,
        google,
        hubspot,
        graph,
        salesforce,
    })
}

/// The keys of a `salesforce` entry (removed from `table`; the caller reports what is left as
/// unknown). Errors name the key, and for secrets the variable, never a value.
fn parse_salesforce(
    table: &mut toml::map::Map<String, toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<SalesforceBridgeConfig, ConfigError> {
    let mut string = |key: &str, required: bool| -> Result<Option<String>, ConfigError> {
        match table.remove(key) {
            None if required => Err(err(key, "is required".into())),
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => {
                Err(err(key, "must not be empty".into()))
            }
            Some(toml::Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(err(
                key,
                format!("must be a string, not {}", other.type_str()),
            )),
        }
    };
    let url_key = |key: &str, value: String| -> Result<String, ConfigError> {
        if value.starts_with("http://") || value.starts_with("https://") {
            Ok(value.trim_end_matches('/').to_owned())
        } else {
            Err(err(
                key,
                format!("`{value}` must be an http:// or https:// URL"),
            ))
        }
    };
    let instance_url = url_key(
        "instance_url",
        string("instance_url", true)?.unwrap_or_default(),
    )?;
    let token_url = url_key(
        "token_url",
        string("token_url", false)?.unwrap_or_else(|| SALESFORCE_TOKEN_URL.to_owned()),
    )?;
    let version_text =
        string("api_version", false)?.unwrap_or_else(|| SALESFORCE_API_VERSION.to_owned());
    let api_version = normalize_api_version(&version_text).ok_or_else(|| {
        err(
            "api_version",
            format!("`{version_text}` is not an API version like \"v62.0\""),
        )
    })?;
    let client_id = string("client_id", true)?.unwrap_or_default();
    let refresh_token_env = string("refresh_token_env", true)?.unwrap_or_default();
    let client_secret_env = string("client_secret_env", false)?;
    let object_text = string("object", false)?.unwrap_or_else(|| "Contact".to_owned());
    let object = match SObjectType::from_name(&object_text) {
        Some(object) => object,
        None => {
            return Err(err(
                "object",
                format!("`{object_text}` is not one of Contact, Account, Opportunity"),
            ));
        }
    };
    let id_field = string("id_field", false)?;
    if let Some(f) = &id_field
        && !is_field_name(f)
    {
        return Err(err(
            "id_field",
            format!("`{f}` is not a field API name like \"Driftless_Id__c\""),
        ));
    }
    let request_limit_wait = match string("request_limit_wait", false)? {
        None => Duration::from_secs(15 * 60),
        Some(s) => parse_duration(&s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                err(
                    "request_limit_wait",
                    format!("`{s}` is not a positive duration like \"15m\""),
                )
            })?,
    };
    // Only the variable's name is ever shown, never its value.
    let secret = |key: &str, var: &str| {
        env(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| GoogleSecret::new(v.trim()))
            .ok_or_else(|| {
                err(
                    key,
                    format!("environment variable {var} is not set (or empty)"),
                )
            })
    };
    let client_secret = client_secret_env
        .as_deref()
        .map(|var| secret("client_secret_env", var))
        .transpose()?;
    Ok(SalesforceBridgeConfig {
        instance_url,
        api_version,
        client_id,
        client_secret,
        refresh_token: secret("refresh_token_env", &refresh_token_env)?,
        token_url,
        object,
        id_field,
        request_limit_wait,
    })
}

/// Parses `[[policies]]` (shape only; [`validate_policies`] checks the names).
fn parse_policies(v: toml::Value) -> Result<Vec<Policy>, ConfigError> {
    let toml::Value::Array(entries) = v else {
        return Err(invalid(
            "policies",
            "must be an array of tables: write each entry as [[policies]]",
        ));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let err = |key: &str, message: String| ConfigError::Policy {
            index,
            key: key.to_owned(),
            message,
        };
        let toml::Value::Table(mut table) = entry else {
            return Err(err("policies", "each entry must be a table".into()));
        };
        let mut string = |key: &str| -> Result<String, ConfigError> {
            match table.remove(key) {
                None => Err(err(key, "is required".into())),
                Some(toml::Value::String(s)) => Ok(s),
                Some(other) => Err(err(
                    key,
                    format!("must be a string, not {}", other.type_str()),
                )),
            }
        };
        let record_type = string("record_type")?;
        let field = string("field")?;
        let authority = match string("authority")?.as_str() {
            "latest" => Authority::Latest,
            id => Authority::Bridge(id.to_owned()),
        };
        if let Some(key) = table.keys().next() {
            return Err(err(
                key,
                "is not a known key of a policy (record_type, field, authority)".into(),
            ));
        }
        out.push(Policy {
            record_type,
            field,
            authority,
        });
    }
    Ok(out)
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

/// Parses "500ms", "30s", "5m", "1h", "90d": a whole number and one unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("`{s}` has no unit; write it like \"500ms\", \"30s\", \"5m\" or \"1h\"")
    })?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    // Ten years: longer is a typo, and bounded durations never overflow an instant later.
    const MAX_SECONDS: u64 = 10 * 365 * 86_400;
    let seconds = |mult: u64| {
        n.checked_mul(mult)
            .filter(|secs| *secs <= MAX_SECONDS)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{s}` is too long (at most ten years)"))
    };
    match unit {
        "ms" if n / 1000 <= MAX_SECONDS => Ok(Duration::from_millis(n)),
        "ms" => Err(format!("`{s}` is too long (at most ten years)")),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => Err(format!(
            "`{s}` has unknown unit `{unit}`; use ms, s, m, h or d"
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
            small_doc_idle_evict = "500ms"
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
        assert_eq!(config.small_doc_idle_evict, Duration::from_millis(500));
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

    fn env(name: &str) -> Option<String> {
        match name {
            "S" => Some("s".repeat(40)),
            "OLD" => Some("o".repeat(40)),
            "SHORT" => Some("short".into()),
            _ => None,
        }
    }

    #[test]
    fn auth_section() {
        let c = Config::from_toml_str_env(
            "[auth]\nsecret_env = \"S\"\nprevious_secret_env = \"OLD\"\nticket_ttl = \"2m\"\n",
            &env,
        )
        .unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(auth.keys.current, Secret::new("s".repeat(40)));
        assert_eq!(auth.keys.previous, Some(Secret::new("o".repeat(40))));
        assert_eq!(auth.ticket_ttl, Duration::from_secs(120));
        // No rotation in progress: the previous variable may be unset.
        let c = Config::from_toml_str_env(
            "[auth]\nsecret_env = \"S\"\nprevious_secret_env = \"UNSET\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.auth.unwrap().keys.previous, None);
        assert!(Config::from_toml_str_env("", &env).unwrap().auth.is_none());
        for (text, needle) in [
            ("[auth]\n", "auth.secret_env"),
            ("[auth]\nsecret_env = \"UNSET\"", "UNSET is not set"),
            ("[auth]\nsecret_env = \"SHORT\"", "shorter than 32"),
            (
                "[auth]\nsecret_env = \"S\"\nticket_ttl = \"2d\"",
                "auth.ticket_ttl",
            ),
            (
                "[auth]\nsecret_env = \"S\"\nticket_ttl = \"2h\"",
                "auth.ticket_ttl",
            ),
            ("[auth]\nsecret_env = \"S\"\nsecret = \"x\"", "secret"),
        ] {
            let err = Config::from_toml_str_env(text, &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains(&"s".repeat(40)), "never the secret: {err}");
        }
    }

    #[test]
    fn limits_section() {
        let c = Config::from_toml_str_env(
            "[limits]\nmax_connections_per_workspace = 5\nmax_connections_per_ip = 2\n\
             messages_per_second = 10\nmessage_burst = 20\nbytes_per_second = 1000\n\
             byte_burst = 2000\nmax_document_bytes = 4096\noutbound_queue = 8\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                max_connections_per_workspace: 5,
                max_connections_per_ip: 2,
                messages_per_second: 10,
                message_burst: 20,
                bytes_per_second: 1000,
                byte_burst: 2000,
                max_document_bytes: 4096,
                outbound_queue: 8,
            }
        );
        assert_eq!(
            Config::from_toml_str_env("[limits]\n", &env)
                .unwrap()
                .limits,
            Limits::default()
        );
        for (text, key) in [
            (
                "[limits]\nmax_connections_per_ip = 0",
                "limits.max_connections_per_ip",
            ),
            (
                "[limits]\nmessages_per_second = \"fast\"",
                "limits.messages_per_second",
            ),
            ("[limits]\nmax_doc_bytes = 3", "max_doc_bytes"),
        ] {
            let err = Config::from_toml_str_env(text, &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    const TWO_BRIDGES: &str = r#"
[[bridges]]
id = "team-cal"
kind = "caldav"
url = "http://127.0.0.1:5232/alice/cal/"

[[bridges]]
id = "people"
kind = "carddav"
url = "http://127.0.0.1:5232/alice/book/"
"#;

    #[test]
    fn policies_parse() {
        let text = format!(
            "{TWO_BRIDGES}\n[[policies]]\nrecord_type = \"contact\"\nfield = \"phones\"\n\
             authority = \"people\"\n\n[[policies]]\nrecord_type = \"calendar_event\"\n\
             field = \"deleted\"\nauthority = \"team-cal\"\n\n[[policies]]\n\
             record_type = \"contact\"\nfield = \"name\"\nauthority = \"latest\"\n"
        );
        let config = Config::from_toml_str_env(&text, &|_| None).unwrap();
        assert_eq!(
            config.policies,
            vec![
                Policy {
                    record_type: "contact".into(),
                    field: "phones".into(),
                    authority: Authority::Bridge("people".into()),
                },
                Policy {
                    record_type: "calendar_event".into(),
                    field: "deleted".into(),
                    authority: Authority::Bridge("team-cal".into()),
                },
                Policy {
                    record_type: "contact".into(),
                    field: "name".into(),
                    authority: Authority::Latest,
                },
            ]
        );
        assert!(Config::from_toml_str("").unwrap().policies.is_empty());
    }

    #[test]
    fn bad_policies_name_the_entry_and_key() {
        let ok =
            "[[policies]]\nrecord_type = \"contact\"\nfield = \"phones\"\nauthority = \"people\"\n";
        for (policies, index, key, needle) in [
            (
                "[[policies]]\nrecord_type = \"deal\"\nfield = \"x\"\nauthority = \"latest\"\n".to_owned(),
                0,
                "record_type",
                "deal",
            ),
            (
                format!("{ok}[[policies]]\nrecord_type = \"contact\"\nfield = \"fax\"\nauthority = \"latest\"\n"),
                1,
                "field",
                "fax",
            ),
            (
                "[[policies]]\nrecord_type = \"contact\"\nfield = \"phones\"\nauthority = \"crm\"\n".to_owned(),
                0,
                "authority",
                "crm",
            ),
            (
                "[[policies]]\nrecord_type = \"contact\"\nfield = \"phones\"\nauthority = \"team-cal\"\n".to_owned(),
                0,
                "authority",
                "syncs calendar_event",
            ),
            (
                format!("{ok}[[policies]]\nrecord_type = \"contact\"\nfield = \"phones\"\nauthority = \"latest\"\n"),
                1,
                "field",
                "already has a policy",
            ),
            (
                "[[policies]]\nrecord_type = \"contact\"\nauthority = \"latest\"\n".to_owned(),
                0,
                "field",
                "required",
            ),
            (
                format!("{ok}colour = \"red\"\n"),
                0,
                "colour",
                "not a known key",
            ),
            (
                "[[policies]]\nrecord_type = \"contact\"\nfield = 3\nauthority = \"latest\"\n".to_owned(),
                0,
                "field",
                "must be a string",
            ),
        ] {
            let text = format!("{TWO_BRIDGES}\n{policies}");
            let err = Config::from_toml_str_env(&text, &|_| None).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Policy { index: i, key: k, .. } if *i == index && k == key),
                "{policies}: {msg}"
            );
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains(&format!("entry {index}")), "{msg}");
        }
    }

    #[test]
    fn policy_fields_cover_every_field_of_the_records() {
        // A new top-level field in the record model must be known to [[policies]] too.
        let server_side = ["type", "schema", "links", "deleted_at", "merged_into"];
        let event = driftless_crdt_model::CalendarEvent {
            title: Some("t".into()),
            location: Some("l".into()),
            status: Some("confirmed".into()),
            ical_uid: Some("u".into()),
            description: Some("d".into()),
            start: Some("2026-01-01".into()),
            end: Some("2026-01-02".into()),
            recurrence: Some(Default::default()),
            ..Default::default()
        };
        let contact = driftless_crdt_model::Contact {
            organization: Some("o".into()),
            job_title: Some("j".into()),
            notes: Some("n".into()),
            company: Some("automerge:x".into()),
            ..Default::default()
        };
        for (record_type, json) in [
            ("calendar_event", serde_json::to_value(&event).unwrap()),
            ("contact", serde_json::to_value(&contact).unwrap()),
        ] {
            let fields = policy_fields(record_type).unwrap();
            for key in json.as_object().unwrap().keys() {
                assert!(
                    fields.contains(&key.as_str()) || server_side.contains(&key.as_str()),
                    "{record_type}.{key} is not a policy field"
                );
            }
        }
    }

    #[test]
    fn bridges_parse_with_defaults_and_secrets_from_env() {
        let text = r#"
[[bridges]]
id = "team-cal"
kind = "caldav"
url = "http://127.0.0.1:5232/alice/cal/"
username = "alice"
password_env = "CAL_PW"
poll_interval = "10s"
max_delete_fraction = 0.5

[[bridges]]
id = "people"
kind = "carddav"
workspace = "acme"
url = "http://127.0.0.1:5232/alice/book/"
"#;
        let env = |name: &str| (name == "CAL_PW").then(|| "pw".to_owned());
        let config = Config::from_toml_str_env(text, &env).unwrap();
        let [cal, book] = config.bridges.as_slice() else {
            panic!("{:?}", config.bridges)
        };
        assert_eq!(cal.id, "team-cal");
        assert_eq!(cal.kind, BridgeKind::CalDav);
        assert_eq!(cal.workspace, "default");
        assert_eq!(cal.password.as_deref(), Some("pw"));
        assert_eq!(cal.poll_interval, Duration::from_secs(10));
        assert_eq!(cal.max_delete_fraction, 0.5);
        assert_eq!(book.kind, BridgeKind::CardDav);
        assert_eq!(book.workspace, "acme");
        assert_eq!(book.max_delete_fraction, 0.2);
        assert_eq!(book.poll_interval, Duration::from_secs(30));
    }

    #[test]
    fn bad_bridge_entries_name_the_entry_and_key() {
        let ok = "kind = \"caldav\"\nurl = \"http://h/c/\"\n";
        for (entry, index, key) in [
            (format!("id = \"A b\"\n{ok}"), 0, "id"),
            (
                "kind = \"caldav\"\nurl = \"http://h/c/\"".to_owned(),
                0,
                "id",
            ),
            (
                "id = \"x\"\nkind = \"fax\"\nurl = \"http://h/\"".to_owned(),
                0,
                "kind",
            ),
            (
                "id = \"x\"\nkind = \"salesforce\"\nurl = \"http://h/\"".to_owned(),
                0,
                "instance_url",
            ),
            ("id = \"x\"\nkind = \"caldav\"".to_owned(), 0, "url"),
            (
                format!("id = \"x\"\n{ok}poll_interval = \"soon\""),
                0,
                "poll_interval",
            ),
            (
                format!("id = \"x\"\n{ok}max_delete_fraction = 2.0"),
                0,
                "max_delete_fraction",
            ),
            (
                format!("id = \"x\"\n{ok}password_env = \"NOPE\""),
                0,
                "password_env",
            ),
            (format!("id = \"x\"\n{ok}colour = \"red\""), 0, "colour"),
            (
                format!("id = \"x\"\n{ok}\n[[bridges]]\nid = \"x\"\n{ok}"),
                1,
                "id",
            ),
        ] {
            let text = format!("[[bridges]]\n{entry}\n");
            let err = Config::from_toml_str_env(&text, &|_| None).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Bridge { index: i, key: k, .. } if *i == index && k == key),
                "{text}: {msg}"
            );
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
    }

    #[test]
    fn google_calendar_bridges_read_their_secrets_from_env() {
        let text = r#"
[[bridges]]
id = "gcal"
kind = "google_calendar"
calendar_id = "primary"
client_id = "client-1"
client_secret_env = "G_SECRET"
refresh_token_env = "G_REFRESH"
api_base = "http://127.0.0.1:9/calendar/v3/"
"#;
        let env = |name: &str| match name {
            "G_SECRET" => Some("s3cr3t-value".to_owned()),
            "G_REFRESH" => Some("r3fr3sh-value".to_owned()),
            _ => None,
        };
        let config = Config::from_toml_str_env(text, &env).unwrap();
        let [gcal] = config.bridges.as_slice() else {
            panic!("{:?}", config.bridges)
        };
        assert_eq!(gcal.kind, BridgeKind::GoogleCalendar);
        assert_eq!(bridge_record_type(gcal.kind), "calendar_event");
        let google = gcal.google.as_ref().unwrap();
        assert_eq!(google.calendar_id, "primary");
        assert_eq!(google.client_id, "client-1");
        assert_eq!(google.client_secret.expose(), "s3cr3t-value");
        assert_eq!(google.refresh_token.expose(), "r3fr3sh-value");
        assert_eq!(google.api_base, "http://127.0.0.1:9/calendar/v3/");
        assert_eq!(google.token_url, GOOGLE_TOKEN_URL);
        // Secrets never show in debug output (logs, panics).
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("r3fr3sh"),
            "{shown}"
        );
    }

    #[test]
    fn bad_google_calendar_entries_name_the_entry_and_key() {
        let base = [
            ("calendar_id", "\"primary\""),
            ("client_id", "\"c\""),
            ("client_secret_env", "\"G_SECRET\""),
            ("refresh_token_env", "\"G_REFRESH\""),
        ];
        let entry = |skip: &str, extra: &str| {
            let mut text = "[[bridges]]\nid = \"g\"\nkind = \"google_calendar\"\n".to_owned();
            for (k, v) in base {
                if k != skip {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text.push_str(extra);
            text
        };
        let env = |name: &str| (name == "G_SECRET" || name == "G_REFRESH").then(|| "x".to_owned());
        let cases = [
            (entry("calendar_id", ""), "calendar_id"),
            (entry("client_id", ""), "client_id"),
            (entry("client_secret_env", ""), "client_secret_env"),
            (entry("refresh_token_env", ""), "refresh_token_env"),
            (
                entry("refresh_token_env", "refresh_token_env = \"UNSET\"\n"),
                "refresh_token_env",
            ),
            (entry("", "api_base = \"ftp://x/\"\n"), "api_base"),
            (entry("", "token_url = 7\n"), "token_url"),
            (entry("", "url = \"http://h/\"\n"), "url"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml_str_env(&text, &env).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Bridge { index: 0, key: k, .. } if k == key),
                "{text}: {msg}"
            );
            assert!(msg.contains("`g`") || msg.contains("\"g\""), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
    }

    #[test]
    fn hubspot_bridges_read_their_secrets_from_env() {
        use driftless_bridges::hubspot::webhook::ObjectType;
        let env = |name: &str| match name {
            "HS_TOKEN" => Some("pat-s3cr3t".to_owned()),
            "HS_CLIENT_SECRET" => Some("cl13nt-s3cr3t".to_owned()),
            "HS_REFRESH" => Some("r3fr3sh".to_owned()),
            _ => None,
        };
        let text = r#"
public_url = "https://sync.example.com"
[[bridges]]
id = "crm"
kind = "hubspot"
access_token_env = "HS_TOKEN"
client_secret_env = "HS_CLIENT_SECRET"
id_property = "driftless_id"
"#;
        let config = Config::from_toml_str_env(text, &env).unwrap();
        let [crm] = config.bridges.as_slice() else {
            panic!("{:?}", config.bridges)
        };
        assert_eq!(crm.kind, BridgeKind::HubSpot);
        assert_eq!(bridge_record_type(crm.kind), "contact");
        let hubspot = crm.hubspot.as_ref().unwrap();
        assert_eq!(
            hubspot.auth,
            HubSpotAuthConfig::AccessToken(HubSpotSecret::new("pat-s3cr3t"))
        );
        assert_eq!(
            hubspot.client_secret.as_ref().map(HubSpotSecret::expose),
            Some("cl13nt-s3cr3t")
        );
        assert_eq!(hubspot.api_base, HUBSPOT_API_BASE);
        assert_eq!(hubspot.id_property.as_deref(), Some("driftless_id"));
        assert_eq!(hubspot.objects, vec![ObjectType::Contact]);
        let all = text.replace(
            "id_property",
            "objects = [\"deals\", \"contacts\", \"companies\"]\nid_property",
        );
        let config = Config::from_toml_str_env(&all, &env).unwrap();
        assert_eq!(
            config.bridges[0].hubspot.as_ref().unwrap().objects,
            vec![ObjectType::Company, ObjectType::Contact, ObjectType::Deal]
        );
        for bad in ["[\"tickets\"]", "[]", "[\"deals\", \"deals\"]", "\"deals\""] {
            let text = text.replace("id_property", &format!("objects = {bad}\nid_property"));
            let err = Config::from_toml_str_env(&text, &env).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Bridge { key, .. } if key == "objects"),
                "{bad}: {err}"
            );
        }

        let oauth = r#"
[[bridges]]
id = "crm"
kind = "hubspot"
client_id = "app-1"
client_secret_env = "HS_CLIENT_SECRET"
refresh_token_env = "HS_REFRESH"
api_base = "http://127.0.0.1:9"
"#;
        let config = Config::from_toml_str_env(oauth, &env).unwrap();
        let hubspot = config.bridges[0].hubspot.as_ref().unwrap();
        assert_eq!(
            hubspot.auth,
            HubSpotAuthConfig::OAuth {
                client_id: "app-1".into(),
                refresh_token: HubSpotSecret::new("r3fr3sh"),
                token_url: HUBSPOT_TOKEN_URL.into(),
            }
        );
        assert_eq!(hubspot.api_base, "http://127.0.0.1:9");
        for shown in [
            format!("{config:?}"),
            format!("{:?}", Config::from_toml_str_env(text, &env).unwrap()),
        ] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("r3fr3sh"),
                "{shown}"
            );
        }
    }

    #[test]
    fn bad_hubspot_entries_name_the_entry_and_key() {
        let env = |name: &str| (name == "HS_TOKEN" || name == "HS_SECRET").then(|| "x".to_owned());
        let entry = |keys: &str| format!("[[bridges]]\nid = \"h\"\nkind = \"hubspot\"\n{keys}");
        let cases = [
            (entry(""), "access_token_env"),
            (entry("access_token_env = \"UNSET\"\n"), "access_token_env"),
            (entry("access_token_env = \"\"\n"), "access_token_env"),
            (
                entry("access_token_env = \"HS_TOKEN\"\nclient_id = \"c\"\n"),
                "access_token_env",
            ),
            (
                entry("access_token_env = \"HS_TOKEN\"\nclient_secret_env = \"UNSET\"\n"),
                "client_secret_env",
            ),
            (
                entry("access_token_env = \"HS_TOKEN\"\napi_base = \"api.hubapi.com\"\n"),
                "api_base",
            ),
            (
                entry("access_token_env = \"HS_TOKEN\"\ntoken_url = \"http://t/\"\n"),
                "token_url",
            ),
            (
                entry("client_id = \"c\"\nclient_secret_env = \"HS_SECRET\"\n"),
                "refresh_token_env",
            ),
            (
                entry("client_id = \"c\"\nrefresh_token_env = \"HS_TOKEN\"\n"),
                "client_secret_env",
            ),
            (
                entry("refresh_token_env = \"HS_TOKEN\"\nclient_secret_env = \"HS_SECRET\"\n"),
                "client_id",
            ),
            (
                entry("access_token_env = \"HS_TOKEN\"\nurl = \"http://h/\"\n"),
                "url",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml_str_env(&text, &env).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Bridge { index: 0, key: k, .. } if k == key),
                "{text}: {msg}"
            );
            assert!(msg.contains("`h`") || msg.contains("\"h\""), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
    }

    #[test]
    fn microsoft_graph_bridges_read_their_secrets_from_env() {
        let text = r#"
[[bridges]]
id = "outlook"
kind = "microsoft_graph"
client_id = "client-1"
client_secret_env = "M_SECRET"
refresh_token_env = "M_REFRESH"
api_base = "http://127.0.0.1:9/v1.0"
window_past = "7d"
"#;
        let env = |name: &str| match name {
            "M_SECRET" => Some("s3cr3t-value".to_owned()),
            "M_REFRESH" => Some("r3fr3sh-value".to_owned()),
            _ => None,
        };
        let config = Config::from_toml_str_env(text, &env).unwrap();
        let [bridge] = config.bridges.as_slice() else {
            panic!("{:?}", config.bridges)
        };
        assert_eq!(bridge.kind, BridgeKind::MicrosoftGraph);
        assert_eq!(bridge_record_type(bridge.kind), "calendar_event");
        let graph = bridge.graph.as_ref().unwrap();
        assert_eq!(graph.client_id, "client-1");
        assert_eq!(
            graph.client_secret.as_ref().map(GoogleSecret::expose),
            Some("s3cr3t-value")
        );
        assert_eq!(graph.refresh_token.expose(), "r3fr3sh-value");
        assert_eq!(graph.api_base, "http://127.0.0.1:9/v1.0");
        assert_eq!(graph.token_url, GRAPH_TOKEN_URL);
        assert_eq!(graph.window_past, Duration::from_secs(7 * 86_400));
        assert_eq!(graph.window_future, Duration::from_secs(365 * 86_400));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("r3fr3sh"),
            "{shown}"
        );
    }

    #[test]
    fn microsoft_graph_resource_picks_calendar_or_contacts() {
        let text = |resource: &str| {
            format!(
                "[[bridges]]\nid = \"o\"\nkind = \"microsoft_graph\"\nclient_id = \"c\"\n\
                 refresh_token_env = \"M_REFRESH\"\n{resource}"
            )
        };
        let env = |name: &str| (name == "M_REFRESH").then(|| "r".to_owned());
        let kind = |resource: &str| {
            Config::from_toml_str_env(&text(resource), &env).map(|c| c.bridges[0].kind)
        };
        assert_eq!(kind("").unwrap(), BridgeKind::MicrosoftGraph);
        assert_eq!(
            kind("resource = \"calendar\"\n").unwrap(),
            BridgeKind::MicrosoftGraph
        );
        let contacts = kind("resource = \"contacts\"\n").unwrap();
        assert_eq!(contacts, BridgeKind::MicrosoftGraphContacts);
        assert_eq!(bridge_record_type(contacts), "contact");
        assert_eq!(contacts.as_str(), "microsoft_graph");
        let msg = kind("resource = \"mail\"\n").unwrap_err().to_string();
        assert!(msg.contains("resource") && msg.contains("mail"), "{msg}");
    }

    #[test]
    fn bad_microsoft_graph_entries_name_the_entry_and_key() {
        let base = [
            ("client_id", "\"c\""),
            ("client_secret_env", "\"M_SECRET\""),
            ("refresh_token_env", "\"M_REFRESH\""),
        ];
        let entry = |skip: &str, extra: &str| {
            let mut text = "[[bridges]]\nid = \"g\"\nkind = \"microsoft_graph\"\n".to_owned();
            for (k, v) in base {
                if k != skip {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text.push_str(extra);
            text
        };
        let env = |name: &str| (name == "M_SECRET" || name == "M_REFRESH").then(|| "x".to_owned());
        // A public client needs no secret.
        assert!(Config::from_toml_str_env(&entry("client_secret_env", ""), &env).is_ok());
        let cases = [
            (entry("client_id", ""), "client_id"),
            (entry("refresh_token_env", ""), "refresh_token_env"),
            (
                entry("client_secret_env", "client_secret_env = \"UNSET\"\n"),
                "client_secret_env",
            ),
            (entry("", "api_base = \"ftp://x/\"\n"), "api_base"),
            (entry("", "token_url = 7\n"), "token_url"),
            (entry("", "window_past = \"soon\"\n"), "window_past"),
            (entry("", "window_future = \"0s\"\n"), "window_future"),
            (entry("", "calendar_id = \"primary\"\n"), "calendar_id"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml_str_env(&text, &env).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Bridge { index: 0, key: k, .. } if k == key),
                "{text}: {msg}"
            );
            assert!(msg.contains("`g`") || msg.contains("\"g\""), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(
            parse_duration("3650d").unwrap(),
            Duration::from_secs(3650 * 86_400)
        );
        for bad in [
            "",
            "ms",
            "5",
            "1.5s",
            "5w",
            "-1s",
            "99999999999999999999h",
            "3651d",
            "10000000000000000000s",
            "18446744073709551615ms",
        ] {
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
            allow_anonymous: false,
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

#[cfg(test)]
mod salesforce_config_tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SF_SECRET" => Some("s3cr3t-consumer".to_owned()),
            "SF_REFRESH" => Some("r3fr3sh-token".to_owned()),
            _ => None,
        }
    }

    fn entry(keys: &str) -> String {
        format!("[[bridges]]\nid = \"sf\"\nkind = \"salesforce\"\n{keys}")
    }

    const MINIMAL: &str = "instance_url = \"https://acme.my.salesforce.com/\"\nclient_id = \"3MVG9\"\nrefresh_token_env = \"SF_REFRESH\"\n";

    #[test]
    fn salesforce_bridges_read_their_keys_and_secrets() {
        let config = Config::from_toml_str_env(&entry(MINIMAL), &env).unwrap();
        let [bridge] = config.bridges.as_slice() else {
            panic!("{:?}", config.bridges)
        };
        assert_eq!(bridge.kind, BridgeKind::Salesforce);
        assert_eq!(bridge.kind.as_str(), "salesforce");
        assert_eq!(bridge_record_type(bridge.kind), "contact");
        let sf = bridge.salesforce.as_ref().unwrap();
        assert_eq!(sf.instance_url, "https://acme.my.salesforce.com");
        assert_eq!(sf.api_version, SALESFORCE_API_VERSION);
        assert_eq!(sf.token_url, SALESFORCE_TOKEN_URL);
        assert_eq!(sf.object, SObjectType::Contact);
        assert_eq!(sf.client_secret, None);
        assert_eq!(sf.refresh_token.expose(), "r3fr3sh-token");
        assert_eq!(sf.request_limit_wait, Duration::from_secs(900));

        let full = entry(&format!(
            "{MINIMAL}client_secret_env = \"SF_SECRET\"\napi_version = \"61.0\"\nobject = \"Contact\"\n\
             id_field = \"Driftless_Id__c\"\ntoken_url = \"https://test.salesforce.com/services/oauth2/token\"\n\
             request_limit_wait = \"30m\"\n"
        ));
        let config = Config::from_toml_str_env(&full, &env).unwrap();
        let sf = config.bridges[0].salesforce.as_ref().unwrap();
        assert_eq!(sf.api_version, "v61.0");
        assert_eq!(sf.id_field.as_deref(), Some("Driftless_Id__c"));
        assert_eq!(
            sf.client_secret.as_ref().map(GoogleSecret::expose),
            Some("s3cr3t-consumer")
        );
        assert_eq!(sf.request_limit_wait, Duration::from_secs(1800));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("r3fr3sh"),
            "{shown}"
        );
    }

    #[test]
    fn bad_salesforce_entries_name_the_entry_and_key() {
        let cases = [
            (
                entry("client_id = \"c\"\nrefresh_token_env = \"SF_REFRESH\"\n"),
                "instance_url",
            ),
            (
                entry(
                    "instance_url = \"acme.my.salesforce.com\"\nclient_id = \"c\"\nrefresh_token_env = \"SF_REFRESH\"\n",
                ),
                "instance_url",
            ),
            (
                entry("instance_url = \"https://x\"\nrefresh_token_env = \"SF_REFRESH\"\n"),
                "client_id",
            ),
            (
                entry("instance_url = \"https://x\"\nclient_id = \"c\"\n"),
                "refresh_token_env",
            ),
            (
                entry(
                    "instance_url = \"https://x\"\nclient_id = \"c\"\nrefresh_token_env = \"UNSET\"\n",
                ),
                "refresh_token_env",
            ),
            (
                entry(&format!("{MINIMAL}client_secret_env = \"UNSET\"\n")),
                "client_secret_env",
            ),
            (
                entry(&format!("{MINIMAL}api_version = \"latest\"\n")),
                "api_version",
            ),
            (entry(&format!("{MINIMAL}object = \"Lead\"\n")), "object"),
            (
                entry(&format!("{MINIMAL}id_field = \"Id, Name\"\n")),
                "id_field",
            ),
            (
                entry(&format!("{MINIMAL}request_limit_wait = \"soon\"\n")),
                "request_limit_wait",
            ),
            (
                entry(&format!("{MINIMAL}token_url = \"login.salesforce.com\"\n")),
                "token_url",
            ),
            (
                entry(&format!("{MINIMAL}api_base = \"https://x\"\n")),
                "api_base",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml_str_env(&text, &env).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Bridge { index: 0, key: k, .. } if k == key),
                "{text}: {msg}"
            );
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
            assert!(!msg.contains("r3fr3sh"), "{msg}");
        }
        let account =
            Config::from_toml_str_env(&entry(&format!("{MINIMAL}object = \"Account\"\n")), &env)
                .unwrap();
        let sf = account.bridges[0].salesforce.as_ref().unwrap();
        assert_eq!(sf.object, SObjectType::Account);
        let bad = Config::from_toml_str_env(&entry(&format!("{MINIMAL}object = \"Lead\"\n")), &env)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`object`") && bad.contains("Lead"), "{bad}");
    }
}
