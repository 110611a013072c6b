//! The daemon: drives [`Formation`] with announcements over UDP, runs consensus, serves the
//! peer service, and keeps the cluster's membership and node records up to date.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use shoal_boot_events::{Event, Record};
use shoal_config::machine::MachineConfig;
use tokio::net::{TcpListener, UdpSocket};

use crate::formation::{Action, Announcement, Formation, Hint, NodeId, Settings, Timing};
use crate::keys::{ClusterKeys, MAX_ANNOUNCEMENT};
use crate::network::Network;
use crate::peer::{Channel, Failure, JoinReply, JoinRequest, PeerError, Pool, Request, Response};
use crate::raft::{MemLog, Raft, StateMachine};
use crate::state::{Command, NodeInfo, Outcome, Value};
use crate::voters::{self, Member, Policy};

/// How the daemon runs; the machine configuration supplies the rest.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's machine configuration (written by shoal-configd).
    pub config: PathBuf,
    /// Where the peer service (TCP) and announcements (UDP) listen; default
    /// `0.0.0.0:<cluster.port>`.
    pub listen: Option<SocketAddr>,
    /// The address other nodes reach this one at; default: the source address the kernel picks
    /// towards the first seed, or the LAN broadcast address.
    pub advertise: Option<SocketAddr>,
    /// Where the cluster API listens; default: the peer service's address, port `api.port`.
    pub api_listen: Option<SocketAddr>,
    /// Where the identity, the consensus log and snapshots are kept; `None`: in memory (a
    /// diskless node, which rejoins as a new member after a restart).
    pub data_dir: Option<PathBuf>,
    pub timing: Timing,
    /// Raft timing in milliseconds: heartbeat, election timeout low and high.
    pub raft_timing: (u64, u64, u64),
    /// Snapshot after this many log entries, and keep none before it (default: 5000 entries,
    /// 1000 kept for followers slightly behind).
    pub snapshot_every: Option<u64>,
    /// Voter replacement and health.
    pub unhealthy_after: Duration,
    pub replace_after: Duration,
    /// A non-voter silent this long leaves the membership, and its record the state.
    pub forget_after: Duration,
    /// The hardware inventory file to publish (`shoal_inventory::RUN_PATH`); `None`: none.
    pub inventory: Option<PathBuf>,
    /// A/B updates of this node (when it booted from a disk slot).
    pub update: crate::update::UpdateOptions,
    /// Where the local API (`org.shoal.Cluster1`, D-Bus peer to peer) listens.
    pub local_socket: PathBuf,
    /// Besides root, this group may use the key-value space through the local API.
    pub admin_gid: Option<u32>,
    /// The image's os-release, whose `VERSION_ID` the node record publishes
    /// ([`crate::image::OS_RELEASE`]).
    pub os_release: PathBuf,
    /// How host names among the seeds are resolved (`/etc/resolv.conf`).
    pub resolver: crate::seeds::Resolver,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: PathBuf::from(shoal_config::NODE_CONFIG),
            listen: None,
            advertise: None,
            api_listen: None,
            data_dir: default_data_dir(),
            timing: Timing::default(),
            raft_timing: (50, 150, 300),
            snapshot_every: None,
            unhealthy_after: Duration::from_secs(3),
            replace_after: Duration::from_secs(30),
            inventory: Some(PathBuf::from(shoal_inventory::RUN_PATH)),
            forget_after: Duration::from_secs(600),
            update: crate::update::UpdateOptions::default(),
            local_socket: PathBuf::from(shoal_api::cluster::SOCKET),
            admin_gid: None,
            os_release: PathBuf::from(crate::image::OS_RELEASE),
            resolver: crate::seeds::Resolver::default(),
        }
    }
}

/// `/var/lib/shoal/cluster` when `/var/lib/shoal` exists (persistent state), else none.
fn default_data_dir() -> Option<PathBuf> {
    let state = std::path::Path::new("/var/lib/shoal");
    state.is_dir().then(|| state.join("cluster"))
}

fn emit(event: Event) {
    println!("{}", Record::now(event).to_line());
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the daemon until it fails; returns at once when the configuration has no cluster
/// secret (the node then stays out of any cluster, and says so).
pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(options))
}

/// What every task of the daemon shares.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) raft: Raft,
    pub(crate) machine: StateMachine,
    pool: Pool,
    keys: ClusterKeys,
    advertise: SocketAddr,
    /// What this node publishes about itself; the slot's state changes when it is blessed.
    info: Mutex<NodeInfo>,
    /// When a member's heartbeat is too old to call it healthy.
    pub(crate) unhealthy_after: Duration,
    /// This node's A/B updates.
    pub(crate) updater: Arc<crate::update::Updater>,
    /// A leader has sent this node log entries or a snapshot.
    contacted: AtomicBool,
    joining: AtomicBool,
    changing: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// Where [`Node::route`] sends a request.
enum Route {
    Here,
    Leader(NodeId),
}

/// A peer request's answer timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Node::catch_up`] waits before it asks for the read index again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(100);
/// How long a write or a linearizable read may wait for a quorum.
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

async fn serve(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    // A broken image, for the update tests: clusterd never comes up, so the node never
    // becomes healthy and its trial runs out.
    let cmdline = std::fs::read_to_string(&options.update.cmdline).unwrap_or_default();
    if cmdline
        .split_whitespace()
        .any(|w| w == "shoaltest.clusterd_exit")
    {
        anyhow::bail!("shoaltest.clusterd_exit: clusterd fails as a broken image's would");
    }
    let text = std::fs::read_to_string(&options.config)
        .with_context(|| format!("cannot read {}", options.config.display()))?;
    let source = options.config.display().to_string();
    let config = MachineConfig::parse(&source, &text, None).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("{}", list.join("; "))
    })?;
    let updater = Arc::new(crate::update::Updater::new(
        &options.update,
        &config.update.trusted_keys,
        shoal_update::node::TrialPolicy {
            tries: config.update.tries,
            timeout: config.update.trial_timeout,
        },
    ));
    updater.notice_failed_update();
    let cluster = &config.cluster;
    let Some(secret) = &cluster.secret else {
        // No cluster to rejoin: running with the network online is all the health there is.
        updater.bless();
        let reason = format!(
            "{source} has no cluster.secret: without one this node neither forms nor joins a \
             cluster (`shoalctl gen config` makes a configuration with one)"
        );
        tracing::warn!("{reason}");
        emit(Event::ClusterDisabled { reason });
        return Ok(());
    };
    let keys = ClusterKeys::new(secret.expose());
    let listen = options
        .listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, cluster.port)));
    // Names are resolved in the background once the runtime runs; the address this node
    // advertises is chosen towards the first address seed (or the LAN).
    let (seeds, seed_names) = crate::seeds::split(&cluster.seeds);
    let advertise = options
        .advertise
        .unwrap_or_else(|| SocketAddr::new(primary_address(cluster.port, &seeds), listen.port()));
    let udp = UdpSocket::bind(listen)
        .await
        .with_context(|| format!("cannot listen for announcements on udp {listen}"))?;
    udp.set_broadcast(true)?;
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for peers on tcp {listen}"))?;

    let identity = match &options.data_dir {
        Some(dir) => crate::identity::load_or_create(dir)
            .with_context(|| format!("the node identity in {}", dir.display()))?,
        None => crate::identity::ephemeral().context("a node identity")?,
    };
    let id = identity.id;
    let (log, machine) = match &options.data_dir {
        Some(dir) => {
            let path = dir.join(crate::identity::LOG_FILE);
            let (log, discarded) =
                MemLog::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            if discarded > 0 {
                tracing::warn!(
                    "{}: cut off a torn tail of {discarded} bytes",
                    path.display()
                );
            }
            let snapshot = dir.join(crate::identity::SNAPSHOT_FILE);
            let machine = StateMachine::open(&snapshot)
                .with_context(|| format!("cannot read {}", snapshot.display()))?;
            (log, machine)
        }
        None => (MemLog::default(), StateMachine::default()),
    };
    let restored = log.is_used().await;
    let (heartbeat, low, high) = options.raft_timing;
    let raft_config = openraft::Config {
        cluster_name: cluster.name.clone(),
        heartbeat_interval: heartbeat,
        election_timeout_min: low,
        election_timeout_max: high,
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            options.snapshot_every.unwrap_or(5000),
        ),
        max_in_snapshot_log_to_keep: if options.snapshot_every.is_some() {
            0
        } else {
            1000
        },
        ..Default::default()
    }
    .validate()
    .context("raft timing")?;
    let pool = Pool::new(keys.clone());
    let raft = Raft::new(
        id,
        Arc::new(raft_config),
        Network { pool: pool.clone() },
        log,
        machine.clone(),
    )
    .await
    .context("cannot start consensus")?;
    let hint = match config.node.voter {
        shoal_config::machine::VoterHint::Auto => Hint::Auto,
        shoal_config::machine::VoterHint::Prefer => Hint::Prefer,
        shoal_config::machine::VoterHint::Never => Hint::Never,
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut info = NodeInfo {
        hostname,
        addr: advertise.to_string(),
        labels: config.node.labels.clone(),
        version: crate::image::version(&options.os_release),
        hint,
        public_key: identity.public_key.clone(),
        slot: None,
        slot_state: None,
    };
    set_booted(&mut info, updater.booted());
    let node = Arc::new(Node {
        id,
        name: cluster.name.clone(),
        raft,
        machine,
        pool,
        keys,
        advertise,
        info: Mutex::new(info),
        unhealthy_after: options.unhealthy_after,
        updater: updater.clone(),
        contacted: AtomicBool::new(false),
        joining: AtomicBool::new(false),
        changing: AtomicBool::new(false),
    });
    let booted = node.info();
    tracing::info!(
        node = id,
        cluster = %cluster.name,
        %listen,
        %advertise,
        expected = cluster.expected_size,
        version = %booted.version,
        slot = booted.slot.as_deref().unwrap_or("none (booted over the network)"),
        "clusterd started"
    );
    // Whether this node is a member sets the pace at which seed names are resolved.
    let (member_tx, member_rx) = tokio::sync::watch::channel(false);
    let resolved_seeds = crate::seeds::spawn(seed_names, options.resolver.clone(), member_rx);

    tokio::spawn(accept_peers(tcp, node.clone()));
    let api_listen = options
        .api_listen
        .unwrap_or(SocketAddr::new(listen.ip(), config.api.port));
    start_api(&config, secret, api_listen, &node).await?;
    // Without its local API the node still serves the cluster; the error says why local
    // services cannot reach it.
    match crate::local::start(&options.local_socket, options.admin_gid, node.clone()) {
        Ok(()) => tracing::info!(socket = %options.local_socket.display(), "local API"),
        Err(e) => tracing::error!("local API: {e}; clusterd runs on without it"),
    }

    let settings = Settings {
        cluster: cluster.name.clone(),
        expected: cluster.expected_size,
        voters: cluster.voters,
        hint,
        timing: options.timing,
    };
    let policy = Policy {
        voters: cluster.voters as usize,
        unhealthy_after: options.unhealthy_after,
        replace_after: options.replace_after,
        forget_after: options.forget_after,
    };
    // A node with consensus state from an earlier run is a member already: it never forms.
    let mut formation = if restored {
        tracing::info!(
            node = format!("{id:016x}"),
            "consensus state restored from {}",
            options
                .data_dir
                .as_deref()
                .map_or("memory".into(), |d| d.display().to_string())
        );
        Formation::member(
            settings,
            id,
            advertise,
            unix_ms(),
            identity.cluster_id.unwrap_or_default(),
            started.elapsed(),
        )
    } else {
        Formation::new(settings, id, advertise, unix_ms(), started.elapsed())
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_announce = Duration::ZERO;
    let mut last_announced = formation.announced();
    let mut next_duty = Duration::ZERO;
    let mut reported_member = false;
    let mut registered = false;
    let mut hardware = options
        .inventory
        .as_deref()
        .map(crate::hardware::Watcher::new);
    let publishing = Arc::new(AtomicBool::new(false));
    let forgotten = Arc::new(AtomicBool::new(false));
    let mut last_leader: Option<NodeId> = None;
    let mut buf = vec![0u8; MAX_ANNOUNCEMENT + 1];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            received = udp.recv_from(&mut buf) => {
                if let Ok((len, from)) = received
                    && let Some(announcement) = open(&node.keys, &buf[..len], from)
                {
                    let asker = announcement.addr;
                    if formation.receive(announcement, started.elapsed()) {
                        send(&udp, &node.keys, &formation.announcement(), asker).await;
                    }
                }
            }
        }
        let now = started.elapsed();

        // What consensus says about this node.
        let metrics = node.raft.metrics().borrow().clone();
        let in_membership = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if node.contacted.load(Ordering::Relaxed) {
            formation.contacted();
        }
        let cluster_id = node.machine.read(|s| s.cluster_id).await;
        let member = in_membership && cluster_id.is_some();
        member_tx.send_if_modified(|m| std::mem::replace(m, member) != member);
        if let (true, Some(leader), Some(cluster_id)) =
            (in_membership, metrics.current_leader, cluster_id)
        {
            formation.set_member(cluster_id, Some(leader));
            if !reported_member {
                reported_member = true;
                // Back in the cluster: a slot on trial has proved itself. The record then says
                // `good` (the next duty sees it differ from the state's).
                let (updater, n) = (node.updater.clone(), node.clone());
                tokio::spawn(async move {
                    let blessed = tokio::task::spawn_blocking(move || {
                        updater.bless().then(|| updater.booted())
                    })
                    .await;
                    if let Ok(Some(booted)) = blessed {
                        set_booted(
                            &mut n.info.lock().unwrap_or_else(PoisonError::into_inner),
                            booted,
                        );
                    }
                });
                if let Some(dir) = &options.data_dir
                    && identity.cluster_id != Some(cluster_id)
                    && let Err(e) = crate::identity::save_cluster(dir, cluster_id)
                {
                    tracing::warn!("cannot record the cluster id in {}: {e}", dir.display());
                }
                let voter = metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id);
                emit(Event::ClusterMember {
                    cluster_id: format!("{cluster_id:016x}"),
                    node: id,
                    leader,
                    voter,
                    ms: now.as_secs_f64() * 1000.0,
                });
            }
        }
        if metrics.current_leader != last_leader
            && let Some(leader) = metrics.current_leader
        {
            last_leader = Some(leader);
            emit(Event::ClusterLeader {
                leader,
                term: metrics.current_term,
            });
        }

        match formation.poll(now) {
            Some(Action::Initialize {
                cluster_id,
                voters,
                learners,
            }) => {
                emit(Event::ClusterInitialize {
                    cluster_id: format!("{cluster_id:016x}"),
                    voters: voters.keys().copied().collect(),
                    learners: learners.keys().copied().collect(),
                    ms: now.as_secs_f64() * 1000.0,
                });
                tokio::spawn(initialize(node.clone(), cluster_id, voters, learners));
            }
            // One join attempt at a time; formation asks again if it fails.
            Some(Action::Join(targets)) if !node.joining.swap(true, Ordering::AcqRel) => {
                tokio::spawn(join(node.clone(), targets));
            }
            Some(Action::Join(_)) | None => {}
        }

        let announced = formation.announced();
        if now >= next_announce || announced != last_announced {
            last_announced = announced;
            next_announce = now + formation.announce_every();
            let announcement = formation.announcement();
            let mut targets: BTreeSet<SocketAddr> = seeds.iter().copied().collect();
            targets.extend(resolved_seeds.borrow().iter().copied());
            targets.extend(formation.known().map(|(_, a)| a));
            targets.insert(SocketAddr::from((Ipv4Addr::BROADCAST, listen.port())));
            targets.remove(&advertise);
            for target in targets {
                send(&udp, &node.keys, &announcement, target).await;
            }
        }

        if member && now >= next_duty {
            next_duty = now + Duration::from_secs(1);
            let info = node.info();
            let published = node
                .machine
                .read(|s| s.nodes.get(&id).map(|r| r.info.clone()))
                .await;
            let command = if needs_registering(registered, published.as_ref(), &info) {
                Command::Node {
                    id,
                    info,
                    now_ms: 0,
                }
            } else {
                Command::Heartbeat { id, now_ms: 0 }
            };
            let n = node.clone();
            let first = !registered;
            registered = true;
            if forgotten.swap(false, Ordering::AcqRel) {
                registered = false;
            }
            let forgotten = forgotten.clone();
            tokio::spawn(async move {
                match n.propose(command, false).await {
                    // The cluster forgot this node (silent too long): register again, which
                    // puts it back in the membership.
                    Ok(Outcome::UnknownNode) => {
                        tracing::warn!("the cluster forgot this node; registering again");
                        forgotten.store(true, Ordering::Release);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let what = if first {
                            "register"
                        } else {
                            "send a heartbeat"
                        };
                        tracing::debug!("cannot {what}: {e}");
                    }
                }
            });
            if let Some(record) = hardware.as_mut().and_then(|w| w.current().cloned()) {
                publish_inventory(&node, id, record, &publishing).await;
            }
            if metrics.state == ServerState::Leader && !node.changing.load(Ordering::Acquire) {
                manage_voters(&node, &metrics, &policy).await;
            }
        }
    }
}

/// Whether this node registers (again) rather than send a heartbeat: at first, and whenever the
/// state holds another record of it than it would publish now (its slot was blessed, or a
/// registration was lost). A record missing after registering is left to the heartbeat: the
/// leader answers that it does not know the node, which then registers again.
fn needs_registering(registered: bool, published: Option<&NodeInfo>, info: &NodeInfo) -> bool {
    !registered || published.is_some_and(|p| p != info)
}

/// Puts the booted slot (none after a network boot) and its state into a node record.
fn set_booted(info: &mut NodeInfo, booted: Option<crate::update::BootedSlot>) {
    info.slot = booted.as_ref().map(|b| b.slot.clone());
    info.slot_state = booted.and_then(|b| b.state).map(|s| s.as_str().to_owned());
}

/// Proposes this node's inventory when the state holds another one (or none), one proposal at
/// a time; a failed one is simply tried again at the next duty.
async fn publish_inventory(
    node: &Arc<Node>,
    id: NodeId,
    record: crate::state::HardwareRecord,
    publishing: &Arc<AtomicBool>,
) {
    let published = node
        .machine
        .read(|s| {
            s.nodes
                .get(&id)
                .map(|n| n.hardware.as_ref().map(|h| h.json.clone()))
        })
        .await;
    // Not registered yet (None), or already holding this inventory.
    let Some(published) = published else { return };
    if published.as_deref() == Some(record.json.as_str()) || publishing.swap(true, Ordering::AcqRel)
    {
        return;
    }
    let (n, publishing) = (node.clone(), publishing.clone());
    tokio::spawn(async move {
        let bytes = record.json.len();
        match n
            .propose(
                Command::Inventory {
                    id,
                    inventory: record,
                },
                false,
            )
            .await
        {
            Ok(_) => tracing::info!(bytes, "published the hardware inventory"),
            Err(e) => tracing::warn!("cannot publish the hardware inventory: {e}"),
        }
        publishing.store(false, Ordering::Release);
    });
}

/// Serves the cluster API on `api.port` to holders of a configured token or of the admin
/// credential derived from the cluster secret.
async fn start_api(
    config: &MachineConfig,
    secret: &shoal_config::secret::Secret,
    listen: SocketAddr,
    node: &Arc<Node>,
) -> anyhow::Result<()> {
    let mut digests = vec![shoal_cluster_api::identity::token_digest(
        &shoal_cluster_api::identity::admin_credential(secret),
    )];
    for (name, hash) in &config.api.tokens {
        let digest = hash
            .strip_prefix("sha256:")
            .and_then(shoal_cluster_api::identity::unhex)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .with_context(|| format!("api.tokens.{name} is not sha256:<64 hex digits>"))?;
        digests.push(digest);
    }
    let identity = shoal_cluster_api::identity::Identity::derive(secret);
    let tls = shoal_cluster_api::tls::server_config(&identity).context("the API's TLS identity")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for the API on tcp {listen}"))?;
    tracing::info!(%listen, server_key = %identity.server_key(), "cluster API");
    tokio::spawn(crate::api::serve(
        listener,
        Arc::new(tls),
        node.clone(),
        Arc::new(crate::api::Tokens(digests)),
    ));
    Ok(())
}

/// The source address the kernel uses towards the first seed or the LAN broadcast address.
fn primary_address(port: u16, seeds: &[SocketAddr]) -> IpAddr {
    let target = seeds
        .first()
        .copied()
        .unwrap_or(SocketAddr::from((Ipv4Addr::BROADCAST, port)));
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.set_broadcast(true)?;
            s.connect(target)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn open(keys: &ClusterKeys, packet: &[u8], from: SocketAddr) -> Option<Announcement> {
    let plain = match keys.open_announcement(packet) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("announcement from {from} refused: {e}");
            return None;
        }
    };
    let mut a: Announcement = match serde_json::from_slice(&plain) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("announcement from {from} is malformed: {e}");
            return None;
        }
    };
    if a.addr.ip().is_unspecified() {
        a.addr.set_ip(from.ip());
    }
    Some(a)
}

async fn send(udp: &UdpSocket, keys: &ClusterKeys, a: &Announcement, to: SocketAddr) {
    let sealed = serde_json::to_vec(a)
        .map_err(|e| e.to_string())
        .and_then(|plain| keys.seal_announcement(&plain).map_err(|e| e.to_string()));
    match sealed {
        Ok(packet) => {
            if let Err(e) = udp.send_to(&packet, to).await {
                tracing::trace!("announcement to {to}: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot seal an announcement: {e}"),
    }
}

async fn initialize(
    node: Arc<Node>,
    cluster_id: u64,
    voters: BTreeMap<NodeId, SocketAddr>,
    learners: BTreeMap<NodeId, SocketAddr>,
) {
    let members: BTreeMap<NodeId, BasicNode> = voters
        .iter()
        .map(|(id, a)| (*id, BasicNode::new(a)))
        .collect();
    match node.raft.initialize(members).await {
        Ok(()) => {}
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("consensus was already initialised");
        }
        Err(e) => {
            tracing::error!("cannot initialise the cluster: {e}");
            return;
        }
    }
    // The first entry names the cluster; then the learners of the initial set join.
    let init = Command::Init {
        cluster_id,
        name: node.name.clone(),
    };
    while let Err(e) = node.propose(init.clone(), false).await {
        tracing::debug!("naming the cluster: {e} (retrying)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, addr) in learners {
        let req = JoinRequest {
            id,
            addr,
            hint: Hint::Auto,
            forwarded: false,
        };
        if let Err(e) = node.join_request(req).await {
            tracing::warn!("cannot add node {id} as a learner: {e}");
        }
    }
}

async fn join(node: Arc<Node>, targets: Vec<SocketAddr>) {
    let request = Request::Join(JoinRequest {
        id: node.id,
        addr: node.advertise,
        hint: node.info().hint,
        forwarded: false,
    });
    for target in targets {
        match node.pool.call(target, &request, CALL_TIMEOUT).await {
            Ok(Response::Join(Ok(reply))) => {
                tracing::info!(
                    cluster = format!("{:016x}", reply.cluster_id),
                    leader = reply.leader,
                    "joined through {target}"
                );
                break;
            }
            Ok(Response::Join(Err(e))) => tracing::info!("join through {target} refused: {e}"),
            Ok(other) => tracing::warn!("join through {target}: unexpected answer {other:?}"),
            Err(e) => tracing::info!("join through {target} failed: {e}"),
        }
    }
    node.joining.store(false, Ordering::Release);
}

/// Applies the voter policy's next step, if any, in the background.
async fn manage_voters(
    node: &Arc<Node>,
    metrics: &openraft::RaftMetrics<NodeId, BasicNode>,
    policy: &Policy,
) {
    let membership = metrics.membership_config.membership();
    let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let now_ms = unix_ms();
    let records = node.machine.read(|s| s.nodes.clone()).await;
    let members: Vec<Member> = membership
        .nodes()
        .map(|(id, _)| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(0, |l| l.index);
            let record = records.get(id);
            Member {
                id: *id,
                voter: voter_ids.contains(id),
                hint: record.map_or(Hint::Auto, |r| r.info.hint),
                silent_for: if *id == node.id {
                    None
                } else {
                    // A node that has not registered yet counts as just heard from.
                    Some(record.map_or(Duration::ZERO, |r| {
                        Duration::from_millis(now_ms.saturating_sub(r.heartbeat_ms))
                    }))
                },
                caught_up: *id == node.id || last.saturating_sub(matched) <= 64,
            }
        })
        .collect();
    let Some(next) = voters::next_voters(&members, policy) else {
        forget(node, &members, &records, now_ms, policy);
        return;
    };
    node.changing.store(true, Ordering::Release);
    let n = node.clone();
    tokio::spawn(async move {
        tracing::info!(?next, "changing voters");
        if let Err(e) = n.raft.change_membership(next, true).await {
            tracing::warn!("voter change failed: {e}");
        }
        n.changing.store(false, Ordering::Release);
    });
}

/// With the voters right, the leader forgets one silent node: a non-voter leaves the
/// membership; a record outside the membership, silent as long, leaves the state.
fn forget(
    node: &Arc<Node>,
    members: &[Member],
    records: &BTreeMap<NodeId, crate::state::NodeRecord>,
    now_ms: u64,
    policy: &Policy,
) {
    let n = node.clone();
    if let Some(id) = voters::forgotten(members, policy) {
        node.changing.store(true, Ordering::Release);
        tokio::spawn(async move {
            tracing::info!(node = format!("{id:016x}"), "forgetting a silent non-voter");
            let remove = openraft::ChangeMembers::RemoveNodes([id].into());
            if let Err(e) = n.raft.change_membership(remove, false).await {
                tracing::warn!("removing node {id:016x} failed: {e}");
            }
            n.changing.store(false, Ordering::Release);
        });
        return;
    }
    let stale = records.iter().find(|(id, r)| {
        !members.iter().any(|m| m.id == **id)
            && Duration::from_millis(now_ms.saturating_sub(r.heartbeat_ms)) >= policy.forget_after
    });
    if let Some((&id, _)) = stale {
        node.changing.store(true, Ordering::Release);
        tokio::spawn(async move {
            if let Err(e) = n.propose(Command::Forget { id }, false).await {
                tracing::warn!("forgetting node {id:016x} failed: {e}");
            }
            n.changing.store(false, Ordering::Release);
        });
    }
}

impl Node {
    /// What this node publishes about itself now.
    fn info(&self) -> NodeInfo {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn leader_addr(&self, leader: NodeId) -> Option<SocketAddr> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .and_then(|n| n.addr.parse().ok())
    }

    /// Adds a node as a learner on the leader, or forwards the request to it once.
    async fn join_request(&self, req: JoinRequest) -> Result<JoinReply, String> {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.id => {
                let known = metrics
                    .membership_config
                    .membership()
                    .get_node(&req.id)
                    .is_some();
                if !known {
                    self.raft
                        .add_learner(req.id, BasicNode::new(req.addr), false)
                        .await
                        .map_err(|e| format!("cannot add node {}: {e}", req.id))?;
                }
                let cluster_id = self
                    .machine
                    .read(|s| s.cluster_id)
                    .await
                    .ok_or("the cluster is still being named")?;
                let metrics = self.raft.metrics().borrow().clone();
                Ok(JoinReply {
                    cluster_id,
                    leader: self.id,
                    members: metrics
                        .membership_config
                        .membership()
                        .nodes()
                        .map(|(id, n)| (*id, n.clone()))
                        .collect(),
                })
            }
            Some(leader) if !req.forwarded => {
                let addr = self
                    .leader_addr(leader)
                    .ok_or(format!("leader {leader} has no address"))?;
                let forwarded = Request::Join(JoinRequest {
                    forwarded: true,
                    ..req
                });
                match self.pool.call(addr, &forwarded, CALL_TIMEOUT).await {
                    Ok(Response::Join(r)) => r,
                    Ok(other) => Err(format!("leader answered {other:?}")),
                    Err(e) => Err(format!("cannot reach leader {leader} at {addr}: {e}")),
                }
            }
            Some(leader) => Err(format!("not the leader (node {leader} is)")),
            None => Err("no leader yet".into()),
        }
    }

    /// Proposes a command on the leader, or forwards it there once. Node records and
    /// heartbeats are stamped with the leader's clock. A write the leader cannot commit within
    /// [`COMMIT_TIMEOUT`] fails as unavailable (it may still commit later).
    pub(crate) async fn propose(
        &self,
        mut command: Command,
        forwarded: bool,
    ) -> Result<Outcome, Failure> {
        command
            .validate()
            .map_err(|e| Failure::Invalid(e.to_string()))?;
        match self.route(forwarded)? {
            Route::Here => {
                // A node the membership lost (forgotten while it was away) is told so when it
                // sends a heartbeat, and taken back as a learner when it registers again.
                let member = |id: &NodeId| {
                    self.raft
                        .metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(id)
                        .is_some()
                };
                if let Command::Heartbeat { id, .. } = &command
                    && !member(id)
                {
                    return Ok(Outcome::UnknownNode);
                }
                if let Command::Node { id, info, .. } = &command
                    && !member(id)
                {
                    self.raft
                        .add_learner(*id, BasicNode::new(info.addr.clone()), false)
                        .await
                        .map_err(|e| {
                            Failure::Unavailable(format!("cannot add node {id:016x}: {e}"))
                        })?;
                }
                match &mut command {
                    Command::Node { now_ms, .. } | Command::Heartbeat { now_ms, .. } => {
                        *now_ms = unix_ms();
                    }
                    Command::Inventory { inventory, .. } => inventory.updated_ms = unix_ms(),
                    _ => {}
                }
                match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(command)).await {
                    Ok(Ok(r)) => Ok(r.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        Err(Failure::Unavailable(format!(
                            "leadership moved (to {:?}) during the write; try again",
                            f.leader_id
                        )))
                    }
                    Ok(Err(e)) => Err(Failure::Unavailable(e.to_string())),
                    Err(_) => Err(Failure::Unavailable(format!(
                        "no quorum: the write was not committed within {COMMIT_TIMEOUT:?} (the \
                         leader cannot reach a majority of voters; it may still commit)"
                    ))),
                }
            }
            Route::Leader(leader) => {
                let request = Request::Propose {
                    command,
                    forwarded: true,
                };
                match self
                    .forward(leader, &request, COMMIT_TIMEOUT + CALL_TIMEOUT)
                    .await?
                {
                    Response::Propose(r) => r,
                    other => Err(Failure::Unavailable(format!("leader answered {other:?}"))),
                }
            }
        }
    }

    /// Where a proposal or a read goes: here on the leader, else to the leader once (a request
    /// forwarded already that lands on a node no longer leading fails rather than bounce).
    fn route(&self, forwarded: bool) -> Result<Route, Failure> {
        let (leader, member) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let member = metrics
                .membership_config
                .membership()
                .get_node(&self.id)
                .is_some();
            (metrics.current_leader, member)
        };
        match leader {
            Some(leader) if leader == self.id => Ok(Route::Here),
            Some(leader) if !forwarded => Ok(Route::Leader(leader)),
            Some(leader) => Err(Failure::Unavailable(format!(
                "not the leader (node {leader:016x} is)"
            ))),
            None if !member => Err(Failure::Unavailable(
                "no leader: this node is not a member of a cluster yet (it is still forming or \
                 joining one)"
                    .into(),
            )),
            None => Err(Failure::Unavailable(
                "no leader: the cluster has no quorum or is electing one".into(),
            )),
        }
    }

    /// Reads a key linearizably: on the leader once it has confirmed its leadership with a
    /// quorum, else forwarded there once.
    pub(crate) async fn read(
        &self,
        key: String,
        forwarded: bool,
    ) -> Result<Option<Value>, Failure> {
        match self.route(forwarded)? {
            Route::Here => {
                self.confirm_leadership().await?;
                Ok(self.machine.read(|s| s.kv.get(&key).cloned()).await)
            }
            Route::Leader(leader) => {
                let request = Request::Read {
                    key,
                    forwarded: true,
                };
                match self
                    .forward(leader, &request, COMMIT_TIMEOUT + CALL_TIMEOUT)
                    .await?
                {
                    Response::Read(r) => r,
                    other => Err(Failure::Unavailable(format!("leader answered {other:?}"))),
                }
            }
        }
    }

    /// On the leader: confirms with a quorum that it still leads, and applies what it has
    /// committed; the read index (what a read from now on must see applied).
    async fn confirm_leadership(&self) -> Result<u64, Failure> {
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(e)) => Err(Failure::Unavailable(format!("cannot read: {e}"))),
            Err(_) => Err(Failure::Unavailable(format!(
                "no quorum: leadership not confirmed within {COMMIT_TIMEOUT:?}"
            ))),
        }
    }

    /// The log index a linearizable read must see applied: the leader's, once it has
    /// confirmed its leadership with a quorum (asked of the leader, once, from a follower).
    pub(crate) async fn read_index(&self, forwarded: bool) -> Result<u64, Failure> {
        match self.route(forwarded)? {
            Route::Here => self.confirm_leadership().await,
            Route::Leader(leader) => {
                let request = Request::ReadIndex { forwarded: true };
                match self
                    .forward(leader, &request, COMMIT_TIMEOUT + CALL_TIMEOUT)
                    .await?
                {
                    Response::ReadIndex(r) => r,
                    other => Err(Failure::Unavailable(format!("leader answered {other:?}"))),
                }
            }
        }
    }

    /// Waits until this node has applied everything committed before the call, so that what
    /// it then reads from its own state includes every write acknowledged by any node. A
    /// leader that does not answer within [`CALL_TIMEOUT`] is asked again, as is whichever
    /// node leads next: this keeps trying until it has caught up, so callers bound it.
    pub(crate) async fn catch_up(&self) {
        let index = loop {
            match tokio::time::timeout(CALL_TIMEOUT, self.read_index(false)).await {
                Ok(Ok(index)) => break index,
                Ok(Err(e)) => tracing::debug!("catching up with the leader: {e}"),
                Err(_) => tracing::debug!("catching up: the leader did not answer in time"),
            }
            tokio::time::sleep(CATCH_UP_RETRY).await;
        };
        // The index is committed, so this node applies it once the leader sends it on.
        let _ = self
            .raft
            .wait(None)
            .applied_index_at_least(Some(index), "catching up for a read")
            .await;
    }

    async fn forward(
        &self,
        leader: NodeId,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let addr = self
            .leader_addr(leader)
            .ok_or_else(|| Failure::Unavailable(format!("leader {leader:016x} has no address")))?;
        self.pool.call(addr, request, timeout).await.map_err(|e| {
            Failure::Unavailable(format!(
                "cannot reach the leader {leader:016x} at {addr}: {e}"
            ))
        })
    }

    async fn answer(&self, request: Request) -> Response {
        match request {
            Request::AppendEntries(to, _)
            | Request::Vote(to, _)
            | Request::InstallSnapshot(to, _)
                if to != self.id =>
            {
                Response::NotThisNode(self.id)
            }
            Request::AppendEntries(_, r) => {
                self.contacted.store(true, Ordering::Relaxed);
                Response::AppendEntries(self.raft.append_entries(r).await)
            }
            Request::Vote(_, r) => Response::Vote(self.raft.vote(r).await),
            Request::InstallSnapshot(_, r) => {
                self.contacted.store(true, Ordering::Relaxed);
                Response::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            Request::Join(r) => Response::Join(self.join_request(r).await),
            Request::Propose { command, forwarded } => {
                Response::Propose(self.propose(command, forwarded).await)
            }
            Request::Read { key, forwarded } => Response::Read(self.read(key, forwarded).await),
            Request::ReadIndex { forwarded } => {
                Response::ReadIndex(self.read_index(forwarded).await)
            }
        }
    }
}

async fn accept_peers(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accepting a peer connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut channel = match Channel::accept(stream, &node.keys).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!("peer connection from {from} refused: {e}");
                    return;
                }
            };
            loop {
                let request: Request = match channel.receive().await {
                    Ok(r) => r,
                    Err(PeerError::Authentication) => {
                        tracing::warn!(
                            "peer {from} refused: it does not have this cluster's secret"
                        );
                        return;
                    }
                    Err(PeerError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return;
                    }
                    Err(e) => {
                        tracing::debug!("peer {from}: {e}");
                        return;
                    }
                };
                let response = node.answer(request).await;
                if let Err(e) = channel.send(&response).await {
                    tracing::debug!("answering {from}: {e}");
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::{BootedSlot, SlotState};

    #[test]
    fn a_node_registers_again_when_its_record_differs() {
        let mut info = NodeInfo {
            hostname: "n1".into(),
            version: "0.2.0".into(),
            ..NodeInfo::default()
        };
        set_booted(
            &mut info,
            Some(BootedSlot {
                slot: "b".into(),
                state: Some(SlotState::Trial),
            }),
        );
        assert_eq!(
            (info.slot.as_deref(), info.slot_state.as_deref()),
            (Some("b"), Some("trial"))
        );
        assert!(needs_registering(false, None, &info), "at first");
        assert!(!needs_registering(true, Some(&info), &info));
        // Not applied here yet, or forgotten: the heartbeat finds out.
        assert!(!needs_registering(true, None, &info));

        // Blessed: the record in the state says trial, this node now good.
        let published = info.clone();
        set_booted(
            &mut info,
            Some(BootedSlot {
                slot: "b".into(),
                state: Some(SlotState::Good),
            }),
        );
        assert_eq!(info.slot_state.as_deref(), Some("good"));
        assert!(needs_registering(true, Some(&published), &info));

        set_booted(&mut info, None);
        assert_eq!((info.slot, info.slot_state), (None, None), "a network boot");
    }
}
