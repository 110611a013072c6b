//! The cluster's seeds (`cluster.seeds`, `host:port`): nodes this one announces itself to
//! besides the LAN's broadcast address and the nodes it heard.
//!
//! An address is used as it is. A host name is resolved in the background (shoal-dns, a
//! blocking stub resolver, in `spawn_blocking`): at start, then every [`FORMING_EVERY`] while
//! the node is not a member, every [`MEMBER_EVERY`] once it is, so formation never waits for a
//! nameserver and a cluster behind a name that moves is found again. Announcements go to every
//! address a name resolves to. A name that stops resolving keeps its last addresses (a
//! nameserver down for a while changes nothing), and what happens to a name is logged once per
//! change, not at every try.
//!
//! [`Seed::parse`], [`interval`] and [`NameState`] are the decisions, without I/O;
//! [`spawn`] is the adapter.

use std::collections::BTreeSet;
use std::mem::Discriminant;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_dns::DnsError;
use tokio::sync::watch;

/// How often names are resolved while the node is not a member yet: a node that boots before
/// its nameserver has the name, or the name's nodes, finds the cluster within seconds.
pub const FORMING_EVERY: Duration = Duration::from_secs(3);
/// How often names are resolved once the node is a member (for the next time it is not).
pub const MEMBER_EVERY: Duration = Duration::from_secs(30);
/// The most one resolution of one name may take (every nameserver included).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One entry of `cluster.seeds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    Address(SocketAddr),
    Name(NameSeed),
}

/// A seed given by host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSeed {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for NameSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Seed {
    /// `10.0.0.1:7700`, `[fd00::1]:7700` or `cp1.example:7700`. The configuration checks seeds
    /// the same way, so an error here means a seed that came from somewhere else.
    pub fn parse(text: &str) -> Result<Seed, String> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(Seed::Address(address));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} needs a port (host:port)"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port"))?;
        shoal_dns::check_name(host)
            .map_err(|reason| format!("{text:?}: {host:?} is not a host name: {reason}"))?;
        Ok(Seed::Name(NameSeed {
            host: host.to_owned(),
            port,
        }))
    }
}

/// The seeds' addresses and names; a seed that is neither is logged and left out.
pub fn split(seeds: &[String]) -> (Vec<SocketAddr>, Vec<NameSeed>) {
    let mut addresses = Vec::new();
    let mut names = Vec::new();
    for text in seeds {
        match Seed::parse(text) {
            Ok(Seed::Address(a)) => addresses.push(a),
            Ok(Seed::Name(n)) => names.push(n),
            Err(e) => tracing::warn!("seed ignored: {e}"),
        }
    }
    (addresses, names)
}

/// How long after a resolution the names are asked again.
pub fn interval(member: bool) -> Duration {
    if member { MEMBER_EVERY } else { FORMING_EVERY }
}

/// What one name resolved to, and what of it is worth a log line.
#[derive(Debug, Default)]
pub struct NameState {
    /// The addresses of the last successful resolution, with the seed's port.
    addresses: Vec<SocketAddr>,
    /// The last outcome: the addresses, or the kind of failure (a failure's text may name
    /// each server and its timeout; its kind is what changes).
    last: Option<Result<Vec<SocketAddr>, Discriminant<DnsError>>>,
}

/// A change in what a name resolves to, to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// It resolves, the first time or to other addresses than before.
    Resolved(Vec<SocketAddr>),
    /// It does not resolve, the first time or for another reason than before; `kept`: the
    /// addresses still announced to, from its last resolution.
    Failed {
        error: DnsError,
        kept: Vec<SocketAddr>,
    },
}

impl NameState {
    /// Takes the outcome of one resolution; returns what to log when it differs from the last.
    pub fn record(&mut self, result: Result<Vec<IpAddr>, DnsError>, port: u16) -> Option<Notice> {
        match result {
            Ok(ips) => {
                let addresses: Vec<SocketAddr> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                self.addresses = addresses.clone();
                let changed = self.last.as_ref() != Some(&Ok(addresses.clone()));
                self.last = Some(Ok(addresses.clone()));
                changed.then_some(Notice::Resolved(addresses))
            }
            Err(error) => {
                let kind = std::mem::discriminant(&error);
                let changed = self.last != Some(Err(kind));
                self.last = Some(Err(kind));
                changed.then(|| Notice::Failed {
                    error,
                    kept: self.addresses.clone(),
                })
            }
        }
    }

    /// Where announcements for this name go.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

/// Where names are looked up.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The nameservers, search domains and `ndots` (on the node a link to netd's
    /// `/run/shoal/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// These servers (any port) instead of resolv.conf's, without search domains: tests run a
    /// fake one on a port of their own.
    pub nameservers: Option<Vec<SocketAddr>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            nameservers: None,
        }
    }
}

impl Resolver {
    /// Blocks for up to [`RESOLVE_TIMEOUT`].
    fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        match &self.nameservers {
            Some(servers) => shoal_dns::resolve_with(host, servers, RESOLVE_TIMEOUT),
            None => shoal_dns::resolve(host, &self.resolv_conf, RESOLVE_TIMEOUT),
        }
    }
}

/// Resolves `names` in the background for as long as `member` (whether the node is a member,
/// which sets the pace) has a sender. The receiver holds every address they resolve to, empty
/// until the first answer.
pub fn spawn(
    names: Vec<NameSeed>,
    resolver: Resolver,
    member: watch::Receiver<bool>,
) -> watch::Receiver<Vec<SocketAddr>> {
    let (addresses, receiver) = watch::channel(Vec::new());
    if !names.is_empty() {
        tokio::spawn(keep_resolving(names, Arc::new(resolver), member, addresses));
    }
    receiver
}

async fn keep_resolving(
    names: Vec<NameSeed>,
    resolver: Arc<Resolver>,
    mut member: watch::Receiver<bool>,
    addresses: watch::Sender<Vec<SocketAddr>>,
) {
    let mut states: Vec<NameState> = names.iter().map(|_| NameState::default()).collect();
    loop {
        let asked_at = tokio::time::Instant::now();
        // All names at once: a nameserver that does not answer costs one timeout, not one per
        // name.
        let tasks: Vec<_> = names
            .iter()
            .map(|name| {
                let (resolver, host) = (resolver.clone(), name.host.clone());
                tokio::task::spawn_blocking(move || resolver.resolve(&host))
            })
            .collect();
        for ((name, state), task) in names.iter().zip(&mut states).zip(tasks) {
            let result = match task.await {
                Ok(result) => result,
                Err(e) => {
                    tracing::warn!("resolving seed {name}: {e}");
                    continue;
                }
            };
            log(name, state.record(result, name.port));
        }
        let all: BTreeSet<SocketAddr> = states
            .iter()
            .flat_map(|s| s.addresses().iter().copied())
            .collect();
        let all: Vec<SocketAddr> = all.into_iter().collect();
        addresses.send_if_modified(|current| {
            let changed = *current != all;
            *current = all;
            changed
        });
        // Until the next round: a node that leaves its cluster (or has not found it) asks
        // sooner than one that is in it.
        loop {
            let deadline = asked_at + interval(*member.borrow_and_update());
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                changed = member.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn log(name: &NameSeed, notice: Option<Notice>) {
    match notice {
        Some(Notice::Resolved(addresses)) => {
            tracing::info!("seed {name} resolves to {}", list(&addresses));
        }
        Some(Notice::Failed { error, kept }) => {
            let kept = if kept.is_empty() {
                String::new()
            } else {
                format!("; announcing to its last addresses {}", list(&kept))
            };
            tracing::warn!(
                "seed {name}: {error}{kept} (asked again every {}s until this node is a member, \
                 then every {}s)",
                FORMING_EVERY.as_secs(),
                MEMBER_EVERY.as_secs()
            );
        }
        None => tracing::debug!("seed {name}: resolved again, nothing changed"),
    }
}

fn list(addresses: &[SocketAddr]) -> String {
    if addresses.is_empty() {
        return "no address".into();
    }
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(host: &str, port: u16) -> Seed {
        Seed::Name(NameSeed {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn seeds_are_addresses_or_names() {
        assert_eq!(
            Seed::parse("10.0.0.1:7700"),
            Ok(Seed::Address(SocketAddr::from(([10, 0, 0, 1], 7700))))
        );
        assert_eq!(
            Seed::parse("[fd00::1]:7700"),
            Ok(Seed::Address(SocketAddr::new(
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
                7700
            )))
        );
        assert_eq!(Seed::parse("cp1.lab:7700"), Ok(name("cp1.lab", 7700)));
        assert_eq!(Seed::parse("cp1:7701"), Ok(name("cp1", 7701)));
        assert_eq!(Seed::parse("cp1.lab.:7700"), Ok(name("cp1.lab.", 7700)));
        for (bad, why) in [
            ("cp1.lab", "needs a port"),
            ("cp1.lab:0", "is not a port"),
            ("cp1.lab:http", "is not a port"),
            ("10.0.0.300:7700", "not a host name"),
            ("fd00::1:7700", "not a host name"),
            ("bad host:7700", "not a host name"),
            (":7700", "not a host name"),
        ] {
            let e = Seed::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let (addresses, names) = split(&[
            "10.0.0.1:7700".into(),
            "cp1.lab:7700".into(),
            "garbage".into(),
            "cp2.lab:7800".into(),
        ]);
        assert_eq!(addresses, [SocketAddr::from(([10, 0, 0, 1], 7700))]);
        assert_eq!(
            names.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["cp1.lab:7700", "cp2.lab:7800"]
        );
    }

    #[test]
    fn names_are_asked_again_sooner_while_the_node_is_not_a_member() {
        assert_eq!(interval(false), Duration::from_secs(3));
        assert_eq!(interval(true), Duration::from_secs(30));
        assert!(RESOLVE_TIMEOUT < FORMING_EVERY);
    }

    fn ips(last: &[u8]) -> Vec<IpAddr> {
        last.iter()
            .map(|b| IpAddr::V4(Ipv4Addr::new(10, 0, 0, *b)))
            .collect()
    }

    fn at(last: &[u8], port: u16) -> Vec<SocketAddr> {
        ips(last)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    }

    fn nxdomain() -> DnsError {
        DnsError::NoSuchName {
            name: "cp.lab".into(),
            server: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)),
            tried: vec![],
        }
    }

    fn no_answer(why: &str) -> DnsError {
        DnsError::NoAnswer {
            name: "cp.lab".into(),
            failures: vec![(SocketAddr::from(([10, 0, 0, 53], 53)), why.into())],
        }
    }

    #[test]
    fn what_a_name_resolves_to_is_told_once_per_change() {
        let mut state = NameState::default();
        // Not there yet (the nameserver has no record): told once, however often it is asked.
        assert_eq!(
            state.record(Err(nxdomain()), 7700),
            Some(Notice::Failed {
                error: nxdomain(),
                kept: vec![]
            })
        );
        assert_eq!(state.record(Err(nxdomain()), 7700), None);
        assert!(state.addresses().is_empty());
        // Every address, with the seed's port.
        assert_eq!(
            state.record(Ok(ips(&[1, 2, 3])), 7700),
            Some(Notice::Resolved(at(&[1, 2, 3], 7700)))
        );
        assert_eq!(state.record(Ok(ips(&[1, 2, 3])), 7700), None);
        assert_eq!(state.addresses(), at(&[1, 2, 3], 7700));
        // Another set of addresses is a change.
        assert_eq!(
            state.record(Ok(ips(&[1, 2])), 7700),
            Some(Notice::Resolved(at(&[1, 2], 7700)))
        );
        // The nameserver goes away: told once (whatever each try's text), and the last
        // addresses stay.
        assert_eq!(
            state.record(Err(no_answer("timed out")), 7700),
            Some(Notice::Failed {
                error: no_answer("timed out"),
                kept: at(&[1, 2], 7700)
            })
        );
        assert_eq!(
            state.record(Err(no_answer("connection refused")), 7700),
            None
        );
        assert_eq!(state.addresses(), at(&[1, 2], 7700));
        // Another reason is a change; so is the name coming back, even to the same addresses.
        assert!(matches!(
            state.record(Err(nxdomain()), 7700),
            Some(Notice::Failed { .. })
        ));
        assert_eq!(
            state.record(Ok(ips(&[1, 2])), 7700),
            Some(Notice::Resolved(at(&[1, 2], 7700)))
        );
    }
}
