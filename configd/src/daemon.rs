//! The service: gather the configuration documents, resolve them, write the node's
//! configuration, tell the supervisor and netd; without a valid configuration, stay in
//! maintenance and keep trying.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, Record};
use shoal_config::machine::ServiceCheck;
use shoal_config::node::{NodeFacts, expand_placeholders, for_node};
use shoal_config::sources::{Document, SourceKind, inline_settings, resolve};
use shoal_config::{ConfigError, MachineConfig};

use shoal_cluster_api::types::{MaintenanceAccepted, MaintenanceStatus};

use crate::http::{FetchOptions, Request, Trust, Url, fetch_with, parse_pin};
use crate::maintenance::Pushed;
use crate::netwatch::NetWatch;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays while a source fails: every 250 ms for the first 5 s (the network is usually
/// just coming up, and an unreachable network fails at once, so trying costs nothing), then
/// backing off to every 5 s. An address or route that changes cuts a delay short (see
/// [`wait`]).
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
    /// The instance metadata service (`host:port`).
    pub imds_endpoint: String,
    /// Name servers for host names in `shoal.config=` (netd writes the file).
    pub resolv_conf: PathBuf,
    /// The maintenance API's port (0: any free one, for tests).
    pub maintenance_port: u16,
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
            imds_endpoint: crate::imds::ENDPOINT.into(),
            resolv_conf: crate::http::RESOLV_CONF.into(),
            maintenance_port: crate::maintenance::PORT,
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
    /// Milliseconds each source took to read, by source name.
    ms: BTreeMap<String, f64>,
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
    let mut maintenance: Option<crate::maintenance::Server> = None;
    // Opened before the first round, so that the network coming up during it is not missed.
    let netwatch = match NetWatch::open() {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::debug!("cannot watch the network ({e}); retrying on the timer alone");
            None
        }
    };
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
                apply(options, &config, &facts, sources, gathered.ms, started)?;
                keep(&cache, &config);
                return Ok(());
            }
            Err(errors) => {
                // A source that cannot be reached now: the last good configuration carries
                // the node until it can.
                let waited = started.elapsed() >= options.source_wait;
                if errors.is_empty() && !waited {
                    // Unreachable for now: keep trying before settling for anything else.
                    match wait(
                        maintenance.as_ref().map(|m| &m.pushed),
                        netwatch.as_ref(),
                        retry_delay(attempt),
                    ) {
                        Woken::Pushed(pushed) => {
                            return take_pushed(
                                options,
                                *pushed,
                                &facts,
                                &cache,
                                &maintenance,
                                started,
                            );
                        }
                        Woken::NetworkChanged => {}
                        Woken::Elapsed => attempt += 1,
                    }
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
                        gathered.ms,
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
                    if maintenance.is_none() {
                        maintenance = start_maintenance(options, &facts, &reason);
                    }
                    if let Some(server) = &maintenance {
                        server.set_reason(&reason);
                    }
                    emit(Event::ConfigMaintenance {
                        reason: reason.clone(),
                        api_port: maintenance.as_ref().map(|m| m.port),
                    });
                    maintenance_reported = reason;
                }
            }
        }
        match wait(
            maintenance.as_ref().map(|m| &m.pushed),
            netwatch.as_ref(),
            retry_delay(attempt),
        ) {
            Woken::Pushed(pushed) => {
                return take_pushed(options, *pushed, &facts, &cache, &maintenance, started);
            }
            Woken::NetworkChanged => {}
            Woken::Elapsed => attempt += 1,
        }
    }
}

/// Why a wait between two rounds ended.
#[derive(Debug)]
enum Woken {
    /// An operator pushed a configuration through the maintenance API.
    Pushed(Box<Pushed>),
    /// An address or route changed: a source that was unreachable may be reachable now, so
    /// the next round starts at once. The backoff stays where it was, so that the network
    /// coming up (a burst of changes) does not hurry configd into its slow retries.
    NetworkChanged,
    /// The whole delay passed.
    Elapsed,
}

/// How long a push may wait to be noticed while the network is watched too.
const PUSH_CHECK: Duration = Duration::from_millis(100);

/// Waits `delay`, or less if an operator pushes a configuration (to `pushed`, the maintenance
/// API's channel, once it runs) or the network changes meanwhile (with a `netwatch`).
fn wait(
    pushed: Option<&std::sync::mpsc::Receiver<Pushed>>,
    netwatch: Option<&NetWatch>,
    delay: Duration,
) -> Woken {
    let Some(netwatch) = netwatch else {
        return match pushed {
            Some(pushed) => pushed
                .recv_timeout(delay)
                .map_or(Woken::Elapsed, |p| Woken::Pushed(Box::new(p))),
            None => {
                std::thread::sleep(delay);
                Woken::Elapsed
            }
        };
    };
    let deadline = Instant::now() + delay;
    loop {
        if let Some(configuration) = pushed.and_then(|p| p.try_recv().ok()) {
            return Woken::Pushed(Box::new(configuration));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Woken::Elapsed;
        }
        // One poll cannot wait on the channel as well: look at it between slices.
        let slice = if pushed.is_some() {
            left.min(PUSH_CHECK)
        } else {
            left
        };
        if netwatch.wait(slice) {
            tracing::debug!("the network changed; trying the sources again at once");
            return Woken::NetworkChanged;
        }
    }
}

/// Starts the maintenance API and shows its one-time token on the console. Without it (the
/// port is taken, no randomness), the node still retries its sources.
fn start_maintenance(
    options: &Options,
    facts: &NodeFacts,
    reason: &str,
) -> Option<crate::maintenance::Server> {
    let status = MaintenanceStatus {
        reason: reason.to_string(),
        mac: facts.macs.first().map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        }),
        uuid: facts.uuid.clone(),
        serial: facts.serial.clone(),
    };
    let token = match crate::maintenance::random_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("maintenance API: no random token: {e}");
            return None;
        }
    };
    let port = options.maintenance_port;
    let started = crate::maintenance::start(
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        token.clone(),
        status.clone(),
        check_service,
    )
    .or_else(|_| {
        crate::maintenance::start(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            token,
            status,
            check_service,
        )
    });
    match started {
        Ok(server) => {
            // The console is where the operator reads it: shown once, in full.
            println!(
                "shoal-configd: maintenance: push this node a configuration with\n  \
                 shoalctl config push --node <this node's address>:{} --token {} FILE",
                server.port,
                server.token.display()
            );
            Some(server)
        }
        Err(e) => {
            tracing::error!("maintenance API: cannot listen on port {port}: {e:#}");
            None
        }
    }
}

/// Applies and keeps a configuration an operator pushed, answers them, and returns once the
/// answer is out.
fn take_pushed(
    options: &Options,
    pushed: Pushed,
    facts: &NodeFacts,
    cache: &Path,
    maintenance: &Option<crate::maintenance::Server>,
    started: Instant,
) -> anyhow::Result<()> {
    let Pushed {
        config,
        from,
        answer,
    } = pushed;
    let applied = apply(
        options,
        &config,
        facts,
        vec![format!("api: pushed from {from}")],
        BTreeMap::new(),
        started,
    );
    let result = match &applied {
        Ok(()) => Ok(MaintenanceAccepted {
            hostname: for_node(&config, facts).hostname,
            kept: keep(cache, &config),
        }),
        Err(e) => Err(format!("{e:#}")),
    };
    let _ = answer.send(result);
    applied?;
    if let Some(server) = maintenance
        && server
            .answered
            .recv_timeout(Duration::from_secs(5))
            .is_err()
    {
        tracing::warn!("maintenance API: the answer to {from} may not have gone out");
    }
    Ok(())
}

/// Reads every source this node has.
fn gather(options: &Options, cmdline: &str, url: Option<&str>, facts: &NodeFacts) -> Gathered {
    let mut gathered = Gathered::default();
    let mut clock = Instant::now();
    let mut lap = |gathered: &mut Gathered, name: &str| {
        let ms = (clock.elapsed().as_micros() as f64 / 100.0).round() / 10.0;
        gathered.ms.insert(name.to_string(), ms);
        clock = Instant::now();
    };
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
    lap(&mut gathered, "esp");
    match crate::nocloud::read(&options.sys, &options.dev, &options.run_dir.join("nocloud")) {
        Ok(Some(documents)) => gathered.documents.extend(documents),
        Ok(None) => {}
        Err(reason) => gathered.failures.push(("nocloud".into(), reason)),
    }
    lap(&mut gathered, "nocloud");
    match crate::imds::Mode::from_cmdline(cmdline) {
        Err(reason) => gathered
            .failures
            .push(("kernel command line".into(), reason)),
        Ok(mode) => {
            let dmi = crate::imds::Dmi::read(&options.sys);
            if let Some(why) = crate::imds::should_ask(mode, &dmi) {
                tracing::debug!("asking the instance metadata service ({why})");
                match crate::imds::read(&options.imds_endpoint) {
                    Ok(Some(documents)) => gathered.documents.extend(documents),
                    Ok(None) => {}
                    Err(reason) => gathered.failures.push((format!("imds ({why})"), reason)),
                }
                lap(&mut gathered, "imds");
            }
        }
    }
    if let Some(url) = url {
        match fetch_url(options, cmdline, url, facts) {
            Ok(doc) => gathered.documents.push(doc),
            Err(reason) => gathered
                .failures
                .push((format!("shoal.config={url}"), reason)),
        }
        lap(&mut gathered, "url");
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

/// How `shoal.config=https://...` is trusted: the public web PKI, or the certificate key
/// `shoal.config.pin=sha256:<hex>` names (a PXE server's self-signed certificate).
fn trust(cmdline: &str) -> Result<Trust, String> {
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("shoal.config.pin="))
    {
        None => Ok(Trust::WebPki),
        Some(pin) => parse_pin(pin)
            .map(Trust::Pin)
            .map_err(|e| format!("shoal.config.pin: {e}")),
    }
}

fn fetch_url(
    options: &Options,
    cmdline: &str,
    url: &str,
    facts: &NodeFacts,
) -> Result<Document, String> {
    let expanded = expand_placeholders(url, facts).map_err(|e| e.to_string())?;
    let parsed = Url::parse(&expanded).map_err(|e| e.to_string())?;
    let fetch_options = FetchOptions {
        trust: trust(cmdline)?,
        resolv_conf: options.resolv_conf.clone(),
        nameservers: None,
    };
    let response = fetch_with(&Request::get(parsed), FETCH_TIMEOUT, &fetch_options)
        .map_err(|e| e.to_string())?;
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

/// What `config.toml` was before this run wrote it, as far as netd goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreviousFile {
    /// There was none: netd has read none (the defaults), or will read the new one when it
    /// starts.
    Absent,
    /// There was one, whatever it held (valid or not), or it could not be told: netd may have
    /// taken something from it.
    Present,
}

impl PreviousFile {
    fn at(path: &Path) -> PreviousFile {
        // Followed through links, as netd reads it.
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PreviousFile::Absent,
            _ => PreviousFile::Present,
        }
    }
}

/// Whether netd must be asked to reload for `effective`, the node's configuration about to be
/// written. netd takes only `[network]` and `node.hostname` from the file, and one that is
/// missing stands for the defaults and no hostname; so with no file before, a configuration
/// that sets neither changes nothing for netd, and the reload (a D-Bus connection and a call,
/// on the boot's critical path) is skipped. Anything else is reloaded.
fn netd_reload_needed(previous: PreviousFile, effective: &MachineConfig) -> bool {
    previous == PreviousFile::Present
        || effective.network != shoal_config::network::NetworkConfig::default()
        || effective.node.hostname.is_some()
}

/// Writes the node's configuration, reports it, and has netd pick it up.
fn apply(
    options: &Options,
    config: &MachineConfig,
    facts: &NodeFacts,
    sources: Vec<String>,
    source_ms: BTreeMap<String, f64>,
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
    let previous = PreviousFile::at(&path);
    write_private(&path, &text)?;
    emit(Event::ConfigResolved {
        sources,
        node_section: node.matched.map(|i| i as u32),
        ms: (started.elapsed().as_micros() as f64 / 100.0).round() / 10.0,
        source_ms,
    });
    if netd_reload_needed(previous, &effective) {
        reload_netd(&options.netd_socket);
    } else {
        tracing::info!("netd reload skipped: the configuration changes nothing netd uses");
    }
    Ok(())
}

/// Keeps the configuration for the next boot, if there is persistent storage. Says whether
/// it did.
fn keep(cache: &Path, config: &MachineConfig) -> bool {
    let Some(dir) = cache.parent() else {
        return false;
    };
    if !dir.is_dir() {
        return false; // diskless: nothing survives a reboot anyway
    }
    match toml::to_string(config) {
        Ok(text) => match write_private(cache, &text) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("cannot keep the configuration in {}: {e}", cache.display());
                false
            }
        },
        Err(e) => {
            tracing::warn!("cannot serialise the configuration: {e}");
            false
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> MachineConfig {
        MachineConfig::parse("test.toml", text, None).unwrap()
    }

    #[test]
    fn netd_reloads_over_a_previous_file() {
        let with_network = config("[network]\nnaming = \"mac\"\n");
        assert!(netd_reload_needed(PreviousFile::Present, &with_network));
        // netd may have taken something from the file before: even the defaults must reach it.
        assert!(netd_reload_needed(PreviousFile::Present, &config("")));
    }

    #[test]
    fn with_no_previous_file_the_defaults_need_no_reload() {
        assert!(!netd_reload_needed(PreviousFile::Absent, &config("")));
        assert!(!netd_reload_needed(
            PreviousFile::Absent,
            &config("[node]\nlabels = { rack = \"r9\" }\n")
        ));
    }

    #[test]
    fn with_no_previous_file_a_hostname_or_a_network_setting_needs_a_reload() {
        assert!(netd_reload_needed(
            PreviousFile::Absent,
            &config("[node]\nhostname = \"edge-7\"\n")
        ));
        assert!(netd_reload_needed(
            PreviousFile::Absent,
            &config(
                "[network]\n[[network.links]]\nmatch = { name = \"eth0\" }\n\
                 addresses = [\"10.0.0.5/24\"]\n"
            )
        ));
    }

    #[test]
    fn the_defaults_written_read_back_as_netd_reads_no_file() {
        // Skipping is sound only if netd, reading the file written, gets what it has from none.
        let text = toml::to_string(&config("")).unwrap();
        let read = config(&text);
        assert_eq!(
            read.network,
            shoal_config::network::NetworkConfig::default()
        );
        assert_eq!(read.node.hostname, None);
    }

    #[test]
    fn any_previous_file_counts_even_an_invalid_or_unreadable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(PreviousFile::at(&path), PreviousFile::Absent);
        std::fs::write(&path, "[network]\nnaming = \"mac\"\n").unwrap();
        assert_eq!(PreviousFile::at(&path), PreviousFile::Present);
        std::fs::write(&path, "[network\nnot toml").unwrap();
        assert_eq!(PreviousFile::at(&path), PreviousFile::Present);
        assert!(netd_reload_needed(PreviousFile::at(&path), &config("")));
        // Not readable as a file.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(PreviousFile::at(&path), PreviousFile::Present);
        // A dangling link: netd finds no file there.
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(dir.path().join("gone"), &link).unwrap();
        assert_eq!(PreviousFile::at(&link), PreviousFile::Absent);
    }

    fn pushed() -> Pushed {
        Pushed {
            config: config(""),
            from: "[::1]:7443".parse().unwrap(),
            answer: tokio::sync::oneshot::channel().0,
        }
    }

    #[test]
    fn without_a_watch_it_waits_the_delay_or_until_a_push() {
        let started = Instant::now();
        assert!(matches!(
            wait(None, None, Duration::from_millis(50)),
            Woken::Elapsed
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(pushed()).unwrap();
        assert!(matches!(
            wait(Some(&rx), None, Duration::from_secs(10)),
            Woken::Pushed(_)
        ));
    }

    #[test]
    fn a_network_change_or_a_push_cuts_the_wait_short() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root for a network namespace");
            return;
        }
        crate::netwatch::in_new_namespace(|| {
            let watch = NetWatch::open().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();

            // Nothing happens: the whole delay, with the channel looked at in slices.
            let started = Instant::now();
            assert!(matches!(
                wait(Some(&rx), Some(&watch), Duration::from_millis(250)),
                Woken::Elapsed
            ));
            assert!(started.elapsed() >= Duration::from_millis(250));

            // A push while the network is watched is seen within a slice.
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                tx.send(pushed()).unwrap();
            });
            let started = Instant::now();
            assert!(matches!(
                wait(Some(&rx), Some(&watch), Duration::from_secs(10)),
                Woken::Pushed(_)
            ));
            assert!(started.elapsed() < Duration::from_secs(2));
            sender.join().unwrap();

            // The network changing (lo coming up: its addresses and routes) ends it at once.
            crate::netwatch::bring_lo_up();
            let started = Instant::now();
            assert!(matches!(
                wait(Some(&rx), Some(&watch), Duration::from_secs(10)),
                Woken::NetworkChanged
            ));
            assert!(started.elapsed() < Duration::from_secs(2));
        });
    }
}
