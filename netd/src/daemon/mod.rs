//! The daemon: one tokio thread that carries out the plan, runs a DHCP client per link, keeps
//! resolv.conf current, and tells the supervisor when the node is online.
//!
//! Inputs (netlink events, DHCP packets, timers, signals) come in one `select!` loop; every
//! decision is made by the pure modules (`plan`, `dhcp::client`, `online`, `resolv`) and carried
//! out here through `netlink`.

pub mod socket;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use shoal_api::network::{self as api, NetworkRequest};
use shoal_boot_events::{Event as BootEvent, Record};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::NetworkConfig;
use crate::dhcp::client::{Action, Client, ClientConfig, Destination, LostReason};
use crate::dhcp::lease::{Lease, Remembered};
use crate::dhcp::packet::{Message, SERVER_PORT};
use crate::netlink::{self, DeviceInfo, Link, Netlink, RouteOrigin, RouteSpec};
use crate::online::{IfaceStatus, online};
use crate::plan::{Managed, Plan, Virtual, plan};
use crate::resolv::{DnsSources, ntp_servers, render_resolv_conf, resolve, write_if_changed};

/// Metric of routes that come from leases (the kernel's default for static routes is 0, so a
/// configured gateway wins over a leased one).
const LEASE_METRIC: u32 = 1024;

/// Where netd reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// netd's configuration file (TOML, the `[network]` schema); missing means defaults.
    pub config: PathBuf,
    /// The kernel command line.
    pub cmdline: PathBuf,
    pub sys: PathBuf,
    /// `resolv.conf` and `ntp-servers` go here (`/run/shoal`).
    pub run_dir: PathBuf,
    /// Remembered leases, for INIT-REBOOT after a restart.
    pub state_dir: PathBuf,
    /// The state API's socket (`org.shoal.Network1`).
    pub api_socket: PathBuf,
    /// Besides root, this group may reload the configuration through the API.
    pub admin_gid: Option<u32>,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            config: PathBuf::from(shoal_config::NODE_CONFIG),
            cmdline: PathBuf::from("/proc/cmdline"),
            sys: PathBuf::from("/sys"),
            run_dir: PathBuf::from("/run/shoal"),
            state_dir: PathBuf::from("/run/shoal/netd"),
            api_socket: PathBuf::from(shoal_api::network::SOCKET),
            admin_gid: None,
        }
    }
}

/// Prints a boot event on stdout (the supervisor puts it on the console).
fn emit(event: BootEvent) {
    println!("{}", Record::now(event).to_line());
}

/// The configuration as read from its sources.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged configuration; when the file had errors, the defaults stand in for it.
    pub config: NetworkConfig,
    /// The hostname `ip=` or the configuration gives, and which of them.
    pub hostname: Option<(String, &'static str)>,
    /// The hostname was chosen on purpose (`shoal.hostname=`, `ip=` or the configuration's
    /// `node.hostname`): leases do not change it.
    pub hostname_pinned: bool,
    pub sources: Vec<String>,
    /// Empty when every source was valid.
    pub errors: Vec<String>,
}

/// Reads the configuration file and the command line into one configuration. A file with
/// errors is rejected whole (the defaults stand in for it, so a typo never leaves a node off the
/// network); everything is reported in the `network.config` event.
pub fn load_config(paths: &Paths) -> Loaded {
    let mut config_hostname = None;
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    let file = match std::fs::read_to_string(&paths.config) {
        Ok(text) => {
            sources.push(paths.config.display().to_string());
            // The node's resolved machine configuration: netd takes its [network] section.
            match shoal_config::MachineConfig::parse(
                &paths.config.display().to_string(),
                &text,
                None,
            ) {
                Ok(c) => {
                    config_hostname = c.node.hostname;
                    c.network
                }
                Err(es) => {
                    errors.extend(es.iter().map(ToString::to_string));
                    NetworkConfig::default()
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NetworkConfig::default(),
        Err(e) => {
            errors.push(format!("{}: {e}", paths.config.display()));
            NetworkConfig::default()
        }
    };
    let cmdline_text = std::fs::read_to_string(&paths.cmdline).unwrap_or_default();
    let (config, hostname, notes) = match crate::cmdline::parse(&cmdline_text) {
        Ok(cmdline) => {
            if cmdline != crate::cmdline::CmdlineNetwork::default() {
                sources.push("kernel command line".into());
            }
            match crate::merge::merge(file.clone(), &cmdline) {
                Ok(m) => (m.config, m.hostname, m.notes),
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| format!("kernel command line: {e}")));
                    (file, None, Vec::new())
                }
            }
        }
        Err(e) => {
            errors.push(format!("kernel command line: {e}"));
            (file, None, Vec::new())
        }
    };
    for note in &notes {
        tracing::warn!("{note}");
    }
    for error in &errors {
        tracing::error!("{error}");
    }
    emit(BootEvent::NetworkConfig {
        sources: sources.clone(),
        errors: errors.clone(),
    });
    // The kernel command line comes last and wins.
    let hostname = hostname
        .map(|h| (h, "ip="))
        .or(config_hostname.map(|h| (h, "config")));
    let hostname_pinned = hostname.is_some()
        || cmdline_text
            .split_whitespace()
            .any(|w| w.starts_with("shoal.hostname="));
    Loaded {
        config,
        hostname,
        hostname_pinned,
        sources,
        errors,
    }
}

/// A DHCP packet from a link's socket.
struct Packet {
    index: u32,
    bytes: Vec<u8>,
}

/// One managed interface.
struct Iface {
    index: u32,
    name: String,
    managed: Managed,
    static_applied: bool,
    dhcp: Option<Dhcp>,
}

struct Dhcp {
    client: Client,
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    mac: [u8; 6],
    /// Routes this lease installed (to remove them when it ends).
    routes: Vec<RouteSpec>,
}

impl Drop for Dhcp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub struct Daemon {
    nl: Netlink,
    paths: Paths,
    /// The configuration in force (the last good one).
    config: NetworkConfig,
    /// What the last (re)load found, errors included.
    loaded: Loaded,
    started: Instant,
    links: BTreeMap<u32, Link>,
    devices: BTreeMap<u32, DeviceInfo>,
    ifaces: BTreeMap<String, Iface>,
    /// The interface whose lease provides the default route.
    default_owner: Option<String>,
    online_reported: bool,
    online_timed_out: bool,
    packets: mpsc::UnboundedSender<Packet>,
    seed: u64,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("ifaces", &self.ifaces.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Runs netd until SIGTERM or SIGINT.
pub async fn run(paths: Paths) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = load_config(&paths);
    if let Some((hostname, source)) = loaded.hostname.clone() {
        set_hostname(&paths.run_dir, &hostname, source);
    }
    let (nl, mut messages) = Netlink::connect()?;
    let (tx, mut packets) = mpsc::unbounded_channel();
    let mut daemon = Daemon {
        nl,
        paths,
        config: loaded.config.clone(),
        loaded,
        started,
        links: BTreeMap::new(),
        devices: BTreeMap::new(),
        ifaces: BTreeMap::new(),
        default_owner: None,
        online_reported: false,
        online_timed_out: false,
        packets: tx,
        seed: random_seed(),
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // The state API: requests come into this loop, so answers see one consistent state.
    let (api_tx, mut api_rx) = mpsc::channel::<NetworkRequest>(16);
    match api::bind(&daemon.paths.api_socket) {
        Ok(listener) => {
            let access = api::Access {
                admin_gid: daemon.paths.admin_gid,
            };
            tokio::spawn(api::serve(listener, access, api_tx));
        }
        // Without its API netd still does its job; the error says why shoalctl cannot reach it.
        Err(e) => tracing::error!("network API: {e}; netd runs on without it"),
    }
    daemon.refresh().await;
    tracing::debug!("links configured {:?} after start", started.elapsed());
    loop {
        let deadline = daemon.next_deadline();
        tokio::select! {
            event = netlink::next_event(&mut messages) => match event {
                Some(netlink::Event::AddressOrRoute) => {}
                Some(event) => {
                    tracing::debug!("netlink: {event:?}");
                    daemon.refresh().await;
                }
                None => anyhow::bail!("the netlink connection closed"),
            },
            Some(packet) = packets.recv() => daemon.on_packet(packet).await,
            () = sleep_until(deadline) => daemon.on_timers().await,
            Some(request) = api_rx.recv() => match request {
                NetworkRequest::Status(reply) => {
                    let _ = reply.send(daemon.status().await);
                }
                NetworkRequest::Reload(reply) => {
                    let _ = reply.send(daemon.reload().await);
                }
            },
            _ = sighup.recv() => {
                daemon.reload().await;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    daemon.shutdown().await;
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// A seed for transaction ids and jitter. They need variety between nodes, not secrecy, and
/// must not wait: early in boot the kernel's CRNG is often not ready yet, and reading
/// `/dev/urandom` then stalls for a second under TCG while the kernel gathers entropy.
/// `GRND_INSECURE` never blocks; the time and PID make two nodes differ even if it fails.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own; with
    // GRND_INSECURE it never blocks.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_INSECURE) };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let random = if n == 8 { u64::from_le_bytes(bytes) } else { 0 };
    random ^ nanos ^ u64::from(std::process::id()).rotate_left(32)
}

fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_micros() as f64 / 1000.0 * 10.0).round() / 10.0
}

impl Daemon {
    /// Re-reads the links and carries out the plan until nothing is left to do (renames and
    /// new bonds change the links the plan sees).
    async fn refresh(&mut self) {
        for _ in 0..4 {
            if let Err(e) = self.read_links().await {
                tracing::error!("{e}");
                return;
            }
            let plan = plan(
                &self.config,
                &self.links.values().cloned().collect::<Vec<_>>(),
                &self.devices,
            );
            for pending in &plan.pending {
                tracing::debug!("{pending}");
            }
            let changed = self.reshape(&plan).await;
            if !changed {
                self.configure(&plan).await;
                break;
            }
        }
        self.check_online();
    }

    /// Reads the configuration again. With errors, the configuration in force stays and the
    /// errors are returned; otherwise the new one is applied at once.
    pub async fn reload(&mut self) -> Vec<String> {
        let loaded = load_config(&self.paths);
        let errors = loaded.errors.clone();
        if errors.is_empty() {
            tracing::info!("configuration reloaded");
            if let Some((hostname, source)) = &loaded.hostname {
                set_hostname(&self.paths.run_dir, hostname, source);
            }
            self.config = loaded.config.clone();
            self.loaded = loaded;
            self.refresh().await;
        } else {
            tracing::error!("configuration rejected; the last good one stays in force");
            self.loaded.errors = errors.clone();
        }
        errors
    }

    /// Undoes what netd configured on an interface: gives a lease back, removes static
    /// addresses and routes. Used when its settings change or it stops being managed.
    async fn unconfigure(&mut self, name: &str) {
        let now = Instant::now();
        let actions = match self.ifaces.get_mut(name).and_then(|i| i.dhcp.as_mut()) {
            Some(dhcp) => dhcp.client.release(now),
            None => Vec::new(),
        };
        self.carry_out(name, actions).await;
        let Some(iface) = self.ifaces.remove(name) else {
            return;
        };
        if iface.static_applied {
            remove_static(&self.nl, &iface).await;
        }
        if self.default_owner.as_deref() == Some(name) {
            self.default_owner = None;
        }
    }

    async fn read_links(&mut self) -> Result<(), netlink::NetlinkError> {
        let links = self.nl.links().await?;
        self.links = links.into_iter().map(|l| (l.index, l)).collect();
        self.devices = self
            .links
            .values()
            .map(|l| (l.index, netlink::device_info(&self.paths.sys, &l.name)))
            .collect();
        Ok(())
    }

    /// Renames, creates and attaches; returns whether the set of links changed.
    async fn reshape(&mut self, plan: &Plan) -> bool {
        let mut changed = false;
        for (index, name) in &plan.renames {
            let old = self
                .links
                .get(index)
                .map(|l| l.name.clone())
                .unwrap_or_default();
            let was_up = self.links.get(index).is_some_and(|l| l.up);
            if was_up {
                let _ = self.nl.set_up(*index, false).await;
            }
            match self.nl.rename(*index, name).await {
                Ok(()) => {
                    tracing::info!("renamed {old} to {name}");
                    changed = true;
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        for virtual_link in &plan.create {
            let result = match virtual_link {
                Virtual::Vlan { config, parent } => {
                    self.nl
                        .add_vlan(config.name.as_str(), *parent, config.id)
                        .await
                }
                Virtual::Bond(bond) => self.nl.add_bond(bond).await,
                Virtual::Bridge(bridge) => {
                    self.nl.add_bridge(bridge.name.as_str(), bridge.stp).await
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!("created {}", virtual_link.name());
                    changed = true;
                }
                Err(e) if e.errno() == Some(libc::EEXIST) => changed = true,
                Err(e) => tracing::error!("{e}"),
            }
        }
        for (port, master) in &plan.attach {
            let Some(master_index) = self
                .links
                .values()
                .find(|l| &l.name == master)
                .map(|l| l.index)
            else {
                continue;
            };
            // Ports join a bond while down; the bond brings them up.
            let _ = self.nl.set_up(*port, false).await;
            match self.nl.set_master(*port, master_index).await {
                Ok(()) => {
                    changed = true;
                    let _ = self.nl.set_up(*port, true).await;
                    if let Some(bond) = self.config.bonds.iter().find(|b| b.name.as_str() == master)
                        && let Some(primary) = &bond.primary
                        && self
                            .links
                            .get(port)
                            .is_some_and(|l| l.name == primary.as_str())
                        && let Err(e) = self.nl.set_bond_primary(master, *port).await
                    {
                        tracing::warn!("{e}");
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        changed
    }

    /// Brings managed interfaces up, applies static settings and starts or pauses DHCP.
    async fn configure(&mut self, plan: &Plan) {
        // Interfaces that went away (or changed index) are forgotten; the kernel removed
        // their addresses and routes with them.
        let stale: Vec<String> = self
            .ifaces
            .iter()
            .filter(|(name, iface)| {
                !plan.managed.contains_key(*name)
                    || self
                        .links
                        .get(&iface.index)
                        .is_none_or(|l| &l.name != *name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let link_gone = self
                .ifaces
                .get(&name)
                .is_none_or(|i| self.links.get(&i.index).is_none_or(|l| l.name != name));
            if link_gone {
                // The kernel removed its addresses and routes with it.
                self.ifaces.remove(&name);
                if self.default_owner.as_ref() == Some(&name) {
                    self.default_owner = None;
                }
            } else {
                self.unconfigure(&name).await;
            }
        }
        // Interfaces whose settings changed (a reload) start over.
        let changed: Vec<String> = self
            .ifaces
            .iter()
            .filter(|(name, iface)| plan.managed.get(*name).is_some_and(|m| *m != iface.managed))
            .map(|(name, _)| name.clone())
            .collect();
        for name in changed {
            tracing::info!("{name}: settings changed, reconfiguring");
            self.unconfigure(&name).await;
        }
        let now = Instant::now();
        for (name, managed) in &plan.managed {
            let Some(link) = self.links.values().find(|l| &l.name == name).cloned() else {
                continue;
            };
            if !link.up
                && let Err(e) = self.nl.set_up(link.index, true).await
            {
                tracing::error!("{e}");
                continue;
            }
            if let Some(mtu) = managed.mtu
                && link.mtu != u32::from(mtu)
                && let Err(e) = self.nl.set_mtu(link.index, u32::from(mtu)).await
            {
                tracing::error!("{e}");
            }
            let iface = self.ifaces.entry(name.clone()).or_insert_with(|| Iface {
                index: link.index,
                name: name.clone(),
                managed: managed.clone(),
                static_applied: false,
                dhcp: None,
            });
            if !iface.static_applied && !managed.addresses.is_empty() {
                iface.static_applied = apply_static(&self.nl, iface, &mut self.default_owner).await;
            }
            if !managed.dhcp {
                continue;
            }
            let Some(mac) = link.mac else {
                continue;
            };
            tracing::debug!(
                "{name}: up {} carrier {} dhcp {}",
                link.up,
                link.carrier,
                managed.dhcp
            );
            let running = iface
                .dhcp
                .as_ref()
                .is_some_and(|d| d.client.state() != crate::dhcp::client::State::Stopped);
            let has_socket = iface.dhcp.is_some();
            if link.carrier && !running {
                if !has_socket {
                    match self.open_dhcp(link.index, name, mac) {
                        Ok(dhcp) => {
                            if let Some(iface) = self.ifaces.get_mut(name) {
                                iface.dhcp = Some(dhcp);
                            }
                        }
                        Err(e) => {
                            tracing::error!("DHCP on {name}: {e}");
                            continue;
                        }
                    }
                }
                let remembered = self.remembered(mac);
                let actions = match self.ifaces.get_mut(name).and_then(|i| i.dhcp.as_mut()) {
                    Some(dhcp) => dhcp.client.start(now, remembered),
                    None => continue,
                };
                tracing::info!("{name}: carrier up, DHCP started");
                self.carry_out(name, actions).await;
            } else if !link.carrier && running {
                tracing::info!("{name}: carrier lost, DHCP paused");
                if let Some(dhcp) = self.ifaces.get_mut(name).and_then(|i| i.dhcp.as_mut()) {
                    dhcp.client.pause();
                }
            }
        }
        self.write_resolver();
    }

    fn open_dhcp(&mut self, index: u32, name: &str, mac: [u8; 6]) -> std::io::Result<Dhcp> {
        let socket = Arc::new(UdpSocket::from_std(socket::dhcp_socket(name)?)?);
        let reader_socket = socket.clone();
        let tx = self.packets.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match reader_socket.recv_from(&mut buf).await {
                    Ok((n, _)) => {
                        if tx
                            .send(Packet {
                                index,
                                bytes: buf[..n].to_vec(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("DHCP socket: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        // Each link its own sequence; the MAC keeps identical VMs booted together apart.
        let mut mac_bits = [0u8; 8];
        mac_bits[..6].copy_from_slice(&mac);
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(u64::from(index))
            ^ u64::from_le_bytes(mac_bits);
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty() && h != "(none)" && h != "localhost");
        Ok(Dhcp {
            client: Client::new(
                ClientConfig {
                    mac,
                    hostname,
                    client_id: None,
                },
                self.seed,
            ),
            socket,
            reader,
            mac,
            routes: Vec::new(),
        })
    }

    fn lease_file(&self, mac: [u8; 6]) -> PathBuf {
        lease_file(&self.paths.state_dir, mac)
    }

    fn remembered(&self, mac: [u8; 6]) -> Option<Ipv4Addr> {
        let text = std::fs::read_to_string(self.lease_file(mac)).ok()?;
        let r: Remembered = serde_json::from_str(&text).ok()?;
        r.is_valid(SystemTime::now()).then_some(r.address)
    }

    async fn on_packet(&mut self, packet: Packet) {
        let Some(name) = self
            .ifaces
            .values()
            .find(|i| i.index == packet.index)
            .map(|i| i.name.clone())
        else {
            return;
        };
        let message = match Message::decode(&packet.bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("{name}: ignoring a malformed DHCP packet: {e}");
                return;
            }
        };
        let actions = match self.ifaces.get_mut(&name).and_then(|i| i.dhcp.as_mut()) {
            Some(dhcp) => dhcp.client.receive(Instant::now(), &message),
            None => return,
        };
        self.carry_out(&name, actions).await;
        self.check_online();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let clients = self
            .ifaces
            .values()
            .filter_map(|i| i.dhcp.as_ref().and_then(|d| d.client.deadline()));
        let online = (!self.online_reported).then(|| self.started + self.config.online.timeout);
        clients.chain(online).min()
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .ifaces
            .values()
            .filter(|i| {
                i.dhcp
                    .as_ref()
                    .and_then(|d| d.client.deadline())
                    .is_some_and(|t| t <= now)
            })
            .map(|i| i.name.clone())
            .collect();
        for name in due {
            let actions = match self.ifaces.get_mut(&name).and_then(|i| i.dhcp.as_mut()) {
                Some(dhcp) => dhcp.client.on_timeout(now),
                None => continue,
            };
            self.carry_out(&name, actions).await;
        }
        if !self.online_reported && now >= self.started + self.config.online.timeout {
            self.report_online(true, Vec::new());
        }
        self.check_online();
    }

    /// Does what a DHCP client asked for.
    async fn carry_out(&mut self, name: &str, actions: Vec<Action>) {
        let mut resolver_changed = false;
        for action in actions {
            match action {
                Action::Send { message, to } => {
                    let Some(dhcp) = self.ifaces.get(name).and_then(|i| i.dhcp.as_ref()) else {
                        continue;
                    };
                    let target = match to {
                        Destination::Broadcast => Ipv4Addr::BROADCAST,
                        Destination::Server(ip) => ip,
                    };
                    let bytes = message.encode();
                    if let Err(e) = dhcp
                        .socket
                        .send_to(&bytes, SocketAddrV4::new(target, SERVER_PORT))
                        .await
                    {
                        tracing::warn!("{name}: cannot send a DHCP packet to {target}: {e}");
                    }
                }
                Action::Bound(lease) => {
                    self.apply_lease(name, &lease).await;
                    if let Some(hostname) = &lease.host_name
                        && !self.loaded.hostname_pinned
                        && crate::config::is_domain(hostname)
                    {
                        set_hostname(&self.paths.run_dir, hostname, "dhcp");
                    }
                    emit(BootEvent::DhcpBound {
                        link: name.to_string(),
                        address: format!("{}/{}", lease.address, lease.prefix_len),
                        gateway: lease.gateway().map(|g| g.to_string()),
                        dns: lease.dns_servers.iter().map(ToString::to_string).collect(),
                        lease_s: lease.lease_time,
                        ms: ms_since(self.started),
                    });
                    resolver_changed = true;
                }
                Action::Renewed(lease) => {
                    self.apply_lease(name, &lease).await;
                    emit(BootEvent::DhcpRenewed {
                        link: name.to_string(),
                        address: format!("{}/{}", lease.address, lease.prefix_len),
                        lease_s: lease.lease_time,
                    });
                    resolver_changed = true;
                }
                Action::Lost { lease, reason } => {
                    self.remove_lease(name, &lease, &reason).await;
                    emit(BootEvent::DhcpLost {
                        link: name.to_string(),
                        address: format!("{}/{}", lease.address, lease.prefix_len),
                        reason: match reason {
                            LostReason::Expired => "expired".into(),
                            LostReason::Nak(None) => "nak".into(),
                            LostReason::Nak(Some(m)) => format!("nak: {m}"),
                            LostReason::Released => "released".into(),
                            LostReason::Replaced => "replaced".into(),
                        },
                    });
                    resolver_changed = true;
                }
            }
        }
        if resolver_changed {
            self.write_resolver();
        }
    }

    async fn apply_lease(&mut self, name: &str, lease: &Lease) {
        let Some(iface) = self.ifaces.get(name) else {
            return;
        };
        let index = iface.index;
        let now = Instant::now();
        if let Err(e) = self
            .nl
            .add_address(
                index,
                IpAddr::V4(lease.address),
                lease.prefix_len,
                lease.remaining(now),
            )
            .await
        {
            tracing::error!("{name}: {e}");
        }
        if let Some(mtu) = lease.mtu
            && iface.managed.mtu.is_none()
            && self
                .links
                .get(&index)
                .is_some_and(|l| l.mtu != u32::from(mtu))
            && let Err(e) = self.nl.set_mtu(index, u32::from(mtu)).await
        {
            tracing::warn!("{name}: {e}");
        }
        // The first lease with a default route owns the default route.
        let owns_default = match &self.default_owner {
            None => lease.gateway().is_some(),
            Some(owner) => owner == name,
        };
        if owns_default {
            self.default_owner = Some(name.to_string());
        }
        let routes: Vec<RouteSpec> = lease
            .routes
            .iter()
            .filter(|r| r.prefix_len != 0 || owns_default)
            .map(|r| RouteSpec {
                destination: r.destination,
                prefix_len: r.prefix_len,
                gateway: (!r.gateway.is_unspecified()).then_some(r.gateway),
                index,
                metric: LEASE_METRIC,
                source: Some(lease.address),
                origin: RouteOrigin::Dhcp,
            })
            .collect();
        for route in &routes {
            if let Err(e) = self.nl.add_route(route).await {
                tracing::error!("{name}: {e}");
            }
        }
        if let Some(dhcp) = self.ifaces.get_mut(name).and_then(|i| i.dhcp.as_mut()) {
            dhcp.routes = routes;
            let remembered = lease.remember(now, SystemTime::now());
            let path = lease_file(&self.paths.state_dir, dhcp.mac);
            if let Ok(json) = serde_json::to_string(&remembered)
                && let Err(e) = write_if_changed(&path, &json)
            {
                tracing::warn!("cannot remember the lease in {}: {e}", path.display());
            }
        }
    }

    async fn remove_lease(&mut self, name: &str, lease: &Lease, reason: &LostReason) {
        let Some(iface) = self.ifaces.get_mut(name) else {
            return;
        };
        let index = iface.index;
        let routes = iface
            .dhcp
            .as_mut()
            .map(|d| std::mem::take(&mut d.routes))
            .unwrap_or_default();
        let mac = iface.dhcp.as_ref().map(|d| d.mac);
        for route in &routes {
            let _ = self.nl.del_route(route).await;
        }
        if let Err(e) = self
            .nl
            .del_address(index, IpAddr::V4(lease.address), lease.prefix_len)
            .await
            && e.errno() != Some(libc::EADDRNOTAVAIL)
        {
            tracing::warn!("{name}: {e}");
        }
        if matches!(reason, LostReason::Released | LostReason::Nak(_))
            && let Some(mac) = mac
        {
            let _ = std::fs::remove_file(self.lease_file(mac));
        }
        if self.default_owner.as_deref() == Some(name) {
            self.default_owner = None;
            // Hand the default route to another bound interface.
            let next = self.ifaces.values().find_map(|i| {
                let lease = i.dhcp.as_ref()?.client.lease()?.clone();
                lease.gateway().map(|_| (i.name.clone(), lease))
            });
            if let Some((other, lease)) = next {
                self.apply_lease(&other, &lease).await;
            }
        }
    }

    /// DNS servers, search domains and NTP servers in force.
    fn resolver_state(&self) -> (Vec<IpAddr>, Vec<String>, Vec<String>) {
        let leases: Vec<&Lease> = self
            .ifaces
            .values()
            .filter_map(|i| i.dhcp.as_ref().and_then(|d| d.client.lease()))
            .collect();
        let sources = DnsSources {
            configured_servers: self.config.dns.servers.clone(),
            configured_search: self.config.dns.search.clone(),
            leases: leases
                .iter()
                .map(|l| {
                    (
                        l.dns_servers.clone(),
                        l.domain_name.clone(),
                        l.domain_search.clone(),
                    )
                })
                .collect(),
            use_leases: self.config.dns.from_dhcp,
        };
        let (servers, search) = resolve(&sources);
        let ntp = ntp_servers(
            &self.config.ntp.servers,
            &leases
                .iter()
                .map(|l| l.ntp_servers.clone())
                .collect::<Vec<_>>(),
            self.config.ntp.from_dhcp,
        );
        (servers, search, ntp)
    }

    fn write_resolver(&self) {
        let (servers, search, ntp) = self.resolver_state();
        let resolv = self.paths.run_dir.join("resolv.conf");
        if let Err(e) = write_if_changed(&resolv, &render_resolv_conf(&servers, &search)) {
            tracing::error!("cannot write {}: {e}", resolv.display());
        }
        let ntp_path = self.paths.run_dir.join("ntp-servers");
        let mut text = ntp.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        if let Err(e) = write_if_changed(&ntp_path, &text) {
            tracing::error!("cannot write {}: {e}", ntp_path.display());
        }
    }

    fn check_online(&mut self) {
        if self.online_reported {
            return;
        }
        let statuses: Vec<IfaceStatus> = self
            .ifaces
            .values()
            .map(|i| {
                let lease = i.dhcp.as_ref().and_then(|d| d.client.lease());
                IfaceStatus {
                    name: i.name.clone(),
                    required: i.managed.required_for_online,
                    configured: i.static_applied || lease.is_some(),
                    routable: i.static_applied || lease.is_some_and(|l| l.gateway().is_some()),
                }
            })
            .collect();
        if let Some(links) = online(self.config.online.require, &statuses) {
            self.report_online(false, links);
        }
    }

    fn report_online(&mut self, timed_out: bool, links: Vec<String>) {
        self.online_reported = true;
        self.online_timed_out = timed_out;
        if timed_out {
            tracing::warn!(
                "not online after {:?}; reporting ready anyway so that boot goes on",
                self.config.online.timeout
            );
        }
        emit(BootEvent::NetworkOnline {
            ms: ms_since(self.started),
            timed_out,
            links,
        });
        socket::notify("READY=1\nSTATUS=online");
    }

    /// What the state API shows: links with their addresses and leases, routes, resolvers.
    async fn status(&self) -> api::NetworkStatus {
        let addresses = self.nl.addresses().await.unwrap_or_else(|e| {
            tracing::warn!("{e}");
            Vec::new()
        });
        let routes = self.nl.routes().await.unwrap_or_else(|e| {
            tracing::warn!("{e}");
            Vec::new()
        });
        let now = Instant::now();
        let name_of = |index: u32| {
            self.links
                .get(&index)
                .map(|l| l.name.clone())
                .unwrap_or_default()
        };
        let links = self
            .links
            .values()
            .map(|link| {
                let device = self.devices.get(&link.index).cloned().unwrap_or_default();
                let iface = self.ifaces.get(&link.name);
                let dhcp = iface
                    .and_then(|i| i.dhcp.as_ref())
                    .map(|d| lease_status(&d.client, now))
                    .into_iter()
                    .collect();
                api::LinkStatus {
                    name: link.name.clone(),
                    index: link.index,
                    mac: link
                        .mac
                        .map(|m| crate::config::Mac(m).to_string())
                        .unwrap_or_default(),
                    kind: link.kind.clone().unwrap_or_default(),
                    driver: device.driver.unwrap_or_default(),
                    bus_path: device.bus_path.unwrap_or_default(),
                    up: link.up,
                    carrier: link.carrier,
                    mtu: link.mtu,
                    master: link.master.map(name_of).unwrap_or_default(),
                    managed: iface.is_some(),
                    addresses: addresses
                        .iter()
                        .filter(|a| a.index == link.index)
                        .map(|a| format!("{}/{}", a.address, a.prefix_len))
                        .collect(),
                    dhcp,
                }
            })
            .collect();
        let routes = routes
            .iter()
            .map(|r| api::RouteStatus {
                destination: format!("{}/{}", r.destination, r.prefix_len),
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                link: r.index.map(name_of).unwrap_or_default(),
                metric: r.metric,
                protocol: r.protocol.clone(),
            })
            .collect();
        let (servers, search, ntp) = self.resolver_state();
        let mut sources = self.loaded.sources.clone();
        if sources.is_empty() {
            sources.push("defaults".into());
        }
        api::NetworkStatus {
            online: self.online_reported,
            online_timed_out: self.online_timed_out,
            links,
            routes,
            dns_servers: servers.iter().map(ToString::to_string).collect(),
            dns_search: search,
            ntp_servers: ntp,
            config_sources: sources,
            config_errors: self.loaded.errors.clone(),
        }
    }

    /// Gives every lease back.
    async fn shutdown(&mut self) {
        let names: Vec<String> = self.ifaces.keys().cloned().collect();
        let now = Instant::now();
        for name in names {
            let actions = match self.ifaces.get_mut(&name).and_then(|i| i.dhcp.as_mut()) {
                Some(dhcp) => dhcp.client.release(now),
                None => continue,
            };
            self.carry_out(&name, actions).await;
        }
        socket::notify("STOPPING=1");
    }
}

/// The routes of an interface's static configuration.
fn static_routes(iface: &Iface) -> Vec<RouteSpec> {
    let source = iface
        .managed
        .addresses
        .iter()
        .find_map(|a| match a.address {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
    let mut routes = Vec::new();
    if let Some(IpAddr::V4(gw)) = iface.managed.gateway {
        routes.push((Ipv4Addr::UNSPECIFIED, 0, Some(gw)));
    }
    for route in &iface.managed.routes {
        if let IpAddr::V4(to) = route.to.address {
            let via = match route.via {
                Some(IpAddr::V4(v)) => Some(v),
                _ => None,
            };
            routes.push((to, route.to.prefix_len, via));
        }
    }
    routes
        .into_iter()
        .map(|(destination, prefix_len, gateway)| RouteSpec {
            destination,
            prefix_len,
            gateway,
            index: iface.index,
            metric: 0,
            source,
            origin: RouteOrigin::Static,
        })
        .collect()
}

/// Removes an interface's static addresses (their routes go with them).
async fn remove_static(nl: &Netlink, iface: &Iface) {
    for route in static_routes(iface) {
        let _ = nl.del_route(&route).await;
    }
    for address in &iface.managed.addresses {
        if let Err(e) = nl
            .del_address(iface.index, address.address, address.prefix_len)
            .await
            && e.errno() != Some(libc::EADDRNOTAVAIL)
        {
            tracing::warn!("{}: {e}", iface.name);
        }
    }
}

/// Sets the kernel's hostname and `<run_dir>/hostname` (where `/etc/hostname` points).
fn set_hostname(run_dir: &Path, hostname: &str, source: &str) {
    let current = nix::unistd::gethostname().ok();
    if current.as_deref().and_then(|h| h.to_str()) == Some(hostname) {
        return;
    }
    if let Err(e) = nix::unistd::sethostname(hostname) {
        tracing::warn!("cannot set the hostname {hostname}: {e}");
        return;
    }
    if let Err(e) = write_if_changed(&run_dir.join("hostname"), &format!("{hostname}\n")) {
        tracing::warn!("cannot write {}: {e}", run_dir.join("hostname").display());
    }
    emit(BootEvent::Hostname {
        hostname: hostname.to_string(),
        source: source.to_string(),
    });
}

/// A DHCP client's state for the API.
fn lease_status(client: &Client, now: Instant) -> api::LeaseStatus {
    let until = |t: Option<Instant>| {
        t.map_or(u32::MAX, |t| {
            u32::try_from(t.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
        })
    };
    let mut status = api::LeaseStatus {
        state: client.state().name().to_string(),
        ..Default::default()
    };
    if let Some(lease) = client.lease() {
        status.address = format!("{}/{}", lease.address, lease.prefix_len);
        status.server = lease.server.to_string();
        status.gateway = lease.gateway().map(|g| g.to_string()).unwrap_or_default();
        status.lease_s = lease.lease_time;
        status.remaining_s = lease.remaining(now);
        status.renew_in_s = until(lease.renew_at());
        status.rebind_in_s = until(lease.rebind_at());
        status.dns = lease.dns_servers.iter().map(ToString::to_string).collect();
        status.domain_search = lease.domain_search.clone();
        status.ntp = lease.ntp_servers.iter().map(ToString::to_string).collect();
    }
    status
}

/// Where the lease of the link with this MAC is remembered.
fn lease_file(state_dir: &Path, mac: [u8; 6]) -> PathBuf {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    state_dir.join(format!("lease-{hex}.json"))
}

/// Adds an interface's static addresses and routes; returns whether all of them are in place.
async fn apply_static(nl: &Netlink, iface: &Iface, default_owner: &mut Option<String>) -> bool {
    let mut ok = true;
    for address in &iface.managed.addresses {
        if let Err(e) = nl
            .add_address(iface.index, address.address, address.prefix_len, u32::MAX)
            .await
        {
            tracing::error!("{}: {e}", iface.name);
            ok = false;
        }
    }
    if iface.managed.gateway.is_some_and(|g| g.is_ipv4()) {
        // A configured gateway is the default route; leases do not take it over.
        *default_owner = Some(iface.name.clone());
    }
    for spec in static_routes(iface) {
        if let Err(e) = nl.add_route(&spec).await {
            tracing::error!("{}: {e}", iface.name);
            ok = false;
        }
    }
    emit(BootEvent::NetworkStatic {
        link: iface.name.clone(),
        addresses: iface
            .managed
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
    });
    ok
}

/// Where the daemon's files are, for tests that run it against a fixture tree.
pub fn paths_under(root: &Path) -> Paths {
    Paths {
        config: root.join("run/shoal/config.toml"),
        cmdline: root.join("proc/cmdline"),
        sys: PathBuf::from("/sys"),
        run_dir: root.join("run/shoal"),
        state_dir: root.join("run/shoal/netd"),
        api_socket: root.join("run/shoal/netd.sock"),
        admin_gid: None,
    }
}
