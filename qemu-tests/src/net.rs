//! A private network namespace per test: a bridge `br0` with a host-side address, one tap per
//! VM NIC, and optionally dnsmasq and an HTTP server for PXE. No route leads out of it, so VM
//! traffic never reaches the host's network.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::dnsmasq::{DhcpConfig, Dnsmasq};
use crate::http::HttpServer;
use crate::image::Image;
use crate::vlan::{MAX_VLAN_ID, Relay, Vlan};
use crate::{Error, Result, process, require_root};

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// Every namespace this harness creates is named `shoal-<pid>-<counter>`.
const NAME_PREFIX: &str = "shoal-";
/// The bridge's host-side address; any address is private inside our own namespace.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PREFIX_LEN: u8 = 24;
/// The bridge's IPv6 address (a unique local prefix); dnsmasq advertises its /64.
pub const HOST_ADDR6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The port the PXE file server listens on.
pub const HTTP_PORT: u16 = 80;

static NEXT_NAMESPACE: AtomicU32 = AtomicU32::new(0);

/// The namespace itself; deleted when the last holder (the [`Network`] and every VM started in
/// it) is dropped.
#[derive(Debug)]
pub(crate) struct Namespace {
    name: String,
    next_tap: AtomicU32,
}

impl Namespace {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the handle a thread `setns()`es into.
    pub(crate) fn handle(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs, so the
    /// child's pid is the program's own).
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Creates a new tap, enslaved to the bridge and up.
    pub(crate) fn add_tap(&self) -> Result<Tap> {
        self.add_tap_on("br0")
    }

    /// Creates a new tap, enslaved to `bridge` and up.
    pub(crate) fn add_tap_on(&self, bridge: &str) -> Result<Tap> {
        let name = format!("tap{}", self.next_tap.fetch_add(1, Ordering::Relaxed));
        self.ip(&["tuntap", "add", &name, "mode", "tap"])?;
        self.ip(&["link", "set", &name, "master", bridge])?;
        self.ip(&["link", "set", &name, "up"])?;
        Ok(Tap { name })
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        process::ip(&full)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = process::ip(&["netns", "del", &self.name]) {
            tracing::warn!("cannot delete network namespace {}: {e}", self.name);
        }
    }
}

/// A second (third, ...) layer-2 segment of a [`Network`]: its own bridge and subnet
/// (`br<N>`, `10.77.N.1/24`) in the same namespace, for VMs with NICs on several networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub bridge: String,
    pub host_addr: Ipv4Addr,
}

/// A tap device on the namespace's bridge, for one VM NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    pub name: String,
}

/// A private network: namespace, bridge `br0` at [`HOST_ADDR`]/24, taps, and the services on
/// it; more bridges and subnets as [`Segment`]s.
#[derive(Debug)]
pub struct Network {
    // Field order is drop order: services stop before the namespace goes.
    dnsmasq: Option<Dnsmasq>,
    dhcpd: Option<crate::dhcpd::DhcpServer>,
    segment_dnsmasq: Vec<Dnsmasq>,
    http: Option<HttpServer>,
    imds: Option<crate::imds::ImdsServer>,
    vlan_relays: Vec<Relay>,
    namespace: Arc<Namespace>,
}

impl Network {
    /// Creates a fresh namespace with the bridge up. Also deletes namespaces left behind by
    /// earlier harness processes that were killed before they could clean up.
    pub fn new() -> Result<Network> {
        require_root()?;
        remove_stale_namespaces();
        let name = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed)
        );
        process::ip(&["netns", "add", &name])?;
        // From here on, dropping `namespace` deletes it again if a later step fails.
        let namespace = Arc::new(Namespace {
            name,
            next_tap: AtomicU32::new(0),
        });
        let addr = format!("{HOST_ADDR}/{PREFIX_LEN}");
        namespace.ip(&["link", "set", "lo", "up"])?;
        namespace.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        namespace.ip(&["addr", "add", &addr, "dev", "br0"])?;
        // iPXE configures IPv6 next to DHCPv4 and waits ~15 s for a router advertisement unless
        // one comes; dnsmasq sends them from this address (see `DhcpConfig`).
        namespace.ip(&[
            "addr",
            "add",
            &format!("{HOST_ADDR6}/64"),
            "dev",
            "br0",
            "nodad",
        ])?;
        namespace.ip(&["link", "set", "br0", "up"])?;
        tracing::debug!("network namespace {} ready", namespace.name);
        Ok(Network {
            dnsmasq: None,
            dhcpd: None,
            segment_dnsmasq: Vec::new(),
            http: None,
            imds: None,
            vlan_relays: Vec::new(),
            namespace,
        })
    }

    /// The namespace's name (for `ip -n NAME ...` by hand).
    pub fn name(&self) -> &str {
        self.namespace.name()
    }

    /// The bridge's address, reachable by every VM on this network.
    pub fn host_addr(&self) -> Ipv4Addr {
        HOST_ADDR
    }

    /// dnsmasq's default configuration for this network's subnet.
    pub fn dhcp_config(&self) -> DhcpConfig {
        DhcpConfig::default()
    }

    /// Whether `addr` answers one ping from the namespace within `timeout_s` seconds.
    pub fn ping(&self, addr: Ipv4Addr, timeout_s: u32) -> bool {
        self.command("ping")
            .args(["-c", "1", "-W", &timeout_s.to_string(), &addr.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Adds a segment: bridge `br<subnet>` at `10.77.<subnet>.1/24`, up. Subnet 0 is the
    /// network's own `br0` (for a network made with [`Network::new`]).
    pub fn add_segment(&self, subnet: u8) -> Result<Segment> {
        let [a, b, _, d] = HOST_ADDR.octets();
        let host_addr = Ipv4Addr::new(a, b, subnet, d);
        let bridge = format!("br{subnet}");
        let ns = &self.namespace;
        ns.ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{host_addr}/{PREFIX_LEN}"),
            "dev",
            &bridge,
        ])?;
        ns.ip(&["link", "set", &bridge, "up"])?;
        Ok(Segment { bridge, host_addr })
    }

    /// Adds VLAN `id` (1 to 4094) as an untagged segment `br<subnet>` at `10.77.<subnet>.1/24`
    /// ([`Network::add_segment`]) that reaches `br0` through a user-space 802.1Q relay (see
    /// [`crate::vlan`]): frames tagged `id` on `br0` arrive on the segment untagged, and frames
    /// from the segment go out on `br0` tagged. Serve it with
    /// `start_segment_dnsmasq(segment_dhcp_config(&vlan.segment))`. The relay stops when the
    /// network is dropped.
    pub fn add_vlan(&mut self, id: u16, subnet: u8) -> Result<Vlan> {
        if !(1..=MAX_VLAN_ID).contains(&id) {
            return Err(Error::Io {
                what: format!("VLAN {id}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("a VLAN id is 1 to {MAX_VLAN_ID}"),
                ),
            });
        }
        let segment = self.add_segment(subnet)?;
        // Two veth pairs: `trunk<N>-br` is a port of br0 and `access<N>-br` one of br<N>; the
        // relay reads and writes their peers `trunk<N>` and `access<N>`.
        let trunk = format!("trunk{subnet}");
        let access = format!("access{subnet}");
        let ns = &self.namespace;
        for (end, bridge) in [(&trunk, "br0"), (&access, segment.bridge.as_str())] {
            let port = format!("{end}-br");
            ns.ip(&[
                "link", "add", "name", end, "type", "veth", "peer", "name", &port,
            ])?;
            // No IPv6 link-local addresses: the relay's ends send nothing of their own.
            for dev in [end.as_str(), &port] {
                ns.ip(&["link", "set", "dev", dev, "addrgenmode", "none"])?;
            }
            ns.ip(&["link", "set", &port, "master", bridge])?;
            ns.ip(&["link", "set", &port, "up"])?;
            ns.ip(&["link", "set", end, "up"])?;
        }
        let (relay, vlan) = Relay::start(ns, id, &trunk, &access, segment)?;
        self.vlan_relays.push(relay);
        Ok(vlan)
    }

    /// dnsmasq's default configuration for a segment.
    pub fn segment_dhcp_config(&self, segment: &Segment) -> DhcpConfig {
        DhcpConfig {
            interface: segment.bridge.clone(),
            ..DhcpConfig::for_host(segment.host_addr)
        }
    }

    /// Starts another dnsmasq (for a segment: `config.interface` names its bridge).
    pub fn start_segment_dnsmasq(&mut self, config: DhcpConfig) -> Result<&Dnsmasq> {
        let dnsmasq = Dnsmasq::start(&self.namespace, config)?;
        self.segment_dnsmasq.push(dnsmasq);
        Ok(&self.segment_dnsmasq[self.segment_dnsmasq.len() - 1])
    }

    /// Whether `addr` answers one IPv6 ping from the namespace within `timeout_s` seconds.
    pub fn ping6(&self, addr: std::net::Ipv6Addr, timeout_s: u32) -> bool {
        self.command("ping")
            .args([
                "-6",
                "-c",
                "1",
                "-W",
                &timeout_s.to_string(),
                &addr.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops dnsmasq (the DHCP server goes away).
    pub fn stop_dnsmasq(&mut self) {
        self.dnsmasq = None;
    }

    pub(crate) fn namespace(&self) -> Arc<Namespace> {
        Arc::clone(&self.namespace)
    }

    /// Creates a new tap, enslaved to the bridge and up.
    pub fn add_tap(&self) -> Result<Tap> {
        self.namespace.add_tap()
    }

    /// Sets a tap's link up or down: a cable pulled on the switch side.
    pub fn set_link(&self, tap: &Tap, up: bool) -> Result<()> {
        set_link(&self.namespace, &tap.name, up)
    }

    /// Runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        self.namespace.command(program)
    }

    /// Starts dnsmasq on the bridge (replacing one started before).
    pub fn start_dnsmasq(&mut self, config: DhcpConfig) -> Result<&Dnsmasq> {
        self.dnsmasq = None;
        let dnsmasq = Dnsmasq::start(&self.namespace, config)?;
        Ok(self.dnsmasq.insert(dnsmasq))
    }

    /// Starts the harness's own DHCP server on the bridge instead of dnsmasq's DHCP (for
    /// leases shorter than dnsmasq allows; see [`crate::dhcpd`]).
    pub fn serve_dhcp(
        &mut self,
        config: crate::dhcpd::LeaseConfig,
    ) -> Result<&crate::dhcpd::DhcpServer> {
        self.dhcpd = None;
        let server = crate::dhcpd::DhcpServer::start(&self.namespace, config)?;
        Ok(self.dhcpd.insert(server))
    }

    pub fn dhcpd(&self) -> Option<&crate::dhcpd::DhcpServer> {
        self.dhcpd.as_ref()
    }

    pub fn dnsmasq(&self) -> Option<&Dnsmasq> {
        self.dnsmasq.as_ref()
    }

    /// Serves `dir` read-only over HTTP/1.0 at `http://HOST_ADDR/` (replacing an earlier server).
    pub fn serve_http(&mut self, dir: &Path) -> Result<&HttpServer> {
        self.http = None;
        let server = HttpServer::start(&self.namespace, (HOST_ADDR, HTTP_PORT).into(), dir)?;
        Ok(self.http.insert(server))
    }

    pub fn imds(&self) -> Option<&crate::imds::ImdsServer> {
        self.imds.as_ref()
    }

    pub fn http(&self) -> Option<&HttpServer> {
        self.http.as_ref()
    }

    /// An EC2-style instance metadata service at 169.254.169.254 (on the bridge, so VMs reach
    /// it through their default route), serving `user_data` and `local_hostname`.
    pub fn serve_imds(
        &mut self,
        user_data: Option<String>,
        local_hostname: Option<String>,
    ) -> Result<&crate::imds::ImdsServer> {
        self.imds = None;
        let addr = format!("{}/32", crate::imds::IMDS_ADDR);
        if !self
            .namespace
            .ip(&["-4", "addr", "show", "dev", "br0"])?
            .contains(&addr)
        {
            self.namespace.ip(&["addr", "add", &addr, "dev", "br0"])?;
        }
        let server = crate::imds::ImdsServer::start(&self.namespace, user_data, local_hostname)?;
        Ok(self.imds.insert(server))
    }

    /// Makes the network PXE-boot `image`: its directory over HTTP, and DHCP that hands iPXE
    /// (QEMU's NIC option ROM) the URL of `boot.ipxe`.
    pub fn enable_pxe(&mut self, image: &Image) -> Result<()> {
        self.enable_pxe_from(image.dir())
    }

    /// Like [`Network::enable_pxe`], from a directory of our own: `boot.ipxe`, `vmlinuz`,
    /// `initramfs` and anything else the boot fetches.
    pub fn enable_pxe_from(&mut self, dir: &Path) -> Result<()> {
        if !dir.join("boot.ipxe").is_file() {
            return Err(crate::Error::Image {
                dir: dir.to_path_buf(),
                message: "boot.ipxe is missing".to_string(),
            });
        }
        let url = format!("{}/boot.ipxe", self.serve_http(dir)?.url());
        let config = DhcpConfig {
            ipxe_script: Some(url),
            ..self.dhcp_config()
        };
        self.start_dnsmasq(config)?;
        Ok(())
    }
}

/// Moves the calling thread into the namespace at `handle` (network namespaces are per thread:
/// the rest of the process stays where it is), for a thread that opens sockets there.
pub(crate) fn enter_namespace(handle: &Path) -> Result<()> {
    let ns =
        std::fs::File::open(handle).map_err(Error::io(format!("open {}", handle.display())))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| Error::Io {
        what: format!("setns into {}", handle.display()),
        source: e.into(),
    })
}

pub(crate) fn set_link(namespace: &Namespace, tap: &str, up: bool) -> Result<()> {
    namespace.ip(&["link", "set", tap, if up { "up" } else { "down" }])?;
    Ok(())
}

/// Deletes `shoal-<pid>-<n>` namespaces whose creating process no longer exists.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("deleting stale network namespace {name}");
            let _ = process::ip(&["netns", "del", &name]);
        }
    }
}

/// The pid in a harness namespace name `shoal-<pid>-<counter>`.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, counter) = rest.split_once('-')?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_harness_namespace_names() {
        assert_eq!(creator_pid("shoal-1234-0"), Some(1234));
        assert_eq!(creator_pid("shoal-1234-17"), Some(1234));
        assert_eq!(creator_pid("shoal-demo"), None);
        assert_eq!(creator_pid("shoal-12-x"), None);
        assert_eq!(creator_pid("other-1-1"), None);
    }
}
