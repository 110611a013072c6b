//! Service definitions: one TOML file per service, `<dir>/<name>.toml`, validated into
//! [`Service`].
//!
//! Parsing is two steps. Serde reads the file into raw structs that reject unknown fields and
//! wrong types; then every value is checked and converted into the validated types, collecting
//! every problem rather than stopping at the first. Each [`ConfigError`] names the file, the
//! dotted field (`restart.delay`), the line and column of the offending value and the reason,
//! so an operator can fix a whole directory in one pass. [`load_dir`] then checks the
//! dependency graph across files ([`validate_graph`]).
//!
//! Everything here is pure apart from [`load_dir`] reading the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::duration::{parse_bytes, parse_duration};
use crate::users::Users;

/// Where an installed image keeps its service definitions.
pub const DEFAULT_DIR: &str = "/etc/shoal/services";

/// A service's name: the file stem of its definition. `[a-z0-9][a-z0-9._-]{0,63}`, so it is
/// safe as a cgroup directory name, a log file name and a D-Bus object path component (after
/// escaping `.` and `-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

/// A string that is not a valid [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid service name (1 to 64 of a-z, 0-9, '.', '_', '-', starting with a \
     letter or digit)"
)]
pub struct InvalidServiceName(pub String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = InvalidServiceName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = text.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if first_ok && rest_ok && text.len() <= 64 {
            Ok(ServiceName(text.to_owned()))
        } else {
            Err(InvalidServiceName(text.to_owned()))
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What kind of process a service is, which decides when it counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// A long-running process, ready once started (or once its `[ready] tcp_port` accepts).
    Simple,
    /// A long-running process that reports `READY=1` on the notify socket.
    Notify,
    /// A process that runs to completion; ready when it exits 0.
    Oneshot,
    /// No process: a named point (`network-online`) that is ready when everything it requires is.
    Target,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Simple => "simple",
            ServiceType::Notify => "notify",
            ServiceType::Oneshot => "oneshot",
            ServiceType::Target => "target",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a service that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartWhen {
    Always,
    OnFailure,
    Never,
}

impl RestartWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartWhen::Always => "always",
            RestartWhen::OnFailure => "on-failure",
            RestartWhen::Never => "never",
        }
    }
}

impl fmt::Display for RestartWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Restarts with exponential backoff and a crash-loop limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    pub when: RestartWhen,
    /// Delay before the first restart; each further restart doubles it, up to `max_delay`.
    pub delay: Duration,
    pub max_delay: Duration,
    /// More restarts than this within `window` mark the service failed.
    pub max_restarts: u32,
    pub window: Duration,
}

/// When a started service counts as ready, derived from its type and `[ready]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// As soon as the process is running (simple).
    Started,
    /// When it sends `READY=1` on the notify socket (notify).
    Notify,
    /// When `127.0.0.1:port` accepts a connection (simple with `[ready] tcp_port`).
    TcpPort(u16),
    /// When it exits with status 0 (oneshot).
    ExitSuccess,
    /// When everything it requires is ready (target).
    Dependencies,
}

/// How a health check probes a running service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// Run this command (absolute path first); exit status 0 is healthy.
    Exec(Vec<String>),
    /// `127.0.0.1:port` accepts a connection.
    Tcp(u16),
    /// `GET path` on `host:port` answers 2xx.
    Http {
        host: IpAddr,
        port: u16,
        /// Starts with `/`; may carry a query. Visible ASCII only, so it is safe on a request line.
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// This many failed probes in a row make the service unhealthy (it is restarted).
    pub failure_threshold: u32,
    /// Failures during this long after start do not count.
    pub start_period: Duration,
}

/// `cpu.max`: at most `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuMax {
    pub quota_us: u64,
    pub period_us: u64,
}

/// cgroup v2 limits for a service's leaf cgroup. `None` means no limit (`max`) or the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_max: Option<CpuMax>,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub pids_max: Option<u64>,
    pub io_weight: Option<u16>,
}

/// A user or group as written, before [`Users::resolve`] turns it into an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    Name(String),
    Id(u32),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Name(name) => f.write_str(name),
            Account::Id(id) => write!(f, "{id}"),
        }
    }
}

/// A validated service definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: ServiceName,
    /// Empty when the definition has none.
    pub description: String,
    pub kind: ServiceType,
    /// Program (absolute path) and arguments; empty for a target.
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: PathBuf,
    pub user: Account,
    pub group: Option<Account>,
    pub supplementary_groups: Vec<Account>,
    /// The capabilities kept; every other one is dropped. `caps::CapsHashSet` (a `HashSet`)
    /// because `caps::Capability` has no ordering and `caps::set` takes this type.
    pub capabilities: caps::CapsHashSet,
    pub after: Vec<ServiceName>,
    pub requires: Vec<ServiceName>,
    pub stop_signal: Signal,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub restart: RestartPolicy,
    pub readiness: Readiness,
    pub health: Option<HealthCheck>,
    pub resources: Resources,
    pub log_ring_bytes: usize,
}

impl Service {
    /// Everything this service waits for: `after` and `requires`, each name once, in order.
    pub fn dependencies(&self) -> impl Iterator<Item = &ServiceName> {
        let mut seen = BTreeSet::new();
        self.after
            .iter()
            .chain(&self.requires)
            .filter(move |name| seen.insert(*name))
    }
}

/// One problem in a service definition.
///
/// Displayed as `FILE[:LINE:COLUMN]: [field FIELD: ]REASON`, for example
/// `/etc/shoal/services/netd.toml:3:9: field restart.delay: "5 parsecs" is not a duration (use
/// 100ms, 5s, 2m, 1h)`. Line and column are 1-based (the column counts characters).
// Not derived with thiserror: it would take the `source` field for the error's cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: PathBuf,
    /// Dotted path of the field, like `restart.delay`; `None` for the file as a whole.
    pub field: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "field {field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn whole_file(source: &Path, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            source: source.to_owned(),
            field: None,
            line: None,
            column: None,
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Defaults and limits

const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RESTARTS: u32 = 5;
const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
const DEFAULT_LOG_RING_BYTES: usize = 256 * 1024;
const MIN_LOG_RING_BYTES: u64 = 4 * 1024;
const MAX_LOG_RING_BYTES: u64 = 64 * 1024 * 1024;
/// The cgroup default period; quotas are expressed against it.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas below 1 ms.
const MIN_CPU_QUOTA_US: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Raw serde structs: the file's shape, nothing checked beyond types and known field names.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<ServiceType>,
    command: Option<Vec<String>>,
    environment: Option<BTreeMap<String, String>>,
    working_directory: Option<String>,
    user: Option<toml::Value>,
    group: Option<toml::Value>,
    supplementary_groups: Option<Vec<toml::Value>>,
    capabilities: Option<Vec<String>>,
    after: Option<Vec<String>>,
    requires: Option<Vec<String>>,
    stop_signal: Option<String>,
    start_timeout: Option<toml::Value>,
    stop_timeout: Option<toml::Value>,
    restart: Option<RawRestart>,
    ready: Option<RawReady>,
    health: Option<RawHealth>,
    resources: Option<RawResources>,
    logs: Option<RawLogs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RestartWhen>,
    delay: Option<toml::Value>,
    max_delay: Option<toml::Value>,
    max_restarts: Option<i64>,
    window: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    tcp_port: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    check: RawProbe,
    interval: Option<toml::Value>,
    timeout: Option<toml::Value>,
    failure_threshold: Option<i64>,
    start_period: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawProbe {
    Exec(Vec<String>),
    Tcp(i64),
    Http(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpu_max: Option<toml::Value>,
    memory_max: Option<toml::Value>,
    memory_high: Option<toml::Value>,
    pids_max: Option<toml::Value>,
    io_weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    ring_bytes: Option<toml::Value>,
}

// ---------------------------------------------------------------------------------------------
// Parsing one file

/// Parses and validates one definition; `name` is the file stem, `source` the file (for errors).
/// Returns the first problem; [`parse_service_all`] returns all of them.
pub fn parse_service(name: &str, source: &Path, text: &str) -> Result<Service, ConfigError> {
    parse_service_all(name, source, text).map_err(|mut errors| errors.swap_remove(0))
}

/// Like [`parse_service`], but reports every problem the file has (at least one on `Err`).
/// A TOML syntax error, unknown field or wrong type stops the check at that point; problems
/// with values are all collected.
pub fn parse_service_all(
    name: &str,
    source: &Path,
    text: &str,
) -> Result<Service, Vec<ConfigError>> {
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => return Err(vec![toml_error(source, text, None, &error)]),
    };
    let raw: RawService = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => return Err(vec![toml_error(source, text, Some(&document), &error)]),
    };
    let mut checker = Checker {
        source,
        text,
        document: Some(document.get_ref()),
        errors: Vec::new(),
    };
    let name = match name.parse::<ServiceName>() {
        Ok(name) => Some(name),
        Err(error) => {
            checker.errors.push(ConfigError::whole_file(
                source,
                format!("the file name gives the service name: {error}"),
            ));
            None
        }
    };
    let service = checker.service(name, raw);
    match service {
        Some(service) if checker.errors.is_empty() => Ok(service),
        _ => Err(checker.errors),
    }
}

/// A TOML syntax error or a serde error (unknown field, wrong type), placed in the file.
fn toml_error(
    source: &Path,
    text: &str,
    document: Option<&toml::Spanned<DeTable<'_>>>,
    error: &toml::de::Error,
) -> ConfigError {
    let span = error.span();
    let (line, column) = match &span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let field = match (document, span) {
        (Some(document), Some(span)) => field_at(document.get_ref(), span.start),
        _ => None,
    };
    ConfigError {
        source: source.to_owned(),
        field,
        line,
        column,
        // Serde names Rust types; an operator writes TOML.
        reason: error
            .message()
            .trim_end()
            .replace("expected i64", "expected an integer"),
    }
}

/// 1-based line and character column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted path of the key or value at a byte offset: the innermost one whose key or value
/// span contains it.
fn field_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    fn search(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            if key.span().contains(&offset) {
                return Some(path);
            }
            let inner = match value.get_ref() {
                DeValue::Table(inner) => search(inner, offset, &path),
                DeValue::Array(items) => items.iter().find_map(|item| match item.get_ref() {
                    DeValue::Table(inner) => search(inner, offset, &path),
                    _ => None,
                }),
                _ => None,
            };
            if inner.is_some() {
                return inner;
            }
            if value.span().contains(&offset) {
                return Some(path);
            }
        }
        None
    }
    search(table, offset, "")
}

/// The span of the value at a dotted path, or of one element of it when it is an array.
fn span_of(table: &DeTable<'_>, field: &str, index: Option<usize>) -> Option<Range<usize>> {
    let mut segments = field.split('.');
    let first = segments.next()?;
    let mut value = table
        .iter()
        .find(|(key, _)| key.get_ref() == first)
        .map(|(_, value)| value)?;
    for segment in segments {
        let DeValue::Table(inner) = value.get_ref() else {
            return None;
        };
        value = inner
            .iter()
            .find(|(key, _)| key.get_ref() == segment)
            .map(|(_, value)| value)?;
    }
    match (index, value.get_ref()) {
        (Some(index), DeValue::Array(items)) => items.get(index).map(|item| item.span()),
        _ => Some(value.span()),
    }
}

/// Converts raw values to validated ones, collecting every problem.
struct Checker<'a> {
    source: &'a Path,
    text: &'a str,
    document: Option<&'a DeTable<'a>>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, field: &str, reason: impl Into<String>) {
        self.error_at(field, None, reason);
    }

    /// An error about `field`, or about its `index`th element.
    fn error_at(&mut self, field: &str, index: Option<usize>, reason: impl Into<String>) {
        let position = self
            .document
            .and_then(|document| span_of(document, field, index))
            .map(|span| line_column(self.text, span.start));
        self.errors.push(ConfigError {
            source: self.source.to_owned(),
            field: Some(field.to_owned()),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            reason: reason.into(),
        });
    }

    /// Records an error and gives `None`, or passes the value on.
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.error(field, reason)).ok()
    }

    fn service(&mut self, name: Option<ServiceName>, raw: RawService) -> Option<Service> {
        let kind = raw.kind.unwrap_or(ServiceType::Simple);
        let is_target = kind == ServiceType::Target;
        if is_target {
            self.reject_in_target(&raw);
        }

        let command = match (raw.command, is_target) {
            (Some(_), true) => Vec::new(), // reported by reject_in_target
            (None, true) => Vec::new(),
            (None, false) => {
                self.errors.push(ConfigError::whole_file(
                    self.source,
                    format!("a {kind} service needs a command (field command is missing)"),
                ));
                Vec::new()
            }
            (Some(command), false) => {
                self.command("command", &command);
                command
            }
        };

        let environment = raw.environment.unwrap_or_default();
        for (key, value) in &environment {
            if key.is_empty() || key.contains(['=', '\0']) {
                self.error(
                    "environment",
                    format!(
                        "variable name {key:?} is invalid (it must be non-empty, without '=' or \
                         NUL)"
                    ),
                );
            }
            if value.contains('\0') {
                self.error(
                    "environment",
                    format!("the value of {key} contains a NUL character"),
                );
            }
        }

        let working_directory = match raw.working_directory {
            None => PathBuf::from("/"),
            Some(dir) => {
                if !dir.starts_with('/') {
                    self.error(
                        "working_directory",
                        format!("{dir:?} is not an absolute path"),
                    );
                } else if dir.contains('\0') {
                    self.error("working_directory", "the path contains a NUL character");
                }
                PathBuf::from(dir)
            }
        };

        let user = match &raw.user {
            None => Account::Name("root".to_owned()),
            Some(value) => self.account("user", None, value).unwrap_or(Account::Id(0)),
        };
        let group = raw
            .group
            .as_ref()
            .and_then(|value| self.account("group", None, value));
        let supplementary_groups = raw
            .supplementary_groups
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(index, value)| self.account("supplementary_groups", Some(index), value))
            .collect();

        let mut capabilities = caps::CapsHashSet::new();
        for (index, text) in raw.capabilities.unwrap_or_default().iter().enumerate() {
            match caps::Capability::from_str(&caps::to_canonical(text)) {
                Ok(capability) => {
                    capabilities.insert(capability);
                }
                Err(_) => self.error_at(
                    "capabilities",
                    Some(index),
                    format!("unknown capability {text:?} (see capabilities(7))"),
                ),
            }
        }

        let after = self.names("after", raw.after.unwrap_or_default());
        let requires = self.names("requires", raw.requires.unwrap_or_default());

        let stop_signal = match raw.stop_signal {
            None => Signal::SIGTERM,
            Some(text) => self
                .check("stop_signal", parse_signal(&text))
                .unwrap_or(Signal::SIGTERM),
        };
        let start_timeout = self.positive_duration(
            "start_timeout",
            raw.start_timeout.as_ref(),
            DEFAULT_START_TIMEOUT,
        );
        let stop_timeout = self.positive_duration(
            "stop_timeout",
            raw.stop_timeout.as_ref(),
            DEFAULT_STOP_TIMEOUT,
        );

        let restart = self.restart(kind, raw.restart);
        let readiness = self.readiness(kind, raw.ready);
        let health = raw.health.and_then(|health| self.health(kind, health));
        let resources = raw
            .resources
            .map(|resources| self.resources(resources))
            .unwrap_or_default();
        let log_ring_bytes = raw
            .logs
            .and_then(|logs| logs.ring_bytes)
            .and_then(|value| self.ring_bytes(&value))
            .unwrap_or(DEFAULT_LOG_RING_BYTES);

        Some(Service {
            name: name?,
            description: raw.description.unwrap_or_default(),
            kind,
            command,
            environment,
            working_directory,
            user,
            group,
            supplementary_groups,
            capabilities,
            after,
            requires,
            stop_signal,
            start_timeout,
            stop_timeout,
            restart,
            readiness,
            health,
            resources,
            log_ring_bytes,
        })
    }

    /// A target has no process, so everything that describes one is a mistake.
    fn reject_in_target(&mut self, raw: &RawService) {
        let process_fields = [
            ("command", raw.command.is_some()),
            ("environment", raw.environment.is_some()),
            ("working_directory", raw.working_directory.is_some()),
            ("user", raw.user.is_some()),
            ("group", raw.group.is_some()),
            ("supplementary_groups", raw.supplementary_groups.is_some()),
            ("capabilities", raw.capabilities.is_some()),
            ("stop_signal", raw.stop_signal.is_some()),
            ("stop_timeout", raw.stop_timeout.is_some()),
            ("restart", raw.restart.is_some()),
            ("ready", raw.ready.is_some()),
            ("health", raw.health.is_some()),
            ("resources", raw.resources.is_some()),
            ("logs", raw.logs.is_some()),
        ];
        for (field, present) in process_fields {
            if present {
                self.error(
                    field,
                    "a target has no process, so it cannot have this field (remove it, or use \
                     another type)",
                );
            }
        }
    }

    /// A command line: non-empty, absolute program path, no NUL anywhere.
    fn command(&mut self, field: &str, command: &[String]) {
        let Some(program) = command.first() else {
            self.error(
                field,
                "must not be empty (the first element is the program)",
            );
            return;
        };
        if !program.starts_with('/') || program.ends_with('/') {
            self.error_at(
                field,
                Some(0),
                format!("the program {program:?} must be an absolute path to a file"),
            );
        }
        for (index, argument) in command.iter().enumerate() {
            if argument.contains('\0') {
                self.error_at(field, Some(index), "contains a NUL character");
            }
        }
    }

    fn account(
        &mut self,
        field: &str,
        index: Option<usize>,
        value: &toml::Value,
    ) -> Option<Account> {
        let result = match value {
            toml::Value::Integer(id) => account_id(*id),
            toml::Value::String(text)
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                text.parse::<i64>()
                    .map_err(|_| format!("{text} is too large an id"))
                    .and_then(account_id)
            }
            toml::Value::String(name) if valid_account_name(name) => {
                Ok(Account::Name(name.clone()))
            }
            toml::Value::String(name) => Err(format!(
                "{name:?} is not a valid user or group name (letters, digits, '_', '-', '.', \
                 at most 32, not starting with '-')"
            )),
            other => Err(format!(
                "expected a name or a number, found {} {other}",
                other.type_str()
            )),
        };
        result
            .map_err(|reason| self.error_at(field, index, reason))
            .ok()
    }

    fn names(&mut self, field: &str, texts: Vec<String>) -> Vec<ServiceName> {
        let mut names: Vec<ServiceName> = Vec::with_capacity(texts.len());
        for (index, text) in texts.into_iter().enumerate() {
            match text.parse::<ServiceName>() {
                Ok(name) if names.contains(&name) => {
                    self.error_at(field, Some(index), format!("{name} is listed twice"));
                }
                Ok(name) => names.push(name),
                Err(error) => self.error_at(field, Some(index), error.to_string()),
            }
        }
        names
    }

    fn duration(
        &mut self,
        field: &str,
        value: Option<&toml::Value>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        let result = match value {
            toml::Value::String(text) => parse_duration(text),
            other => Err(format!(
                "expected a duration string like \"5s\", found {} {other}",
                other.type_str()
            )),
        };
        self.check(field, result).unwrap_or(default)
    }

    fn positive_duration(
        &mut self,
        field: &str,
        value: Option<&toml::Value>,
        default: Duration,
    ) -> Duration {
        let duration = self.duration(field, value, default);
        if duration.is_zero() {
            self.error(field, "must be greater than 0");
            return default;
        }
        duration
    }

    fn restart(&mut self, kind: ServiceType, raw: Option<RawRestart>) -> RestartPolicy {
        let default_when = match kind {
            ServiceType::Oneshot | ServiceType::Target => RestartWhen::Never,
            ServiceType::Simple | ServiceType::Notify => RestartWhen::OnFailure,
        };
        let Some(raw) = raw else {
            return RestartPolicy {
                when: default_when,
                delay: DEFAULT_RESTART_DELAY,
                max_delay: DEFAULT_RESTART_MAX_DELAY,
                max_restarts: DEFAULT_MAX_RESTARTS,
                window: DEFAULT_RESTART_WINDOW,
            };
        };
        let when = raw.policy.unwrap_or(default_when);
        if kind == ServiceType::Oneshot && when == RestartWhen::Always {
            self.error(
                "restart.policy",
                "a oneshot service cannot restart always (it would run again after succeeding); \
                 use on-failure or never",
            );
        }
        let delay =
            self.positive_duration("restart.delay", raw.delay.as_ref(), DEFAULT_RESTART_DELAY);
        let max_delay = self.positive_duration(
            "restart.max_delay",
            raw.max_delay.as_ref(),
            DEFAULT_RESTART_MAX_DELAY,
        );
        if delay > max_delay {
            self.error(
                "restart.delay",
                format!(
                    "{delay:?} is longer than restart.max_delay ({max_delay:?}); the delay \
                     doubles up to max_delay"
                ),
            );
        }
        let max_restarts = match raw.max_restarts {
            None => DEFAULT_MAX_RESTARTS,
            Some(count) => self
                .check("restart.max_restarts", in_range(count, 0, u32::MAX.into()))
                .map_or(DEFAULT_MAX_RESTARTS, |count| count as u32),
        };
        let window = self.positive_duration(
            "restart.window",
            raw.window.as_ref(),
            DEFAULT_RESTART_WINDOW,
        );
        RestartPolicy {
            when,
            delay,
            max_delay,
            max_restarts,
            window,
        }
    }

    fn readiness(&mut self, kind: ServiceType, ready: Option<RawReady>) -> Readiness {
        let tcp_port = ready.and_then(|ready| ready.tcp_port);
        match (kind, tcp_port) {
            (ServiceType::Simple, None) => Readiness::Started,
            (ServiceType::Simple, Some(port)) => self
                .check("ready.tcp_port", port_number(port))
                .map_or(Readiness::Started, Readiness::TcpPort),
            (ServiceType::Notify, Some(_)) | (ServiceType::Oneshot, Some(_)) => {
                self.error(
                    "ready.tcp_port",
                    format!(
                        "only a simple service can be ready by TCP port (a {kind} service is \
                         ready {})",
                        if kind == ServiceType::Notify {
                            "when it sends READY=1"
                        } else {
                            "when it exits 0"
                        }
                    ),
                );
                Readiness::Started
            }
            (ServiceType::Notify, None) => Readiness::Notify,
            (ServiceType::Oneshot, None) => Readiness::ExitSuccess,
            (ServiceType::Target, _) => Readiness::Dependencies,
        }
    }

    fn health(&mut self, kind: ServiceType, raw: RawHealth) -> Option<HealthCheck> {
        if kind == ServiceType::Oneshot {
            self.error(
                "health",
                "a oneshot service runs to completion, so it has no health to check",
            );
        }
        let probe = match raw.check {
            RawProbe::Exec(command) => {
                self.command("health.check.exec", &command);
                Some(Probe::Exec(command))
            }
            RawProbe::Tcp(port) => self
                .check("health.check.tcp", port_number(port))
                .map(Probe::Tcp),
            RawProbe::Http(url) => self
                .check("health.check.http", parse_http_url(&url))
                .map(|(host, port, path)| Probe::Http { host, port, path }),
        };
        let interval = self.positive_duration(
            "health.interval",
            raw.interval.as_ref(),
            DEFAULT_HEALTH_INTERVAL,
        );
        let timeout = self.positive_duration(
            "health.timeout",
            raw.timeout.as_ref(),
            DEFAULT_HEALTH_TIMEOUT,
        );
        let failure_threshold = match raw.failure_threshold {
            None => DEFAULT_FAILURE_THRESHOLD,
            Some(count) => self
                .check(
                    "health.failure_threshold",
                    in_range(count, 1, u32::MAX.into()),
                )
                .map_or(DEFAULT_FAILURE_THRESHOLD, |count| count as u32),
        };
        let start_period = self.duration(
            "health.start_period",
            raw.start_period.as_ref(),
            Duration::ZERO,
        );
        Some(HealthCheck {
            probe: probe?,
            interval,
            timeout,
            failure_threshold,
            start_period,
        })
    }

    fn resources(&mut self, raw: RawResources) -> Resources {
        let cpu_max = raw.cpu_max.and_then(|value| {
            let result = match &value {
                toml::Value::String(text) => parse_cpu_max(text),
                other => Err(format!(
                    "expected a percentage of one CPU like \"50%\" or \"max\", found {} {other}",
                    other.type_str()
                )),
            };
            self.check("resources.cpu_max", result).flatten()
        });
        let memory_max = raw
            .memory_max
            .and_then(|value| self.memory("resources.memory_max", &value));
        let memory_high = raw
            .memory_high
            .and_then(|value| self.memory("resources.memory_high", &value));
        if let (Some(high), Some(max)) = (memory_high, memory_max)
            && high > max
        {
            self.error(
                "resources.memory_high",
                format!(
                    "{high} bytes is more than resources.memory_max ({max} bytes); throttling must \
                     start before the limit"
                ),
            );
        }
        let pids_max = raw.pids_max.and_then(|value| {
            let result = match &value {
                toml::Value::String(text) if text == "max" => Ok(None),
                toml::Value::Integer(count) => {
                    in_range(*count, 1, i64::MAX).map(|count| Some(count as u64))
                }
                other => Err(format!(
                    "expected a number of processes or \"max\", found {} {other}",
                    other.type_str()
                )),
            };
            self.check("resources.pids_max", result).flatten()
        });
        let io_weight = raw.io_weight.and_then(|weight| {
            self.check("resources.io_weight", in_range(weight, 1, 10_000))
                .map(|weight| weight as u16)
        });
        Resources {
            cpu_max,
            memory_max,
            memory_high,
            pids_max,
            io_weight,
        }
    }

    /// A memory limit: a size or `"max"` (no limit, `None`).
    fn memory(&mut self, field: &str, value: &toml::Value) -> Option<u64> {
        let result = match value {
            toml::Value::String(text) if text == "max" => Ok(None),
            toml::Value::String(text) => parse_bytes(text).map(Some),
            toml::Value::Integer(bytes) => {
                in_range(*bytes, 0, i64::MAX).map(|bytes| Some(bytes as u64))
            }
            other => Err(format!(
                "expected a size like \"64M\" or \"max\", found {} {other}",
                other.type_str()
            )),
        };
        match self.check(field, result)? {
            Some(0) => {
                self.error(field, "must be greater than 0 (use \"max\" for no limit)");
                None
            }
            bytes => bytes,
        }
    }

    fn ring_bytes(&mut self, value: &toml::Value) -> Option<usize> {
        let field = "logs.ring_bytes";
        let result = match value {
            toml::Value::String(text) => parse_bytes(text),
            toml::Value::Integer(bytes) => in_range(*bytes, 0, i64::MAX).map(|bytes| bytes as u64),
            other => Err(format!(
                "expected a size like \"256K\", found {} {other}",
                other.type_str()
            )),
        };
        let bytes = self.check(field, result)?;
        if !(MIN_LOG_RING_BYTES..=MAX_LOG_RING_BYTES).contains(&bytes) {
            self.error(field, format!("{bytes} bytes is outside 4K..=64M"));
            return None;
        }
        usize::try_from(bytes).ok()
    }
}

fn in_range(value: i64, min: i64, max: i64) -> Result<i64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is outside {min}..={max}"))
    }
}

fn port_number(port: i64) -> Result<u16, String> {
    in_range(port, 1, 65_535)
        .map(|port| port as u16)
        .map_err(|_| format!("{port} is not a TCP port (1..=65535)"))
}

fn account_id(id: i64) -> Result<Account, String> {
    // u32::MAX is (uid_t) -1, "leave unchanged" to setuid and friends.
    in_range(id, 0, i64::from(u32::MAX) - 1)
        .map(|id| Account::Id(id as u32))
        .map_err(|_| format!("{id} is not a valid id (0..=4294967294)"))
}

/// Names as useradd accepts them, conservatively: `[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}`, not all
/// digits (a number is an id).
fn valid_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'));
    first_ok
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.len() <= 32
}

/// A signal by name: `SIGTERM`, `TERM`, `term`.
fn parse_signal(text: &str) -> Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| {
        format!("{text:?} is not a signal name (like SIGTERM, INT, HUP, QUIT, USR1, USR2, KILL)")
    })
}

/// `"50%"` (of one CPU) as a quota per 100 ms period, `"max"` as no limit. Up to three decimals
/// (`"2.5%"`), since the kernel counts quota in microseconds.
fn parse_cpu_max(text: &str) -> Result<Option<CpuMax>, String> {
    if text == "max" {
        return Ok(None);
    }
    let usage = || {
        format!(
            "{text:?} is not a CPU limit (use a percentage of one CPU like \"50%\" or \"250%\", or \"max\")"
        )
    };
    let number = text.strip_suffix('%').ok_or_else(usage)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(usage());
    }
    if fraction.len() > 3 {
        return Err(format!("{text:?} is more precise than the kernel's 0.001%"));
    }
    // 1% of a 100 ms period is 1000 us: quota_us = percent * 1000.
    let whole: u64 = whole
        .parse()
        .map_err(|_| format!("{text:?} is too large a CPU limit"))?;
    let fraction_us: u64 = format!("{fraction:0<3}").parse().unwrap_or(0);
    let quota_us = whole
        .checked_mul(1_000)
        .and_then(|quota| quota.checked_add(fraction_us))
        .ok_or_else(|| format!("{text:?} is too large a CPU limit"))?;
    if quota_us == 0 {
        return Err("a CPU limit must be greater than 0% (use \"max\" for no limit)".to_owned());
    }
    if quota_us < MIN_CPU_QUOTA_US {
        return Err(format!("{text:?} is below the kernel's minimum of 1%"));
    }
    Ok(Some(CpuMax {
        quota_us,
        period_us: CPU_PERIOD_US,
    }))
}

/// `http://HOST[:PORT][/PATH]` with an IP literal or `localhost` as host: health checks never
/// resolve names (there may be no resolver yet, and the check must not depend on one).
fn parse_http_url(url: &str) -> Result<(IpAddr, u16, String), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            format!("{url:?}: only http is supported for health checks")
        } else {
            format!("{url:?} is not an http:// URL")
        });
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = tail.split('#').next().unwrap_or("");
    let path = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{url:?}: the path must be visible ASCII (percent-encode anything else)"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{url:?}: user information is not supported"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("{url:?}: unexpected {after:?} after the host"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().map_err(|_| {
            format!(
                "{url:?}: the host {host:?} must be an IP address or localhost (health checks do \
                 not resolve names)"
            )
        })?
    };
    let port = match port {
        None => 80,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{url:?}: {port:?} is not a TCP port (1..=65535)"))?,
    };
    Ok((host, port, path))
}

// ---------------------------------------------------------------------------------------------
// A directory of definitions and the graph between them

/// Loads every `*.toml` in `dir` (sorted by name), then checks the dependency graph.
///
/// All problems of all files come back together. A dependency on a file that failed to parse is
/// not reported again as missing.
pub fn load_dir(dir: &Path) -> Result<Vec<Service>, Vec<ConfigError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            return Err(vec![ConfigError::whole_file(
                dir,
                format!("cannot read the service directory: {error}"),
            )]);
        }
    };
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                if path
                    .extension()
                    .is_some_and(|extension| extension == "toml")
                {
                    paths.push(path);
                }
            }
            Err(error) => errors.push(ConfigError::whole_file(
                dir,
                format!("cannot read the service directory: {error}"),
            )),
        }
    }
    paths.sort();

    let mut services = Vec::new();
    let mut texts = BTreeMap::new();
    let mut broken = BTreeSet::new();
    for path in paths {
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                errors.push(ConfigError::whole_file(
                    &path,
                    format!("cannot read: {error}"),
                ));
                broken.insert(stem);
                continue;
            }
        };
        match parse_service_all(&stem, &path, &text) {
            Ok(service) => {
                texts.insert(service.name.clone(), (path, text));
                services.push(service);
            }
            Err(file_errors) => {
                errors.extend(file_errors);
                broken.insert(stem);
            }
        }
    }

    for issue in graph_issues(&services) {
        if issue
            .missing
            .as_ref()
            .is_some_and(|missing| broken.contains(missing.as_str()))
        {
            continue;
        }
        let Some((path, text)) = texts.get(&issue.service) else {
            continue;
        };
        let position = DeTable::parse(text)
            .ok()
            .and_then(|document| span_of(document.get_ref(), issue.field, Some(issue.index)))
            .map(|span| line_column(text, span.start));
        errors.push(ConfigError {
            source: path.clone(),
            field: Some(issue.field.to_owned()),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            reason: issue.reason,
        });
    }

    if errors.is_empty() {
        Ok(services)
    } else {
        Err(errors)
    }
}

/// Checks the dependencies between services: every `after` and `requires` names an existing
/// service, nothing depends on itself, and `after` + `requires` have no cycle.
///
/// Errors name the file as `<name>.toml` (without a directory: [`load_dir`] reports full paths
/// and positions).
pub fn validate_graph(services: &[Service]) -> Result<(), Vec<ConfigError>> {
    let errors: Vec<ConfigError> = graph_issues(services)
        .into_iter()
        .map(|issue| ConfigError {
            source: PathBuf::from(format!("{}.toml", issue.service)),
            field: Some(issue.field.to_owned()),
            line: None,
            column: None,
            reason: issue.reason,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks that every user and group the services name exists in the image's account database,
/// so an unknown name is reported at load time rather than when the service starts. Errors name
/// the file as `<name>.toml`.
pub fn validate_accounts(services: &[Service], users: &Users) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    for service in services.iter().filter(|s| s.kind != ServiceType::Target) {
        let mut report = |field: &str, result: Result<crate::users::Ids, String>| {
            if let Err(reason) = result {
                errors.push(ConfigError {
                    source: PathBuf::from(format!("{}.toml", service.name)),
                    field: Some(field.to_owned()),
                    line: None,
                    column: None,
                    reason,
                });
            }
        };
        report("user", users.resolve(&service.user, None, &[]));
        if let Some(group) = &service.group {
            report("group", users.resolve(&Account::Id(0), Some(group), &[]));
        }
        report(
            "supplementary_groups",
            users.resolve(&Account::Id(0), None, &service.supplementary_groups),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A graph problem, located at one element of `after` or `requires`.
struct GraphIssue {
    service: ServiceName,
    field: &'static str,
    index: usize,
    /// The dependency that does not exist, if that is the problem.
    missing: Option<ServiceName>,
    reason: String,
}

fn graph_issues(services: &[Service]) -> Vec<GraphIssue> {
    let by_name: BTreeMap<&ServiceName, &Service> = services
        .iter()
        .map(|service| (&service.name, service))
        .collect();
    let mut issues = Vec::new();

    for service in services {
        for (field, names) in [("after", &service.after), ("requires", &service.requires)] {
            for (index, dependency) in names.iter().enumerate() {
                let reason = if *dependency == service.name {
                    match field {
                        "after" => format!("{} is ordered after itself", service.name),
                        _ => format!("{} requires itself", service.name),
                    }
                } else if !by_name.contains_key(dependency) {
                    let verb = if field == "after" {
                        "is ordered after"
                    } else {
                        "requires"
                    };
                    format!(
                        "{} {verb} \"{dependency}\", but there is no service \"{dependency}\" \
                         (no {dependency}.toml)",
                        service.name
                    )
                } else {
                    continue;
                };
                issues.push(GraphIssue {
                    service: service.name.clone(),
                    field,
                    index,
                    missing: (*dependency != service.name).then(|| dependency.clone()),
                    reason,
                });
            }
        }
    }

    for cycle in cycles(&by_name) {
        let (from, to) = (&cycle[0], &cycle[1]);
        let service = by_name[from];
        // Point at the edge that starts the cycle, in requires if it is there.
        let (field, index) = service
            .requires
            .iter()
            .position(|name| name == to)
            .map(|index| ("requires", index))
            .or_else(|| {
                service
                    .after
                    .iter()
                    .position(|name| name == to)
                    .map(|index| ("after", index))
            })
            .unwrap_or(("requires", 0));
        let path: Vec<&str> = cycle.iter().map(ServiceName::as_str).collect();
        issues.push(GraphIssue {
            service: from.clone(),
            field,
            index,
            missing: None,
            reason: format!(
                "dependency cycle: {} (after and requires must not loop)",
                path.join(" -> ")
            ),
        });
    }
    issues
}

/// Every distinct cycle a depth-first search finds, each as a path that starts and ends at its
/// smallest name (`a -> b -> a`). Self-dependencies are reported separately and skipped here.
fn cycles(by_name: &BTreeMap<&ServiceName, &Service>) -> Vec<Vec<ServiceName>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnStack,
        Done,
    }

    fn visit<'a>(
        name: &'a ServiceName,
        by_name: &BTreeMap<&'a ServiceName, &'a Service>,
        marks: &mut BTreeMap<&'a ServiceName, Mark>,
        stack: &mut Vec<&'a ServiceName>,
        found: &mut BTreeSet<Vec<ServiceName>>,
    ) {
        marks.insert(name, Mark::OnStack);
        stack.push(name);
        let service = by_name[name];
        for dependency in service.dependencies() {
            if dependency == name || !by_name.contains_key(dependency) {
                continue;
            }
            match marks.get(dependency).copied().unwrap_or(Mark::Unvisited) {
                Mark::Unvisited => visit(dependency, by_name, marks, stack, found),
                Mark::OnStack => {
                    let start = stack
                        .iter()
                        .position(|on_stack| *on_stack == dependency)
                        .unwrap_or(0);
                    let mut cycle: Vec<ServiceName> =
                        stack[start..].iter().map(|name| (*name).clone()).collect();
                    let smallest = cycle
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.cmp(b.1))
                        .map_or(0, |(index, _)| index);
                    cycle.rotate_left(smallest);
                    cycle.push(cycle[0].clone());
                    found.insert(cycle);
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
    }

    let mut marks = BTreeMap::new();
    let mut found = BTreeSet::new();
    for name in by_name.keys() {
        if marks.get(name).copied().unwrap_or(Mark::Unvisited) == Mark::Unvisited {
            visit(name, by_name, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "command = [\"/usr/bin/daemon\"]\n";

    fn parse(text: &str) -> Result<Service, Vec<ConfigError>> {
        parse_service_all("svc", Path::new("svc.toml"), text)
    }

    fn ok(text: &str) -> Service {
        match parse(text) {
            Ok(service) => service,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    /// Every error, displayed.
    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(service) => panic!("expected errors, parsed {service:#?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// The one error, displayed.
    fn error(text: &str) -> String {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().unwrap()
    }

    fn name(text: &str) -> ServiceName {
        text.parse().unwrap()
    }

    // --- names -----------------------------------------------------------------------------

    #[test]
    fn service_names() {
        for good in [
            "a",
            "0",
            "netd",
            "network-online",
            "a.b_c-d",
            &"x".repeat(64),
        ] {
            let parsed: ServiceName = good.parse().unwrap();
            assert_eq!(parsed.as_str(), good);
            assert_eq!(parsed.to_string(), good);
        }
        for bad in [
            "",
            "Netd",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "ä",
            &"x".repeat(65),
        ] {
            assert_eq!(
                bad.parse::<ServiceName>(),
                Err(InvalidServiceName(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            "Netd".parse::<ServiceName>().unwrap_err().to_string(),
            "\"Netd\" is not a valid service name (1 to 64 of a-z, 0-9, '.', '_', '-', starting \
             with a letter or digit)"
        );
        assert!(name("a") < name("b"));
    }

    #[test]
    fn the_file_name_must_be_a_service_name() {
        let errors = parse_service_all("Bad Name", Path::new("Bad Name.toml"), CMD).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Bad Name.toml: the file name gives the service name: \"Bad Name\" is not a valid \
              service name (1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)"
            ]
        );
    }

    // --- whole definitions ---------------------------------------------------------------

    #[test]
    fn minimal_simple_service_gets_every_default() {
        let service = ok(CMD);
        assert_eq!(
            service,
            Service {
                name: name("svc"),
                description: String::new(),
                kind: ServiceType::Simple,
                command: vec!["/usr/bin/daemon".to_owned()],
                environment: BTreeMap::new(),
                working_directory: PathBuf::from("/"),
                user: Account::Name("root".to_owned()),
                group: None,
                supplementary_groups: vec![],
                capabilities: caps::CapsHashSet::new(),
                after: vec![],
                requires: vec![],
                stop_signal: Signal::SIGTERM,
                start_timeout: Duration::from_secs(30),
                stop_timeout: Duration::from_secs(10),
                restart: RestartPolicy {
                    when: RestartWhen::OnFailure,
                    delay: Duration::from_millis(100),
                    max_delay: Duration::from_secs(30),
                    max_restarts: 5,
                    window: Duration::from_secs(60),
                },
                readiness: Readiness::Started,
                health: None,
                resources: Resources::default(),
                log_ring_bytes: 256 * 1024,
            }
        );
    }

    #[test]
    fn full_definition() {
        let service = ok(r#"
description = "Network daemon"
type = "notify"
command = ["/usr/lib/shoal/netd", "--flag"]
environment = { RUST_LOG = "info", EMPTY = "" }
working_directory = "/var/lib/netd"
user = "netd"
group = 101
supplementary_groups = ["adm", 7, "8"]
capabilities = ["CAP_NET_ADMIN", "net_raw", "Cap_Sys_Time", "CAP_NET_ADMIN"]
after = ["a"]
requires = ["b", "a"]
stop_signal = "int"
start_timeout = "1m"
stop_timeout = "1.5s"

[restart]
policy = "always"
delay = "200ms"
max_delay = "20s"
max_restarts = 0
window = "2m"

[health]
check = { http = "http://127.0.0.1:8080/healthz" }
interval = "5s"
timeout = "1s"
failure_threshold = 2
start_period = "10s"

[resources]
cpu_max = "150%"
memory_max = "64M"
memory_high = 50331648
pids_max = 64
io_weight = 100

[logs]
ring_bytes = "1M"
"#);
        assert_eq!(service.description, "Network daemon");
        assert_eq!(service.kind, ServiceType::Notify);
        assert_eq!(service.command, ["/usr/lib/shoal/netd", "--flag"]);
        assert_eq!(
            service.environment,
            BTreeMap::from([
                ("EMPTY".to_owned(), String::new()),
                ("RUST_LOG".to_owned(), "info".to_owned())
            ])
        );
        assert_eq!(service.working_directory, Path::new("/var/lib/netd"));
        assert_eq!(service.user, Account::Name("netd".to_owned()));
        assert_eq!(service.group, Some(Account::Id(101)));
        assert_eq!(
            service.supplementary_groups,
            [
                Account::Name("adm".to_owned()),
                Account::Id(7),
                Account::Id(8)
            ]
        );
        assert_eq!(
            service.capabilities,
            caps::CapsHashSet::from([
                caps::Capability::CAP_NET_ADMIN,
                caps::Capability::CAP_NET_RAW,
                caps::Capability::CAP_SYS_TIME,
            ])
        );
        assert_eq!(service.after, [name("a")]);
        assert_eq!(service.requires, [name("b"), name("a")]);
        assert_eq!(
            service.dependencies().collect::<Vec<_>>(),
            [&name("a"), &name("b")]
        );
        assert_eq!(service.stop_signal, Signal::SIGINT);
        assert_eq!(service.start_timeout, Duration::from_secs(60));
        assert_eq!(service.stop_timeout, Duration::from_millis(1500));
        assert_eq!(
            service.restart,
            RestartPolicy {
                when: RestartWhen::Always,
                delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(20),
                max_restarts: 0,
                window: Duration::from_secs(120),
            }
        );
        assert_eq!(service.readiness, Readiness::Notify);
        assert_eq!(
            service.health,
            Some(HealthCheck {
                probe: Probe::Http {
                    host: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port: 8080,
                    path: "/healthz".to_owned(),
                },
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                failure_threshold: 2,
                start_period: Duration::from_secs(10),
            })
        );
        assert_eq!(
            service.resources,
            Resources {
                cpu_max: Some(CpuMax {
                    quota_us: 150_000,
                    period_us: 100_000
                }),
                memory_max: Some(64 << 20),
                memory_high: Some(48 << 20),
                pids_max: Some(64),
                io_weight: Some(100),
            }
        );
        assert_eq!(service.log_ring_bytes, 1 << 20);
    }

    #[test]
    fn readiness_follows_the_type() {
        assert_eq!(ok(CMD).readiness, Readiness::Started);
        assert_eq!(
            ok(&format!("{CMD}[ready]\ntcp_port = 8080\n")).readiness,
            Readiness::TcpPort(8080)
        );
        assert_eq!(
            ok(&format!("type = \"notify\"\n{CMD}")).readiness,
            Readiness::Notify
        );
        assert_eq!(
            ok(&format!("type = \"oneshot\"\n{CMD}")).readiness,
            Readiness::ExitSuccess
        );
        assert_eq!(
            ok("type = \"target\"\nrequires = [\"netd\"]\n").readiness,
            Readiness::Dependencies
        );
    }

    #[test]
    fn restart_defaults_depend_on_the_type() {
        assert_eq!(ok(CMD).restart.when, RestartWhen::OnFailure);
        assert_eq!(
            ok(&format!("type = \"oneshot\"\n{CMD}")).restart.when,
            RestartWhen::Never
        );
        assert_eq!(
            ok(&format!(
                "type = \"oneshot\"\n{CMD}[restart]\nmax_restarts = 2\n"
            ))
            .restart
            .when,
            RestartWhen::Never
        );
        assert_eq!(
            ok(&format!(
                "type = \"oneshot\"\n{CMD}[restart]\npolicy = \"on-failure\"\n"
            ))
            .restart
            .when,
            RestartWhen::OnFailure
        );
        let target = ok("type = \"target\"\n");
        assert_eq!(target.restart.when, RestartWhen::Never);
        assert!(target.command.is_empty());
    }

    // --- TOML-level errors: syntax, unknown fields, types ---------------------------------

    #[test]
    fn syntax_error_has_line_and_column() {
        assert_eq!(
            error("description = \"x\"\ncommand = [\"/x\"\n"),
            "svc.toml:2:16: unclosed array, expected `]`"
        );
        assert_eq!(error(&format!("{CMD}{CMD}")), "svc.toml:2:1: duplicate key");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path_and_position() {
        assert_eq!(
            error(&format!("{CMD}restart_policy = \"always\"\n")),
            "svc.toml:2:1: field restart_policy: unknown field `restart_policy`, expected one of \
             `description`, `type`, `command`, `environment`, `working_directory`, `user`, \
             `group`, `supplementary_groups`, `capabilities`, `after`, `requires`, \
             `stop_signal`, `start_timeout`, `stop_timeout`, `restart`, `ready`, `health`, \
             `resources`, `logs`"
        );
        assert_eq!(
            error(&format!(
                "{CMD}\n[restart]\npolicy = \"always\"\n  dealy = \"1s\"\n"
            )),
            "svc.toml:5:3: field restart.dealy: unknown field `dealy`, expected one of `policy`, \
             `delay`, `max_delay`, `max_restarts`, `window`"
        );
        assert_eq!(
            error(&format!("{CMD}resources.cpu = \"50%\"\n")),
            "svc.toml:2:11: field resources.cpu: unknown field `cpu`, expected one of `cpu_max`, \
             `memory_max`, `memory_high`, `pids_max`, `io_weight`"
        );
        assert_eq!(
            error(&format!("{CMD}[ready]\nport = 1\n")),
            "svc.toml:3:1: field ready.port: unknown field `port`, expected `tcp_port`"
        );
        assert_eq!(
            error(&format!("{CMD}[logs]\nring = 1\n")),
            "svc.toml:3:1: field logs.ring: unknown field `ring`, expected `ring_bytes`"
        );
        assert_eq!(
            error(&format!(
                "{CMD}[health]\ncheck = {{ tcp = 1 }}\nretries = 3\n"
            )),
            "svc.toml:4:1: field health.retries: unknown field `retries`, expected one of \
             `check`, `interval`, `timeout`, `failure_threshold`, `start_period`"
        );
    }

    #[test]
    fn unknown_enum_values_and_wrong_types() {
        assert_eq!(
            error(&format!("type = \"forking\"\n{CMD}")),
            "svc.toml:1:8: field type: unknown variant `forking`, expected one of `simple`, \
             `notify`, `oneshot`, `target`"
        );
        assert_eq!(
            error(&format!("{CMD}[restart]\npolicy = \"sometimes\"\n")),
            "svc.toml:3:10: field restart.policy: unknown variant `sometimes`, expected one of \
             `always`, `on-failure`, `never`"
        );
        assert_eq!(
            error(&format!("{CMD}[health]\ncheck = {{ ftp = 21 }}\n")),
            "svc.toml:3:11: field health.check.ftp: unknown variant `ftp`, expected one of \
             `exec`, `tcp`, `http`"
        );
        assert_eq!(
            error(&format!("{CMD}[health]\ninterval = \"1s\"\n")),
            "svc.toml:2:1: field health: missing field `check`"
        );
        assert_eq!(
            error("command = \"/usr/bin/daemon --flag\"\n"),
            "svc.toml:1:11: field command: invalid type: string \"/usr/bin/daemon --flag\", \
             expected a sequence"
        );
        assert_eq!(
            error(&format!("{CMD}environment = {{ LEVEL = 3 }}\n")),
            "svc.toml:2:25: field environment.LEVEL: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\nio_weight = \"high\"\n")),
            "svc.toml:3:13: field resources.io_weight: invalid type: string \"high\", expected \
             an integer"
        );
    }

    // --- value checks: one test per rule ----------------------------------------------------

    #[test]
    fn the_brief_example_error_renders_exactly() {
        let error = parse_service(
            "netd",
            Path::new("/etc/shoal/services/netd.toml"),
            "command = [\"/usr/lib/shoal/netd\"]\n[restart]\ndelay = \"5 parsecs\"\n",
        )
        .unwrap_err();
        assert_eq!(
            error,
            ConfigError {
                source: PathBuf::from("/etc/shoal/services/netd.toml"),
                field: Some("restart.delay".to_owned()),
                line: Some(3),
                column: Some(9),
                reason: "\"5 parsecs\" is not a duration (use 100ms, 5s, 2m, 1h)".to_owned(),
            }
        );
        assert_eq!(
            error.to_string(),
            "/etc/shoal/services/netd.toml:3:9: field restart.delay: \"5 parsecs\" is not a \
             duration (use 100ms, 5s, 2m, 1h)"
        );
    }

    #[test]
    fn error_display_without_position_or_field() {
        let mut error = ConfigError {
            source: PathBuf::from("/d/x.toml"),
            field: Some("command".to_owned()),
            line: None,
            column: None,
            reason: "r".to_owned(),
        };
        assert_eq!(error.to_string(), "/d/x.toml: field command: r");
        error.field = None;
        assert_eq!(error.to_string(), "/d/x.toml: r");
        error.line = Some(2);
        error.column = Some(5);
        assert_eq!(error.to_string(), "/d/x.toml:2:5: r");
    }

    #[test]
    fn command_is_required_except_for_targets() {
        assert_eq!(
            error("description = \"no command\"\n"),
            "svc.toml: a simple service needs a command (field command is missing)"
        );
        assert_eq!(
            error("type = \"oneshot\"\n"),
            "svc.toml: a oneshot service needs a command (field command is missing)"
        );
    }

    #[test]
    fn command_must_be_non_empty_absolute_and_nul_free() {
        assert_eq!(
            error("command = []\n"),
            "svc.toml:1:11: field command: must not be empty (the first element is the program)"
        );
        assert_eq!(
            error("command = [\"netd\", \"--flag\"]\n"),
            "svc.toml:1:12: field command: the program \"netd\" must be an absolute path to a file"
        );
        assert_eq!(
            error("command = [\"\"]\n"),
            "svc.toml:1:12: field command: the program \"\" must be an absolute path to a file"
        );
        assert_eq!(
            error("command = [\"/usr/bin/\"]\n"),
            "svc.toml:1:12: field command: the program \"/usr/bin/\" must be an absolute path to \
             a file"
        );
        assert_eq!(
            error("command = [\"/bin/x\", \"a\\u0000b\"]\n"),
            "svc.toml:1:22: field command: contains a NUL character"
        );
    }

    #[test]
    fn targets_reject_every_process_field() {
        for (field, line) in [
            ("command", "command = [\"/x\"]"),
            ("environment", "environment = { A = \"b\" }"),
            ("working_directory", "working_directory = \"/\""),
            ("user", "user = \"root\""),
            ("group", "group = \"root\""),
            ("supplementary_groups", "supplementary_groups = []"),
            ("capabilities", "capabilities = []"),
            ("stop_signal", "stop_signal = \"TERM\""),
            ("stop_timeout", "stop_timeout = \"1s\""),
            ("restart", "restart = { policy = \"never\" }"),
            ("ready", "ready = { tcp_port = 1 }"),
            ("health", "health = { check = { tcp = 1 } }"),
            ("resources", "resources = { pids_max = 1 }"),
            ("logs", "logs = { ring_bytes = \"4K\" }"),
        ] {
            let column = field.len() + 4;
            assert_eq!(
                error(&format!("type = \"target\"\n{line}\n")),
                format!(
                    "svc.toml:2:{column}: field {field}: a target has no process, so it cannot \
                     have this field (remove it, or use another type)"
                ),
                "{field}"
            );
        }
        // What a target may have.
        let target = ok(
            "description = \"d\"\ntype = \"target\"\nafter = [\"a\"]\nrequires = [\"b\"]\n\
             start_timeout = \"5m\"\n",
        );
        assert_eq!(target.start_timeout, Duration::from_secs(300));
    }

    #[test]
    fn environment_names_and_values() {
        assert_eq!(
            error(&format!("{CMD}environment = {{ \"\" = \"x\" }}\n")),
            "svc.toml:2:15: field environment: variable name \"\" is invalid (it must be \
             non-empty, without '=' or NUL)"
        );
        assert_eq!(
            error(&format!("{CMD}environment = {{ \"A=B\" = \"x\" }}\n")),
            "svc.toml:2:15: field environment: variable name \"A=B\" is invalid (it must be \
             non-empty, without '=' or NUL)"
        );
        assert_eq!(
            error(&format!("{CMD}environment = {{ \"A\\u0000\" = \"x\" }}\n")),
            "svc.toml:2:15: field environment: variable name \"A\\0\" is invalid (it must be \
             non-empty, without '=' or NUL)"
        );
        assert_eq!(
            error(&format!("{CMD}environment = {{ A = \"x\\u0000\" }}\n")),
            "svc.toml:2:15: field environment: the value of A contains a NUL character"
        );
    }

    #[test]
    fn working_directory_must_be_absolute() {
        assert_eq!(
            error(&format!("{CMD}working_directory = \"var/lib\"\n")),
            "svc.toml:2:21: field working_directory: \"var/lib\" is not an absolute path"
        );
        assert_eq!(
            error(&format!("{CMD}working_directory = \"/a\\u0000\"\n")),
            "svc.toml:2:21: field working_directory: the path contains a NUL character"
        );
    }

    #[test]
    fn users_and_groups() {
        let service = ok(&format!("{CMD}user = 1000\ngroup = \"1001\"\n"));
        assert_eq!(service.user, Account::Id(1000));
        assert_eq!(service.group, Some(Account::Id(1001)));
        assert_eq!(Account::Id(5).to_string(), "5");
        assert_eq!(Account::Name("adm".to_owned()).to_string(), "adm");

        assert_eq!(
            error(&format!("{CMD}user = -1\n")),
            "svc.toml:2:8: field user: -1 is not a valid id (0..=4294967294)"
        );
        assert_eq!(
            error(&format!("{CMD}user = 4294967295\n")),
            "svc.toml:2:8: field user: 4294967295 is not a valid id (0..=4294967294)"
        );
        assert_eq!(
            error(&format!("{CMD}group = \"99999999999999999999\"\n")),
            "svc.toml:2:9: field group: 99999999999999999999 is too large an id"
        );
        assert_eq!(
            error(&format!("{CMD}user = \"net d\"\n")),
            "svc.toml:2:8: field user: \"net d\" is not a valid user or group name (letters, \
             digits, '_', '-', '.', at most 32, not starting with '-')"
        );
        assert_eq!(
            error(&format!("{CMD}group = 1.5\n")),
            "svc.toml:2:9: field group: expected a name or a number, found float 1.5"
        );
        assert_eq!(
            error(&format!("{CMD}supplementary_groups = [\"adm\", \"-x\"]\n")),
            "svc.toml:2:32: field supplementary_groups: \"-x\" is not a valid user or group name \
             (letters, digits, '_', '-', '.', at most 32, not starting with '-')"
        );
    }

    #[test]
    fn unknown_capabilities_are_rejected_at_their_position() {
        assert_eq!(
            error(&format!(
                "{CMD}capabilities = [\"CAP_NET_ADMIN\", \"CAP_FLY\", \"net_raw\"]\n"
            )),
            "svc.toml:2:34: field capabilities: unknown capability \"CAP_FLY\" (see \
             capabilities(7))"
        );
        assert_eq!(
            error(&format!("{CMD}capabilities = [\"\"]\n")),
            "svc.toml:2:17: field capabilities: unknown capability \"\" (see capabilities(7))"
        );
    }

    #[test]
    fn capability_names_in_any_form() {
        let service = ok(&format!(
            "{CMD}capabilities = [\"CAP_CHOWN\", \"chown\", \"sys_admin\", \"CAP_bpf\", \
             \"Checkpoint_Restore\"]\n"
        ));
        assert_eq!(
            service.capabilities,
            caps::CapsHashSet::from([
                caps::Capability::CAP_CHOWN,
                caps::Capability::CAP_SYS_ADMIN,
                caps::Capability::CAP_BPF,
                caps::Capability::CAP_CHECKPOINT_RESTORE,
            ])
        );
    }

    #[test]
    fn dependency_names_are_validated() {
        assert_eq!(
            error(&format!("{CMD}after = [\"ok\", \"Not_OK\"]\n")),
            "svc.toml:2:16: field after: \"Not_OK\" is not a valid service name (1 to 64 of a-z, \
             0-9, '.', '_', '-', starting with a letter or digit)"
        );
        assert_eq!(
            error(&format!("{CMD}requires = [\"a\", \"b\", \"a\"]\n")),
            "svc.toml:2:23: field requires: a is listed twice"
        );
    }

    #[test]
    fn stop_signals() {
        for (text, signal) in [
            ("SIGTERM", Signal::SIGTERM),
            ("TERM", Signal::SIGTERM),
            ("int", Signal::SIGINT),
            ("SigHup", Signal::SIGHUP),
            ("QUIT", Signal::SIGQUIT),
            ("USR1", Signal::SIGUSR1),
            ("SIGUSR2", Signal::SIGUSR2),
            ("KILL", Signal::SIGKILL),
        ] {
            assert_eq!(
                ok(&format!("{CMD}stop_signal = \"{text}\"\n")).stop_signal,
                signal,
                "{text}"
            );
        }
        for bad in ["SIGFOO", "15", "", "SIG"] {
            assert_eq!(
                error(&format!("{CMD}stop_signal = \"{bad}\"\n")),
                format!(
                    "svc.toml:2:15: field stop_signal: {bad:?} is not a signal name (like \
                     SIGTERM, INT, HUP, QUIT, USR1, USR2, KILL)"
                )
            );
        }
    }

    #[test]
    fn durations_must_be_strings_with_units() {
        assert_eq!(
            error(&format!("{CMD}stop_timeout = 10\n")),
            "svc.toml:2:16: field stop_timeout: expected a duration string like \"5s\", found \
             integer 10"
        );
        assert_eq!(
            error(&format!("{CMD}start_timeout = \"10\"\n")),
            "svc.toml:2:17: field start_timeout: \"10\" is not a duration (use 100ms, 5s, 2m, 1h)"
        );
        assert_eq!(
            error(&format!("{CMD}start_timeout = \"-1s\"\n")),
            "svc.toml:2:17: field start_timeout: \"-1s\" is negative; a duration must be 0 or more"
        );
    }

    #[test]
    fn durations_that_must_not_be_zero() {
        for (field, toml) in [
            ("start_timeout", "start_timeout = \"0s\"\n".to_owned()),
            ("stop_timeout", "stop_timeout = \"0ms\"\n".to_owned()),
            ("restart.delay", "[restart]\ndelay = \"0s\"\n".to_owned()),
            (
                "restart.max_delay",
                "[restart]\ndelay = \"0s\"\nmax_delay = \"0s\"\n".to_owned(),
            ),
            ("restart.window", "[restart]\nwindow = \"0s\"\n".to_owned()),
            (
                "health.interval",
                "[health]\ncheck = { tcp = 1 }\ninterval = \"0s\"\n".to_owned(),
            ),
            (
                "health.timeout",
                "[health]\ncheck = { tcp = 1 }\ntimeout = \"0s\"\n".to_owned(),
            ),
        ] {
            let errors = errors(&format!("{CMD}{toml}"));
            assert!(
                errors
                    .iter()
                    .any(|e| e.ends_with(&format!("field {field}: must be greater than 0"))),
                "{field}: {errors:#?}"
            );
        }
        // A start period of 0 is the default and fine.
        let service = ok(&format!(
            "{CMD}[health]\ncheck = {{ tcp = 1 }}\nstart_period = \"0s\"\n"
        ));
        assert_eq!(service.health.unwrap().start_period, Duration::ZERO);
    }

    #[test]
    fn restart_delay_must_not_exceed_max_delay() {
        assert_eq!(
            error(&format!(
                "{CMD}[restart]\ndelay = \"1m\"\nmax_delay = \"30s\"\n"
            )),
            "svc.toml:3:9: field restart.delay: 60s is longer than restart.max_delay (30s); the \
             delay doubles up to max_delay"
        );
        // Also against the default max_delay of 30s.
        assert_eq!(
            error(&format!("{CMD}[restart]\ndelay = \"31s\"\n")),
            "svc.toml:3:9: field restart.delay: 31s is longer than restart.max_delay (30s); the \
             delay doubles up to max_delay"
        );
        let equal = ok(&format!(
            "{CMD}[restart]\ndelay = \"5s\"\nmax_delay = \"5s\"\n"
        ));
        assert_eq!(equal.restart.delay, equal.restart.max_delay);
    }

    #[test]
    fn restart_counts_and_oneshot_policy() {
        assert_eq!(
            error(&format!("{CMD}[restart]\nmax_restarts = -1\n")),
            "svc.toml:3:16: field restart.max_restarts: -1 is outside 0..=4294967295"
        );
        assert_eq!(
            error(&format!(
                "type = \"oneshot\"\n{CMD}[restart]\npolicy = \"always\"\n"
            )),
            "svc.toml:4:10: field restart.policy: a oneshot service cannot restart always (it \
             would run again after succeeding); use on-failure or never"
        );
    }

    #[test]
    fn ready_tcp_port() {
        for bad in ["0", "65536", "-80"] {
            assert_eq!(
                error(&format!("{CMD}[ready]\ntcp_port = {bad}\n")),
                format!("svc.toml:3:12: field ready.tcp_port: {bad} is not a TCP port (1..=65535)")
            );
        }
        assert_eq!(
            error(&format!("type = \"notify\"\n{CMD}[ready]\ntcp_port = 80\n")),
            "svc.toml:4:12: field ready.tcp_port: only a simple service can be ready by TCP port \
             (a notify service is ready when it sends READY=1)"
        );
        assert_eq!(
            error(&format!(
                "type = \"oneshot\"\n{CMD}[ready]\ntcp_port = 80\n"
            )),
            "svc.toml:4:12: field ready.tcp_port: only a simple service can be ready by TCP port \
             (a oneshot service is ready when it exits 0)"
        );
        // An empty [ready] changes nothing.
        assert_eq!(ok(&format!("{CMD}[ready]\n")).readiness, Readiness::Started);
    }

    #[test]
    fn health_probes() {
        let probe = |check: &str| {
            ok(&format!("{CMD}[health]\ncheck = {check}\n"))
                .health
                .unwrap()
                .probe
        };
        assert_eq!(
            probe("{ exec = [\"/usr/bin/check\", \"-q\"] }"),
            Probe::Exec(vec!["/usr/bin/check".to_owned(), "-q".to_owned()])
        );
        assert_eq!(probe("{ tcp = 8080 }"), Probe::Tcp(8080));
        assert_eq!(
            probe("{ http = \"http://localhost/\" }"),
            Probe::Http {
                host: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 80,
                path: "/".to_owned()
            }
        );
        let health = ok(&format!("{CMD}[health]\ncheck = {{ tcp = 1 }}\n"))
            .health
            .unwrap();
        assert_eq!(health.interval, Duration::from_secs(10));
        assert_eq!(health.timeout, Duration::from_secs(2));
        assert_eq!(health.failure_threshold, 3);
        assert_eq!(health.start_period, Duration::ZERO);
    }

    #[test]
    fn health_check_errors() {
        assert_eq!(
            error(&format!(
                "{CMD}[health]\ncheck = {{ exec = [\"check\"] }}\n"
            )),
            "svc.toml:3:19: field health.check.exec: the program \"check\" must be an absolute \
             path to a file"
        );
        assert_eq!(
            error(&format!("{CMD}[health]\ncheck = {{ exec = [] }}\n")),
            "svc.toml:3:18: field health.check.exec: must not be empty (the first element is the \
             program)"
        );
        assert_eq!(
            error(&format!("{CMD}[health]\ncheck = {{ tcp = 0 }}\n")),
            "svc.toml:3:17: field health.check.tcp: 0 is not a TCP port (1..=65535)"
        );
        assert_eq!(
            error(&format!(
                "{CMD}[health]\ncheck = {{ http = \"http://example.com/\" }}\n"
            )),
            "svc.toml:3:18: field health.check.http: \"http://example.com/\": the host \
             \"example.com\" must be an IP address or localhost (health checks do not resolve \
             names)"
        );
        assert_eq!(
            error(&format!(
                "{CMD}[health]\ncheck = {{ tcp = 1 }}\nfailure_threshold = 0\n"
            )),
            "svc.toml:4:21: field health.failure_threshold: 0 is outside 1..=4294967295"
        );
        assert_eq!(
            error(&format!(
                "{CMD}[health]\ncheck = {{ exec = [\"/a\"], tcp = 1 }}\n"
            )),
            "svc.toml:3:9: field health.check: wanted exactly 1 element, more than 1 element"
        );
        assert_eq!(
            error(&format!(
                "type = \"oneshot\"\n{CMD}[health]\ncheck = {{ tcp = 1 }}\n"
            )),
            "svc.toml:3:1: field health: a oneshot service runs to completion, so it has no \
             health to check"
        );
    }

    #[test]
    fn http_urls() {
        let parsed = |url| parse_http_url(url);
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        assert_eq!(
            parsed("http://127.0.0.1:8080/healthz"),
            Ok((v4(127, 0, 0, 1), 8080, "/healthz".to_owned()))
        );
        assert_eq!(
            parsed("http://10.0.0.1"),
            Ok((v4(10, 0, 0, 1), 80, "/".to_owned()))
        );
        assert_eq!(
            parsed("http://LocalHost:81?verbose=1#frag"),
            Ok((v4(127, 0, 0, 1), 81, "/?verbose=1".to_owned()))
        );
        assert_eq!(
            parsed("http://[::1]:9000/a/b?c=d"),
            Ok(("::1".parse().unwrap(), 9000, "/a/b?c=d".to_owned()))
        );
        assert_eq!(
            parsed("http://[fe80::1]/"),
            Ok(("fe80::1".parse().unwrap(), 80, "/".to_owned()))
        );
        for (url, reason) in [
            (
                "https://127.0.0.1/",
                "only http is supported for health checks",
            ),
            ("ftp://127.0.0.1/", "is not an http:// URL"),
            ("127.0.0.1:80", "is not an http:// URL"),
            (
                "http://user@127.0.0.1/",
                "user information is not supported",
            ),
            ("http://127.0.0.1:0/", "\"0\" is not a TCP port (1..=65535)"),
            (
                "http://127.0.0.1:70000/",
                "\"70000\" is not a TCP port (1..=65535)",
            ),
            ("http://127.0.0.1:/", "\"\" is not a TCP port (1..=65535)"),
            ("http://[::1/", "unclosed '[' in the host"),
            ("http://[::1]x/", "unexpected \"x\" after the host"),
            (
                "http:///healthz",
                "the host \"\" must be an IP address or localhost",
            ),
            (
                "http://::1/",
                "the host \":\" must be an IP address or localhost",
            ),
            ("http://127.0.0.1/a b", "the path must be visible ASCII"),
            (
                "http://127.0.0.1/a\r\nHost: x",
                "the path must be visible ASCII",
            ),
        ] {
            let error = parsed(url).unwrap_err();
            assert!(error.starts_with(&format!("{url:?}")), "{url}: {error}");
            assert!(error.contains(reason), "{url}: {error}");
        }
    }

    #[test]
    fn cpu_limits() {
        let cpu = |text: &str| parse_cpu_max(text);
        let quota = |quota_us| {
            Ok(Some(CpuMax {
                quota_us,
                period_us: 100_000,
            }))
        };
        assert_eq!(cpu("50%"), quota(50_000));
        assert_eq!(cpu("1%"), quota(1_000));
        assert_eq!(cpu("100%"), quota(100_000));
        assert_eq!(cpu("250%"), quota(250_000));
        assert_eq!(cpu("2.5%"), quota(2_500));
        assert_eq!(cpu("1.125%"), quota(1_125));
        assert_eq!(cpu("max"), Ok(None));
        let usage = |text: &str| {
            Err(format!(
                "{text:?} is not a CPU limit (use a percentage of one CPU like \"50%\" or \
                 \"250%\", or \"max\")"
            ))
        };
        for bad in ["50", "%", "-5%", "5.%", ".5%", "5 %", "1e2%", "MAX", ""] {
            assert_eq!(cpu(bad), usage(bad), "{bad:?}");
        }
        assert_eq!(
            cpu("0%"),
            Err("a CPU limit must be greater than 0% (use \"max\" for no limit)".to_owned())
        );
        assert_eq!(
            cpu("0.5%"),
            Err("\"0.5%\" is below the kernel's minimum of 1%".to_owned())
        );
        assert_eq!(
            cpu("1.0001%"),
            Err("\"1.0001%\" is more precise than the kernel's 0.001%".to_owned())
        );
        assert_eq!(
            cpu("99999999999999999999%"),
            Err("\"99999999999999999999%\" is too large a CPU limit".to_owned())
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\ncpu_max = \"0%\"\n")),
            "svc.toml:3:11: field resources.cpu_max: a CPU limit must be greater than 0% (use \
             \"max\" for no limit)"
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\ncpu_max = 50\n")),
            "svc.toml:3:11: field resources.cpu_max: expected a percentage of one CPU like \
             \"50%\" or \"max\", found integer 50"
        );
        assert_eq!(
            ok(&format!("{CMD}[resources]\ncpu_max = \"max\"\n")).resources,
            Resources::default()
        );
    }

    #[test]
    fn memory_limits() {
        let resources = ok(&format!(
            "{CMD}[resources]\nmemory_max = \"max\"\nmemory_high = 1048576\n"
        ))
        .resources;
        assert_eq!(resources.memory_max, None);
        assert_eq!(resources.memory_high, Some(1 << 20));
        assert_eq!(
            error(&format!(
                "{CMD}[resources]\nmemory_max = \"64M\"\nmemory_high = \"65M\"\n"
            )),
            "svc.toml:4:15: field resources.memory_high: 68157440 bytes is more than \
             resources.memory_max (67108864 bytes); throttling must start before the limit"
        );
        // Equal is fine.
        ok(&format!(
            "{CMD}[resources]\nmemory_max = \"64M\"\nmemory_high = \"64M\"\n"
        ));
        assert_eq!(
            error(&format!("{CMD}[resources]\nmemory_max = \"64 MB\"\n")),
            "svc.toml:3:14: field resources.memory_max: \"64 MB\" is not a size (use 4096, 256K, \
             64M, 2G, 1T)"
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\nmemory_max = 0\n")),
            "svc.toml:3:14: field resources.memory_max: must be greater than 0 (use \"max\" for \
             no limit)"
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\nmemory_high = -1\n")),
            "svc.toml:3:15: field resources.memory_high: -1 is outside 0..=9223372036854775807"
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\nmemory_max = true\n")),
            "svc.toml:3:14: field resources.memory_max: expected a size like \"64M\" or \"max\", \
             found boolean true"
        );
    }

    #[test]
    fn pids_and_io_weight() {
        let resources = ok(&format!(
            "{CMD}[resources]\npids_max = \"max\"\nio_weight = 10000\n"
        ))
        .resources;
        assert_eq!(resources.pids_max, None);
        assert_eq!(resources.io_weight, Some(10_000));
        assert_eq!(
            ok(&format!("{CMD}[resources]\nio_weight = 1\n"))
                .resources
                .io_weight,
            Some(1)
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\npids_max = 0\n")),
            "svc.toml:3:12: field resources.pids_max: 0 is outside 1..=9223372036854775807"
        );
        assert_eq!(
            error(&format!("{CMD}[resources]\npids_max = \"lots\"\n")),
            "svc.toml:3:12: field resources.pids_max: expected a number of processes or \"max\", \
             found string \"lots\""
        );
        for bad in ["0", "10001"] {
            assert_eq!(
                error(&format!("{CMD}[resources]\nio_weight = {bad}\n")),
                format!("svc.toml:3:13: field resources.io_weight: {bad} is outside 1..=10000")
            );
        }
    }

    #[test]
    fn log_ring_bounds() {
        assert_eq!(
            ok(&format!("{CMD}[logs]\nring_bytes = \"4K\"\n")).log_ring_bytes,
            4096
        );
        assert_eq!(
            ok(&format!("{CMD}[logs]\nring_bytes = 67108864\n")).log_ring_bytes,
            64 << 20
        );
        assert_eq!(ok(&format!("{CMD}[logs]\n")).log_ring_bytes, 256 * 1024);
        for (bad, bytes) in [("\"4095\"", 4095), ("\"65M\"", 65 << 20), ("0", 0)] {
            assert_eq!(
                error(&format!("{CMD}[logs]\nring_bytes = {bad}\n")),
                format!("svc.toml:3:14: field logs.ring_bytes: {bytes} bytes is outside 4K..=64M")
            );
        }
        assert_eq!(
            error(&format!("{CMD}[logs]\nring_bytes = \"lots\"\n")),
            "svc.toml:3:14: field logs.ring_bytes: \"lots\" is not a size (use 4096, 256K, 64M, \
             2G, 1T)"
        );
    }

    #[test]
    fn every_value_problem_in_a_file_is_reported() {
        let text = "\
type = \"simple\"
command = [\"daemon\"]
working_directory = \"tmp\"
capabilities = [\"CAP_FLY\"]
stop_signal = \"SIGNOPE\"

[restart]
delay = \"5 parsecs\"
window = \"0s\"

[resources]
io_weight = 0
";
        assert_eq!(
            errors(text),
            [
                "svc.toml:2:12: field command: the program \"daemon\" must be an absolute path to \
                 a file",
                "svc.toml:3:21: field working_directory: \"tmp\" is not an absolute path",
                "svc.toml:4:17: field capabilities: unknown capability \"CAP_FLY\" (see \
                 capabilities(7))",
                "svc.toml:5:15: field stop_signal: \"SIGNOPE\" is not a signal name (like \
                 SIGTERM, INT, HUP, QUIT, USR1, USR2, KILL)",
                "svc.toml:8:9: field restart.delay: \"5 parsecs\" is not a duration (use 100ms, \
                 5s, 2m, 1h)",
                "svc.toml:9:10: field restart.window: must be greater than 0",
                "svc.toml:12:13: field resources.io_weight: 0 is outside 1..=10000",
            ]
        );
        // parse_service gives the first of them.
        assert_eq!(
            parse_service("svc", Path::new("svc.toml"), text)
                .unwrap_err()
                .to_string(),
            "svc.toml:2:12: field command: the program \"daemon\" must be an absolute path to a \
             file"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is two bytes; the column counts it as one.
        assert_eq!(
            error("description = \"héllo\"\ncommand = [\"/bin/é\", \"a\\u0000b\"]\n"),
            "svc.toml:2:22: field command: contains a NUL character"
        );
    }

    // --- the dependency graph ---------------------------------------------------------------

    fn service(name_text: &str, after: &[&str], requires: &[&str]) -> Service {
        let mut service = parse_service(name_text, Path::new("x.toml"), CMD).unwrap();
        service.after = after.iter().map(|n| name(n)).collect();
        service.requires = requires.iter().map(|n| name(n)).collect();
        service
    }

    fn graph_errors(services: &[Service]) -> Vec<String> {
        match validate_graph(services) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_sound_graph_passes() {
        // A diamond is not a cycle.
        let services = [
            service("a", &[], &[]),
            service("b", &["a"], &[]),
            service("c", &[], &["a"]),
            service("d", &["b"], &["c", "a"]),
        ];
        assert_eq!(validate_graph(&services), Ok(()));
        assert_eq!(validate_graph(&[]), Ok(()));
    }

    #[test]
    fn missing_dependencies_name_both_services() {
        assert_eq!(
            graph_errors(&[service("netd", &["sysctl"], &["udev"])]),
            [
                "netd.toml: field after: netd is ordered after \"sysctl\", but there is no \
                 service \"sysctl\" (no sysctl.toml)",
                "netd.toml: field requires: netd requires \"udev\", but there is no service \
                 \"udev\" (no udev.toml)",
            ]
        );
    }

    #[test]
    fn self_dependencies() {
        assert_eq!(
            graph_errors(&[service("a", &["a"], &["a"])]),
            [
                "a.toml: field after: a is ordered after itself",
                "a.toml: field requires: a requires itself",
            ]
        );
    }

    #[test]
    fn cycles_name_their_path() {
        assert_eq!(
            graph_errors(&[service("a", &[], &["b"]), service("b", &[], &["a"])]),
            [
                "a.toml: field requires: dependency cycle: a -> b -> a (after and requires must \
              not loop)"
            ]
        );
        // Over after and requires mixed, found once whichever node the search starts from.
        assert_eq!(
            graph_errors(&[
                service("x", &["z"], &[]),
                service("c", &["x"], &[]),
                service("z", &[], &["c"]),
                service("ok", &["x"], &[]),
            ]),
            [
                "c.toml: field after: dependency cycle: c -> x -> z -> c (after and requires must \
              not loop)"
            ]
        );
        // Two separate cycles.
        assert_eq!(
            graph_errors(&[
                service("a", &["b"], &[]),
                service("b", &["a"], &[]),
                service("c", &["d"], &[]),
                service("d", &["c"], &[]),
            ])
            .len(),
            2
        );
    }

    // --- directories ----------------------------------------------------------------------

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn load_dir_reports_every_problem_of_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "good.toml", CMD);
        write(
            d,
            "needs-missing.toml",
            &format!("{CMD}requires = [\"good\", \"ghost\"]\n"),
        );
        write(d, "loop-a.toml", &format!("{CMD}after = [\"loop-b\"]\n"));
        write(
            d,
            "loop-b.toml",
            &format!("{CMD}\nrequires = [\"loop-a\"]\n"),
        );
        write(d, "syntax.toml", "command = [\n");
        write(d, "unknown.toml", &format!("{CMD}colour = \"blue\"\n"));
        write(
            d,
            "values.toml",
            "command = [\"rel\"]\nstop_timeout = \"0s\"\n",
        );
        // Depends on a file that is broken: that file's error is enough.
        write(
            d,
            "needs-broken.toml",
            &format!("{CMD}requires = [\"values\"]\n"),
        );
        write(d, "Bad.toml", CMD);
        // Not definitions.
        write(d, "README.md", "not toml");
        write(d, "netd.toml.bak", "garbage");

        let errors: Vec<String> = load_dir(d)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let p = |file: &str| d.join(file).display().to_string();
        assert_eq!(
            errors,
            [
                format!(
                    "{}: the file name gives the service name: \"Bad\" is not a valid service \
                     name (1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)",
                    p("Bad.toml")
                ),
                format!("{}:1:12: unclosed array, expected `]`", p("syntax.toml")),
                format!(
                    "{}:2:1: field colour: unknown field `colour`, expected one of \
                     `description`, `type`, `command`, `environment`, `working_directory`, \
                     `user`, `group`, `supplementary_groups`, `capabilities`, `after`, \
                     `requires`, `stop_signal`, `start_timeout`, `stop_timeout`, `restart`, \
                     `ready`, `health`, `resources`, `logs`",
                    p("unknown.toml")
                ),
                format!(
                    "{}:1:12: field command: the program \"rel\" must be an absolute path to a \
                     file",
                    p("values.toml")
                ),
                format!(
                    "{}:2:16: field stop_timeout: must be greater than 0",
                    p("values.toml")
                ),
                format!(
                    "{}:2:21: field requires: needs-missing requires \"ghost\", but there is no \
                     service \"ghost\" (no ghost.toml)",
                    p("needs-missing.toml")
                ),
                format!(
                    "{}:2:10: field after: dependency cycle: loop-a -> loop-b -> loop-a (after \
                     and requires must not loop)",
                    p("loop-a.toml")
                ),
            ]
        );
    }

    #[test]
    fn load_dir_of_good_files_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.toml", &format!("{CMD}after = [\"a\"]\n"));
        write(dir.path(), "a.toml", CMD);
        write(
            dir.path(),
            "c.toml",
            "type = \"target\"\nrequires = [\"b\"]\n",
        );
        let services = load_dir(dir.path()).unwrap();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(load_dir(empty.path()), Ok(vec![]));
    }

    #[test]
    fn load_dir_reports_an_unreadable_directory_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let errors = load_dir(&missing).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].source, missing);
        assert!(
            errors[0]
                .reason
                .starts_with("cannot read the service directory: "),
            "{}",
            errors[0]
        );

        std::fs::create_dir(dir.path().join("dir.toml")).unwrap();
        let errors = load_dir(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].source, dir.path().join("dir.toml"));
        assert!(
            errors[0].reason.starts_with("cannot read: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn the_example_definitions_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/services");
        let services = load_dir(&dir).unwrap();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["netd", "network-online", "sysctl"]);

        let netd = &services[0];
        assert_eq!(netd.kind, ServiceType::Notify);
        assert_eq!(netd.readiness, Readiness::Notify);
        assert_eq!(netd.restart.when, RestartWhen::Always);
        assert_eq!(
            netd.capabilities,
            caps::CapsHashSet::from([
                caps::Capability::CAP_NET_ADMIN,
                caps::Capability::CAP_NET_RAW,
                caps::Capability::CAP_NET_BIND_SERVICE,
            ])
        );
        assert_eq!(netd.after, [name("sysctl")]);
        assert!(matches!(
            netd.health.as_ref().map(|h| &h.probe),
            Some(Probe::Exec(_))
        ));
        assert_eq!(
            netd.resources.cpu_max,
            Some(CpuMax {
                quota_us: 50_000,
                period_us: 100_000
            })
        );

        let online = &services[1];
        assert_eq!(online.kind, ServiceType::Target);
        assert_eq!(online.readiness, Readiness::Dependencies);
        assert_eq!(online.requires, [name("netd")]);

        let sysctl = &services[2];
        assert_eq!(sysctl.kind, ServiceType::Oneshot);
        assert_eq!(sysctl.readiness, Readiness::ExitSuccess);
        assert_eq!(sysctl.restart.when, RestartWhen::OnFailure);

        // Their accounts exist in an image that only knows root.
        assert_eq!(validate_accounts(&services, &Users::parse("", "")), Ok(()));
    }

    #[test]
    fn accounts_are_checked_against_the_image() {
        let users = Users::parse("netd:x:101:101::/:/bin/false\n", "adm:x:4:\n");
        let mut good = service("good", &[], &[]);
        good.user = Account::Name("netd".to_owned());
        good.group = Some(Account::Name("adm".to_owned()));
        good.supplementary_groups = vec![Account::Id(55)];
        let mut bad = service("bad", &[], &[]);
        bad.user = Account::Name("ghost".to_owned());
        bad.group = Some(Account::Name("wheel".to_owned()));
        bad.supplementary_groups = vec![
            Account::Name("adm".to_owned()),
            Account::Name("video".to_owned()),
        ];
        let mut target = parse_service("t", Path::new("t.toml"), "type = \"target\"\n").unwrap();
        target.user = Account::Name("ignored".to_owned());
        let errors: Vec<String> = validate_accounts(&[good, bad, target], &users)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "bad.toml: field user: unknown user \"ghost\" (not in /etc/passwd)",
                "bad.toml: field group: unknown group \"wheel\" (not in /etc/group)",
                "bad.toml: field supplementary_groups: unknown group \"video\" (not in \
                 /etc/group)",
            ]
        );
    }
}
