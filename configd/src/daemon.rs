//! The service: gather the configuration documents, resolve them, write the node's
//! configuration, tell the supervisor and netd; without a valid configuration, stay in
//! maintenance and keep trying.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, Record};
use shoal_config::machine::ServiceCheck;
use shoal_config::node::{NodeFacts, expand_placeholders, for_node};
use shoal_config::sources::{Document, SourceKind, inline_settings, resolve};
use shoal_config::{ConfigError, MachineConfig};

use crate::http::{Request, Url, fetch};

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays while a source fails: every 250 ms for the first 5 s (the network is usually
/// just coming up, and an unreachable network fails at once, so trying costs nothing), then
/// backing off to every 5 s.
fn retry_delay(attempt: usize) -> Duration {
    match attempt {
        0..20 => Duration::from_millis(250),
        20..25 => Duration::from_secs(1),
        25..30 => Duration::from_secs(2),
        _ => Duration::from_secs(5),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub cmdline: PathBuf,
    pub sys: PathBuf,
    pub proc: PathBuf,
    /// Block devices, for a NoCloud volume (`CIDATA`).
    pub dev: PathBuf,
    /// Where PID 1 mounts the ESP of a disk boot (read there rather than mounted again).
    pub esp_mount: PathBuf,
    /// The node's resolved configuration goes to `<run_dir>/config.toml`.
    pub run_dir: PathBuf,
    /// Where the last good configuration is kept across reboots, when writable.
    pub state_dir: PathBuf,
    /// netd's API socket, to have it reload.
    pub netd_socket: PathBuf,
    /// How long an unreachable source is retried before the last good configuration is used
    /// (the network may still be coming up).
    pub source_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cmdline: "/proc/cmdline".into(),
            sys: "/sys".into(),
            proc: "/proc".into(),
            dev: "/dev".into(),
            esp_mount: crate::esp::BOOT_MOUNT.into(),
            run_dir: "/run/shoal".into(),
            state_dir: "/var/lib/shoal".into(),
            netd_socket: shoal_api::network::SOCKET.into(),
            source_wait: Duration::from_secs(30),
        }
    }
}

fn emit(event: Event) {
    println!("{}", Record::now(event).to_line());
}

/// The supervisor's own parser checks `[services.*]`.
fn check_service(name: &str, text: &str) -> Vec<(String, String)> {
    match shoal_supervisor::config::parse_service_all(name, Path::new(name), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.field.unwrap_or_default(), e.reason))
            .collect(),
    }
}

/// What one round of gathering found.
#[derive(Debug, Default)]
struct Gathered {
    documents: Vec<Document>,
    /// Sources that were asked for but could not be read: (source, reason).
    failures: Vec<(String, String)>,
}

/// Runs until a configuration is in force, then returns (the supervisor keeps the service as
/// done). Returns an error only when it cannot run at all.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let cmdline = std::fs::read_to_string(&options.cmdline).unwrap_or_default();
    let facts = crate::facts::read(&options.sys, &options.proc);
    let url = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("shoal.config="))
        .map(|u| u.trim_matches('"').to_string());
    let cache = options.state_dir.join("config.toml");
    let checker: ServiceCheck<'_> = &check_service;
    let mut attempt = 0usize;
    let mut maintenance_reported = String::new();
    let mut failures_reported: Vec<(String, String)> = Vec::new();
    loop {
        let gathered = gather(options, &cmdline, url.as_deref(), &facts);
        // Each distinct failure once, not every retry.
        for failure in &gathered.failures {
            if !failures_reported.contains(failure) {
                emit(Event::ConfigSourceFailed {
                    source: failure.0.clone(),
                    reason: failure.1.clone(),
                });
                failures_reported.push(failure.clone());
            }
        }
        let outcome = if gathered.failures.is_empty() {
            resolve(&gathered.documents, Some(checker))
        } else {
            Err(Vec::new())
        };
        match outcome {
            Ok(config) => {
                let sources = gathered
                    .documents
                    .iter()
                    .map(|d| format!("{}: {}", d.kind.name(), d.origin))
                    .collect();
                apply(options, &config, &facts, sources, started)?;
                keep(&cache, &config);
                return Ok(());
            }
            Err(errors) => {
                // A source that cannot be reached now: the last good configuration carries
                // the node until it can.
                let waited = started.elapsed() >= options.source_wait;
                if errors.is_empty() && !waited {
                    // Unreachable for now: keep trying before settling for anything else.
                    std::thread::sleep(retry_delay(attempt));
                    attempt += 1;
                    continue;
                }
                // Unreachable for too long, or serving an invalid document: the last good
                // configuration stays in force (the invalid one is reported, never applied).
                if let Some(cached) = read_cache(&cache, checker) {
                    if !errors.is_empty() {
                        emit(Event::ConfigSourceFailed {
                            source: "configuration".into(),
                            reason: errors
                                .iter()
                                .map(ConfigError::to_string)
                                .collect::<Vec<_>>()
                                .join("; "),
                        });
                    }
                    tracing::warn!(
                        "a configuration source failed; using the last good configuration"
                    );
                    apply(
                        options,
                        &cached,
                        &facts,
                        vec![format!("cache: {}", cache.display())],
                        started,
                    )?;
                    return Ok(());
                }
                let reason = if errors.is_empty() {
                    gathered
                        .failures
                        .iter()
                        .map(|(s, r)| format!("{s}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                } else {
                    errors
                        .iter()
                        .map(ConfigError::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                if reason != maintenance_reported {
                    tracing::error!("no usable configuration: {reason}; retrying");
                    emit(Event::ConfigMaintenance {
                        reason: reason.clone(),
                    });
                    maintenance_reported = reason;
                }
            }
        }
        std::thread::sleep(retry_delay(attempt));
        attempt += 1;
    }
}

/// Reads every source this node has.
fn gather(options: &Options, cmdline: &str, url: Option<&str>, facts: &NodeFacts) -> Gathered {
    let mut gathered = Gathered::default();
    match crate::esp::read(
        &options.sys,
        &options.dev,
        &options.esp_mount,
        &options.run_dir.join("esp"),
    ) {
        Ok(Some(document)) => gathered.documents.push(document),
        Ok(None) => {}
        Err(reason) => gathered.failures.push(("esp".into(), reason)),
    }
    match crate::nocloud::read(&options.sys, &options.dev, &options.run_dir.join("nocloud")) {
        Ok(Some(documents)) => gathered.documents.extend(documents),
        Ok(None) => {}
        Err(reason) => gathered.failures.push(("nocloud".into(), reason)),
    }
    if let Some(url) = url {
        match fetch_url(url, facts) {
            Ok(doc) => gathered.documents.push(doc),
            Err(reason) => gathered
                .failures
                .push((format!("shoal.config={url}"), reason)),
        }
    }
    match inline_settings(cmdline) {
        Ok(Some(doc)) => gathered.documents.push(doc),
        Ok(None) => {}
        Err(errors) => {
            for e in errors {
                gathered.failures.push((
                    "kernel command line".into(),
                    format!("{}: {}", e.location, e.reason),
                ));
            }
        }
    }
    gathered
}

fn fetch_url(url: &str, facts: &NodeFacts) -> Result<Document, String> {
    let expanded = expand_placeholders(url, facts).map_err(|e| e.to_string())?;
    let parsed = Url::parse(&expanded).map_err(|e| e.to_string())?;
    let response = fetch(&Request::get(parsed), FETCH_TIMEOUT).map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!("{expanded}: HTTP {}", response.status));
    }
    let text =
        String::from_utf8(response.body).map_err(|_| format!("{expanded}: not UTF-8 text"))?;
    Ok(Document {
        kind: SourceKind::Url,
        origin: expanded,
        text,
    })
}

/// Writes the node's configuration, reports it, and has netd pick it up.
fn apply(
    options: &Options,
    config: &MachineConfig,
    facts: &NodeFacts,
    sources: Vec<String>,
    started: Instant,
) -> anyhow::Result<()> {
    let node = for_node(config, facts);
    let mut effective = config.clone();
    effective.node.hostname = node.hostname.clone();
    effective.node.labels = node.labels.clone();
    effective.node.voter = node.voter;
    effective.network = node.network.clone();
    effective.nodes.clear();
    let text = toml::to_string(&effective)?;
    let path = options.run_dir.join("config.toml");
    write_private(&path, &text)?;
    emit(Event::ConfigResolved {
        sources,
        node_section: node.matched.map(|i| i as u32),
        ms: (started.elapsed().as_micros() as f64 / 100.0).round() / 10.0,
    });
    reload_netd(&options.netd_socket);
    Ok(())
}

/// Keeps the configuration for the next boot, if there is persistent storage.
fn keep(cache: &Path, config: &MachineConfig) {
    let Some(dir) = cache.parent() else {
        return;
    };
    if !dir.is_dir() {
        return; // diskless: nothing survives a reboot anyway
    }
    match toml::to_string(config) {
        Ok(text) => {
            if let Err(e) = write_private(cache, &text) {
                tracing::warn!("cannot keep the configuration in {}: {e}", cache.display());
            }
        }
        Err(e) => tracing::warn!("cannot serialise the configuration: {e}"),
    }
}

fn read_cache(cache: &Path, checker: ServiceCheck<'_>) -> Option<MachineConfig> {
    let text = std::fs::read_to_string(cache).ok()?;
    MachineConfig::parse(&cache.display().to_string(), &text, Some(checker)).ok()
}

/// Writes a file only root can read (it holds the cluster secret), atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Asks netd to read the new configuration; netd not running yet is fine (it reads the file
/// when it starts).
fn reload_netd(socket: &Path) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot ask netd to reload: {e}");
            return;
        }
    };
    runtime.block_on(async {
        match shoal_api::network::NetworkClient::connect(socket).await {
            Ok(client) => match client.reload().await {
                Ok(errors) if errors.is_empty() => tracing::info!("netd reloaded"),
                Ok(errors) => tracing::error!("netd rejected the network section: {errors:?}"),
                Err(e) => tracing::warn!("netd reload: {e}"),
            },
            Err(e) => tracing::info!("netd not reachable ({e}); it reads the file when it starts"),
        }
    });
}
