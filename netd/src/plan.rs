//! The desired state: from the configuration and the links the kernel reports, what netd must
//! rename, create, attach, and configure. Pure; the daemon carries it out and calls it again
//! whenever links appear, disappear or change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::{
    Addressing, BondConfig, BridgeConfig, Cidr, LinkConfig, Naming, NetworkConfig, RouteConfig,
    Unconfigured, VlanConfig, glob_match,
};
use crate::netlink::{DeviceInfo, Link};

/// How one interface (physical or virtual) is to be addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub dhcp: bool,
    pub addresses: Vec<Cidr>,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<RouteConfig>,
    pub mtu: Option<u16>,
    pub required_for_online: bool,
}

impl Managed {
    fn from(a: &Addressing) -> Managed {
        Managed {
            dhcp: a.dhcp(),
            addresses: a.addresses.clone(),
            gateway: a.gateway,
            routes: a.routes.clone(),
            mtu: a.mtu,
            required_for_online: a.required_for_online(),
        }
    }

    fn dhcp_default() -> Managed {
        Managed::from(&Addressing::default())
    }
}

/// A virtual interface to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Virtual {
    /// A VLAN on the link with this index.
    Vlan {
        config: VlanConfig,
        parent: u32,
    },
    Bond(BondConfig),
    Bridge(BridgeConfig),
}

impl Virtual {
    pub fn name(&self) -> &str {
        match self {
            Virtual::Vlan { config, .. } => config.name.as_str(),
            Virtual::Bond(b) => b.name.as_str(),
            Virtual::Bridge(b) => b.name.as_str(),
        }
    }
}

/// What netd should make of the links it sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (index, new name).
    pub renames: Vec<(u32, String)>,
    /// Bonds and bridges first, then VLANs (a VLAN may sit on a bond).
    pub create: Vec<Virtual>,
    /// (port index, master name): ports to attach to bonds and bridges that exist.
    pub attach: Vec<(u32, String)>,
    /// Interfaces to bring up and address, by their (final) name.
    pub managed: BTreeMap<String, Managed>,
    /// Physical links left alone on purpose.
    pub ignored: BTreeSet<String>,
    /// Things the configuration asks for that cannot be done yet, and why.
    pub pending: Vec<String>,
}

/// Computes the plan. `devices` holds the sysfs facts for each link index.
pub fn plan(config: &NetworkConfig, links: &[Link], devices: &BTreeMap<u32, DeviceInfo>) -> Plan {
    let mut plan = Plan::default();
    let no_device = DeviceInfo::default();
    // Final names of physical links, so that bonds, bridges and VLANs can refer to them.
    let mut final_names: BTreeMap<String, u32> = BTreeMap::new();
    let ports: BTreeSet<&str> = config
        .bonds
        .iter()
        .flat_map(|b| b.links.iter())
        .chain(config.bridges.iter().flat_map(|b| b.links.iter()))
        .map(|n| n.as_str())
        .collect();
    let mut first_taken = false;

    // Physical links, and virtual ones (veth, ...) that an entry names exactly.
    let mut physical: Vec<&Link> = links
        .iter()
        .filter(|l| {
            !l.loopback
                && (devices.get(&l.index).unwrap_or(&no_device).physical
                    || config.links.iter().any(|e| names_exactly(e, l)))
        })
        .collect();
    physical.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));

    for link in physical {
        let device = devices.get(&link.index).unwrap_or(&no_device);
        let entry = config.links.iter().find(|entry| {
            if entry.first_only && first_taken {
                return false;
            }
            matches(entry, link, device)
        });
        if entry.is_some_and(|e| e.first_only) {
            first_taken = true;
        }
        let name = entry
            .and_then(|e| e.name.as_ref().map(|n| n.to_string()))
            .unwrap_or_else(|| stable_name(config.naming, link, device));
        if entry.is_some_and(|e| e.ignore)
            || (entry.is_none()
                && config.unconfigured == Unconfigured::Ignore
                && !ports.contains(name.as_str()))
        {
            plan.ignored.insert(link.name.clone());
            continue;
        }
        if name != link.name {
            if links
                .iter()
                .any(|other| other.name == name && other.index != link.index)
            {
                plan.pending.push(format!(
                    "cannot rename {} to {name}: another link has that name",
                    link.name
                ));
                final_names.insert(link.name.clone(), link.index);
            } else {
                plan.renames.push((link.index, name.clone()));
                final_names.insert(name.clone(), link.index);
            }
        } else {
            final_names.insert(name.clone(), link.index);
        }
        let final_name = final_names
            .iter()
            .find(|(_, i)| **i == link.index)
            .map(|(n, _)| n.clone())
            .unwrap_or(name);
        if ports.contains(final_name.as_str()) {
            continue;
        }
        let managed = entry.map_or_else(Managed::dhcp_default, |e| Managed::from(&e.addressing));
        plan.managed.insert(final_name, managed);
    }

    let existing = |name: &str| links.iter().find(|l| l.name == name);
    let index_of = |name: &str| {
        final_names
            .get(name)
            .copied()
            .or_else(|| existing(name).map(|l| l.index))
    };

    for bond in &config.bonds {
        if existing(bond.name.as_str()).is_none() {
            plan.create.push(Virtual::Bond(bond.clone()));
        }
        attach_ports(&mut plan, links, bond.name.as_str(), &bond.links, &index_of);
        plan.managed
            .insert(bond.name.to_string(), Managed::from(&bond.addressing));
    }
    for bridge in &config.bridges {
        if existing(bridge.name.as_str()).is_none() {
            plan.create.push(Virtual::Bridge(bridge.clone()));
        }
        attach_ports(
            &mut plan,
            links,
            bridge.name.as_str(),
            &bridge.links,
            &index_of,
        );
        plan.managed
            .insert(bridge.name.to_string(), Managed::from(&bridge.addressing));
    }
    for vlan in &config.vlans {
        if existing(vlan.name.as_str()).is_none() {
            match index_of(vlan.link.as_str()) {
                Some(parent) => plan.create.push(Virtual::Vlan {
                    config: vlan.clone(),
                    parent,
                }),
                None => {
                    plan.pending.push(format!(
                        "VLAN {} waits for its link {}",
                        vlan.name, vlan.link
                    ));
                    continue;
                }
            }
        }
        plan.managed
            .insert(vlan.name.to_string(), Managed::from(&vlan.addressing));
    }
    plan
}

fn attach_ports(
    plan: &mut Plan,
    links: &[Link],
    master: &str,
    ports: &[crate::config::IfName],
    index_of: &dyn Fn(&str) -> Option<u32>,
) {
    let master_index = links.iter().find(|l| l.name == master).map(|l| l.index);
    for port in ports {
        match index_of(port.as_str()) {
            Some(index) => {
                let attached = master_index.is_some()
                    && links
                        .iter()
                        .any(|l| l.index == index && l.master == master_index);
                if !attached {
                    plan.attach.push((index, master.to_string()));
                }
            }
            None => plan
                .pending
                .push(format!("{master} waits for its port {port}")),
        }
    }
}

/// Whether an entry picks out this link by its exact name or MAC (not by a pattern).
fn names_exactly(entry: &LinkConfig, link: &Link) -> bool {
    let m = &entry.matches;
    let by_name = m
        .name
        .as_ref()
        .is_some_and(|p| !p.contains(['*', '?']) && p == &link.name);
    let by_mac = m.mac.is_some_and(|mac| link.identity_mac() == Some(mac.0));
    !entry.first_only
        && (by_name || by_mac || entry.name.as_ref().is_some_and(|n| n.as_str() == link.name))
}

fn matches(entry: &LinkConfig, link: &Link, device: &DeviceInfo) -> bool {
    let m = &entry.matches;
    // A link already renamed to the entry's name is that entry's link.
    if entry.name.as_ref().is_some_and(|n| n.as_str() == link.name) {
        return true;
    }
    m.name.as_ref().is_none_or(|p| glob_match(p, &link.name))
        && m.mac.is_none_or(|mac| link.identity_mac() == Some(mac.0))
        && m.path
            .as_ref()
            .is_none_or(|p| device.bus_path.as_deref().is_some_and(|b| glob_match(p, b)))
        && m.driver
            .as_ref()
            .is_none_or(|d| device.driver.as_deref() == Some(d.as_str()))
}

/// The name a link gets under the naming policy.
pub fn stable_name(naming: Naming, link: &Link, device: &DeviceInfo) -> String {
    match naming {
        Naming::Kernel => link.name.clone(),
        Naming::Mac => match link.identity_mac() {
            Some(mac) => format!(
                "enx{}",
                mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            None => link.name.clone(),
        },
        Naming::Path => device
            .bus_path
            .as_deref()
            .and_then(pci_name)
            .unwrap_or_else(|| link.name.clone()),
    }
}

/// `0000:00:03.0` → `enp0s3`, `0000:3b:00.1` → `enp59s0f1`, domain ≠ 0 → `enP1p...`
/// (systemd's scheme, so names match what operators know from other distributions).
fn pci_name(bus: &str) -> Option<String> {
    let (domain, rest) = bus.split_once(':')?;
    let (bus_no, rest) = rest.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let bus_no = u32::from_str_radix(bus_no, 16).ok()?;
    let slot = u32::from_str_radix(slot, 16).ok()?;
    let function = u32::from_str_radix(function, 16).ok()?;
    let mut name = String::from("en");
    if domain != 0 {
        name.push_str(&format!("P{domain}"));
    }
    name.push_str(&format!("p{bus_no}s{slot}"));
    if function != 0 {
        name.push_str(&format!("f{function}"));
    }
    (name.len() <= 15).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mac;

    fn link(index: u32, name: &str, mac: u8) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some([0x52, 0x54, 0, 0, 0, mac]),
            permanent_mac: None,
            kind: None,
            up: false,
            carrier: true,
            master: None,
            mtu: 1500,
            loopback: false,
        }
    }

    fn world(links: &[Link]) -> BTreeMap<u32, DeviceInfo> {
        links
            .iter()
            .filter(|l| l.kind.is_none() && !l.loopback)
            .map(|l| {
                (
                    l.index,
                    DeviceInfo {
                        physical: true,
                        bus_path: Some(format!("0000:00:0{}.0", l.index + 1)),
                        driver: Some("virtio_net".into()),
                    },
                )
            })
            .collect()
    }

    fn config(text: &str) -> NetworkConfig {
        NetworkConfig::parse("test", text).unwrap()
    }

    #[test]
    fn no_configuration_means_dhcp_on_every_physical_link() {
        let mut lo = link(1, "lo", 0);
        lo.loopback = true;
        let mut veth = link(4, "veth0", 9);
        veth.kind = Some("veth".into());
        let links = [lo, link(2, "eth0", 1), link(3, "eth1", 2), veth];
        let devices = world(&links[..3]);
        let p = plan(&NetworkConfig::default(), &links, &devices);
        assert_eq!(p.managed.keys().collect::<Vec<_>>(), ["eth0", "eth1"]);
        assert!(p.managed.values().all(|m| m.dhcp && m.required_for_online));
        assert!(p.renames.is_empty() && p.create.is_empty() && p.attach.is_empty());
        // A virtual link is managed when an entry names it exactly.
        let c = config("[[links]]\nmatch = { name = \"veth0\" }\n");
        let p = plan(&c, &links, &devices);
        assert_eq!(
            p.managed.keys().collect::<Vec<_>>(),
            ["eth0", "eth1", "veth0"]
        );
    }

    #[test]
    fn naming_policies_rename_links() {
        let links = [link(2, "eth0", 1), link(3, "eth1", 2)];
        let devices = world(&links);
        let p = plan(&config("naming = \"mac\""), &links, &devices);
        assert_eq!(
            p.renames,
            [
                (2, "enx525400000001".to_string()),
                (3, "enx525400000002".to_string())
            ]
        );
        assert!(p.managed.contains_key("enx525400000001"));
        let p = plan(&config("naming = \"path\""), &links, &devices);
        assert_eq!(
            p.renames,
            [(2, "enp0s3".to_string()), (3, "enp0s4".to_string())]
        );
        // Once renamed, nothing more to do.
        let renamed = [link(2, "enp0s3", 1), link(3, "enp0s4", 2)];
        assert!(
            plan(&config("naming = \"path\""), &renamed, &devices)
                .renames
                .is_empty()
        );
    }

    #[test]
    fn pci_names_follow_the_usual_scheme() {
        assert_eq!(pci_name("0000:00:03.0").as_deref(), Some("enp0s3"));
        assert_eq!(pci_name("0000:3b:00.1").as_deref(), Some("enp59s0f1"));
        assert_eq!(pci_name("0001:00:1f.0").as_deref(), Some("enP1p0s31"));
        assert_eq!(pci_name("virtio0"), None);
    }

    #[test]
    fn entries_match_by_mac_name_path_and_driver_and_can_ignore() {
        let links = [link(2, "eth0", 1), link(3, "eth1", 2), link(4, "eth2", 3)];
        let devices = world(&links);
        let c = config(
            r#"
unconfigured = "ignore"
[[links]]
match = { mac = "52:54:00:00:00:02" }
name = "lan0"
addresses = ["10.0.0.5/24"]
gateway = "10.0.0.1"
[[links]]
match = { path = "0000:00:03.0", driver = "virtio_net" }
ignore = true
"#,
        );
        let p = plan(&c, &links, &devices);
        assert_eq!(p.renames, [(3, "lan0".to_string())]);
        assert_eq!(p.managed.keys().collect::<Vec<_>>(), ["lan0"]);
        assert!(!p.managed["lan0"].dhcp);
        assert_eq!(
            p.ignored,
            BTreeSet::from(["eth0".to_string(), "eth2".to_string()])
        );
        assert_eq!(c.links[0].matches.mac, Some(Mac([0x52, 0x54, 0, 0, 0, 2])));
    }

    #[test]
    fn bonds_and_bridges_are_created_and_their_ports_attached_not_addressed() {
        let links = [link(2, "eth0", 1), link(3, "eth1", 2), link(4, "eth2", 3)];
        let devices = world(&links);
        let c = config(
            r#"
[[bonds]]
name = "bond0"
links = ["eth0", "eth1"]
mode = "active-backup"
[[bridges]]
name = "br0"
links = ["eth2"]
[[vlans]]
name = "vlan10"
link = "bond0"
id = 10
"#,
        );
        let p = plan(&c, &links, &devices);
        assert_eq!(
            p.create.iter().map(Virtual::name).collect::<Vec<_>>(),
            ["bond0", "br0"],
            "the VLAN waits for its bond"
        );
        assert_eq!(p.pending, ["VLAN vlan10 waits for its link bond0"]);
        assert_eq!(
            p.attach,
            [
                (2, "bond0".to_string()),
                (3, "bond0".to_string()),
                (4, "br0".to_string())
            ]
        );
        assert_eq!(p.managed.keys().collect::<Vec<_>>(), ["bond0", "br0"]);

        // Next round: the bond and bridge exist, ports attached; the VLAN can be made.
        let mut bond = link(5, "bond0", 1);
        bond.kind = Some("bond".into());
        let mut br = link(6, "br0", 3);
        br.kind = Some("bridge".into());
        let mut ports = [link(2, "eth0", 1), link(3, "eth1", 2), link(4, "eth2", 3)];
        ports[0].master = Some(5);
        ports[1].master = Some(5);
        ports[2].master = Some(6);
        let mut all = ports.to_vec();
        all.extend([bond, br]);
        let p = plan(&c, &all, &devices);
        assert!(p.attach.is_empty(), "{:?}", p.attach);
        assert!(matches!(&p.create[..], [Virtual::Vlan { parent: 5, .. }]));
        assert_eq!(
            p.managed.keys().collect::<Vec<_>>(),
            ["bond0", "br0", "vlan10"]
        );
    }

    #[test]
    fn a_rename_onto_a_taken_name_is_reported_not_attempted() {
        let links = [link(2, "eth0", 1), link(3, "lan0", 2)];
        let devices = world(&links);
        let c = config("[[links]]\nmatch = { name = \"eth0\" }\nname = \"lan0\"\n");
        let p = plan(&c, &links, &devices);
        assert!(p.renames.is_empty());
        assert_eq!(
            p.pending,
            ["cannot rename eth0 to lan0: another link has that name"]
        );
    }
}
