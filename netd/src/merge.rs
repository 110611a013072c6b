//! The kernel command line's network keys folded into the configuration. The command line
//! comes second and wins: an `ip=` for an interface replaces how the configuration addresses
//! it; `vlan=`, `bond=`, `bridge=` and `ifname=` add interfaces; `nameserver=` adds servers in
//! front of the configured ones.

use std::net::IpAddr;
use std::time::Duration;

use crate::cmdline::{AutoMethod, BondArg, CmdlineNetwork, IpArg};
use crate::config::{
    Addressing, BondConfig, BondMode, BridgeConfig, Cidr, HashPolicy, IfName, LacpRate, LinkConfig,
    LinkMatch, Mac, NetworkConfig, RouteConfig, Unconfigured, VlanConfig,
};

/// The merged configuration, the hostname the command line asks for, and notes about settings
/// that were accepted but have no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub config: NetworkConfig,
    pub hostname: Option<String>,
    pub notes: Vec<String>,
}

/// Folds `cmdline` into `config`. Errors name the key and the reason.
pub fn merge(mut config: NetworkConfig, cmdline: &CmdlineNetwork) -> Result<Merged, Vec<String>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let name = |text: &str, errors: &mut Vec<String>| match text.parse::<IfName>() {
        Ok(n) => Some(n),
        Err(e) => {
            errors.push(e);
            None
        }
    };

    for ifname in &cmdline.ifnames {
        if let Some(n) = name(&ifname.name, &mut errors) {
            let entry = link_entry(&mut config, n.as_str());
            entry.matches = LinkMatch {
                mac: Some(Mac(ifname.mac)),
                ..LinkMatch::default()
            };
            entry.name = Some(n);
        }
    }
    for vlan in &cmdline.vlans {
        if let (Some(n), Some(parent)) = (
            name(&vlan.name, &mut errors),
            name(&vlan.parent, &mut errors),
        ) {
            config.vlans.retain(|v| v.name != n);
            config.vlans.push(VlanConfig {
                name: n,
                link: parent,
                id: vlan.id,
                addressing: Addressing::default(),
            });
        }
    }
    for bond in &cmdline.bonds {
        match bond_config(bond) {
            Ok(b) => {
                config.bonds.retain(|old| old.name != b.name);
                config.bonds.push(b);
            }
            Err(e) => errors.push(format!("bond={}: {e}", bond.name)),
        }
    }
    for bridge in &cmdline.bridges {
        let ports: Vec<IfName> = bridge
            .ports
            .iter()
            .filter_map(|p| name(p, &mut errors))
            .collect();
        if let Some(n) = name(&bridge.name, &mut errors) {
            config.bridges.retain(|b| b.name != n);
            config.bridges.push(BridgeConfig {
                name: n,
                links: ports,
                stp: false,
                addressing: Addressing::default(),
            });
        }
    }

    let mut hostname = cmdline.hostname.clone();
    for ip in &cmdline.ip {
        match ip {
            IpArg::Auto { method } => match method {
                AutoMethod::Off => config.unconfigured = Unconfigured::Ignore,
                AutoMethod::Dhcp => config.unconfigured = Unconfigured::Dhcp,
                other => notes.push(format!(
                    "ip={other}: IPv6 takes router advertisements on every link; DHCPv6 and \
                     this method are not implemented, DHCPv4 stays on"
                )),
            },
            IpArg::Interface {
                interface,
                method,
                mtu,
                mac,
            } => {
                if mac.is_some() {
                    notes.push(format!(
                        "ip={ip}: setting a MAC address is not supported; ignored"
                    ));
                }
                if let Some(a) = addressing_for(&mut config, interface, &mut errors) {
                    *a = Addressing {
                        dhcp: Some(*method == AutoMethod::Dhcp),
                        mtu: *mtu,
                        ..Addressing::default()
                    };
                    note_method(*method, ip, &mut notes);
                }
            }
            IpArg::Static {
                address,
                prefix_len,
                peer: _,
                gateway,
                hostname: _,
                interface,
                method,
                mtu,
                mac,
                dns,
                ntp,
            } => {
                if mac.is_some() {
                    notes.push(format!(
                        "ip={ip}: setting a MAC address is not supported; ignored"
                    ));
                }
                let addressing = Addressing {
                    dhcp: Some(*method == AutoMethod::Dhcp),
                    addresses: vec![Cidr {
                        address: *address,
                        prefix_len: *prefix_len,
                    }],
                    gateway: *gateway,
                    mtu: *mtu,
                    ..Addressing::default()
                };
                match interface {
                    Some(interface) => {
                        if let Some(a) = addressing_for(&mut config, interface, &mut errors) {
                            *a = addressing;
                        }
                    }
                    None => config.links.push(LinkConfig {
                        matches: LinkMatch {
                            name: Some("*".into()),
                            ..LinkMatch::default()
                        },
                        addressing,
                        first_only: true,
                        ..LinkConfig::default()
                    }),
                }
                config.dns.servers.extend(dns.iter().copied());
                config.ntp.servers.extend(ntp.iter().map(IpAddr::to_string));
                note_method(*method, ip, &mut notes);
            }
        }
    }
    if hostname.as_deref() == Some("") {
        hostname = None;
    }

    let mut servers = cmdline.nameservers.clone();
    servers.extend(
        config
            .dns
            .servers
            .iter()
            .copied()
            .filter(|s| !cmdline.nameservers.contains(s)),
    );
    config.dns.servers = servers;
    if !cmdline.peerdns {
        config.dns.from_dhcp = false;
    }

    for route in &cmdline.routes {
        let target = route.interface.clone().or_else(|| {
            // No interface: the one whose static address reaches the gateway.
            route.gateway.and_then(|gw| interface_reaching(&config, gw))
        });
        let Some(target) = target else {
            errors.push(format!(
                "rd.route={}/{}: name the interface (…:<gateway>:<interface>); no statically \
                 addressed interface reaches the gateway",
                route.destination, route.prefix_len
            ));
            continue;
        };
        if let Some(a) = addressing_for(&mut config, &target, &mut errors) {
            a.routes.push(RouteConfig {
                to: Cidr {
                    address: route.destination,
                    prefix_len: route.prefix_len,
                }
                .network(),
                via: route.gateway,
                metric: None,
            });
        }
    }

    errors.extend(
        config
            .check()
            .into_iter()
            .map(|(path, reason)| format!("{path}: {reason}")),
    );
    if errors.is_empty() {
        Ok(Merged {
            config,
            hostname,
            notes,
        })
    } else {
        Err(errors)
    }
}

fn note_method(method: AutoMethod, ip: &IpArg, notes: &mut Vec<String>) {
    if !matches!(method, AutoMethod::Dhcp | AutoMethod::Off) {
        notes.push(format!(
            "ip={ip}: method {method} is not implemented (IPv6 router advertisements are always \
             accepted); treated as none"
        ));
    }
}

/// The addressing of the interface called `name`: a VLAN, bond or bridge of that name, a link
/// entry named so, or a new link entry matching that kernel name.
fn addressing_for<'c>(
    config: &'c mut NetworkConfig,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<&'c mut Addressing> {
    if name.parse::<IfName>().map_err(|e| errors.push(e)).is_err() {
        return None;
    }
    if let Some(i) = config.vlans.iter().position(|v| v.name.as_str() == name) {
        return Some(&mut config.vlans[i].addressing);
    }
    if let Some(i) = config.bonds.iter().position(|b| b.name.as_str() == name) {
        return Some(&mut config.bonds[i].addressing);
    }
    if let Some(i) = config.bridges.iter().position(|b| b.name.as_str() == name) {
        return Some(&mut config.bridges[i].addressing);
    }
    Some(&mut link_entry(config, name).addressing)
}

fn link_entry<'c>(config: &'c mut NetworkConfig, name: &str) -> &'c mut LinkConfig {
    let found = config.links.iter().position(|l| {
        l.name.as_ref().is_some_and(|n| n.as_str() == name)
            || (l.name.is_none() && l.matches.name.as_deref() == Some(name))
    });
    let i = match found {
        Some(i) => i,
        None => {
            config.links.push(LinkConfig {
                matches: LinkMatch {
                    name: Some(name.to_string()),
                    ..LinkMatch::default()
                },
                ..LinkConfig::default()
            });
            config.links.len() - 1
        }
    };
    &mut config.links[i]
}

fn interface_reaching(config: &NetworkConfig, gateway: IpAddr) -> Option<String> {
    let reaches = |a: &Addressing| {
        a.addresses.iter().any(|c| {
            Cidr {
                address: gateway,
                prefix_len: c.prefix_len,
            }
            .network()
                == c.network()
        })
    };
    config
        .links
        .iter()
        .find(|l| reaches(&l.addressing))
        .and_then(|l| l.name.clone().map(String::from).or(l.matches.name.clone()))
        .filter(|n| n != "*")
}

/// dracut's `bond=` options: `mode`, `miimon`, `primary`, `lacp_rate`, `xmit_hash_policy`.
fn bond_config(bond: &BondArg) -> Result<BondConfig, String> {
    let name: IfName = bond.name.parse()?;
    let links = bond
        .slaves
        .iter()
        .map(|s| s.parse::<IfName>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = BondConfig {
        name,
        links,
        mode: BondMode::BalanceRr,
        miimon: Duration::from_millis(100),
        primary: None,
        lacp_rate: LacpRate::Slow,
        xmit_hash_policy: HashPolicy::Layer2,
        addressing: Addressing {
            mtu: bond.mtu,
            ..Addressing::default()
        },
    };
    for (key, value) in &bond.options {
        match key.as_str() {
            "mode" => config.mode = value.parse()?,
            "miimon" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("miimon={value} is not a number of milliseconds"))?;
                config.miimon = Duration::from_millis(ms);
            }
            "primary" => config.primary = Some(value.parse()?),
            "lacp_rate" => {
                config.lacp_rate = match value.as_str() {
                    "slow" | "0" => LacpRate::Slow,
                    "fast" | "1" => LacpRate::Fast,
                    _ => return Err(format!("lacp_rate={value} is not slow or fast")),
                }
            }
            "xmit_hash_policy" => {
                config.xmit_hash_policy = match value.as_str() {
                    "layer2" => HashPolicy::Layer2,
                    "layer3+4" => HashPolicy::Layer34,
                    "layer2+3" => HashPolicy::Layer23,
                    "encap2+3" => HashPolicy::Encap23,
                    "encap3+4" => HashPolicy::Encap34,
                    _ => return Err(format!("xmit_hash_policy={value} is not a known policy")),
                }
            }
            _ => {
                return Err(format!(
                    "bond option {key} is not supported (use mode, miimon, primary, lacp_rate, \
                     xmit_hash_policy)"
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    fn merged(cmdline: &str) -> Merged {
        merge(NetworkConfig::default(), &parse(cmdline).unwrap()).unwrap()
    }

    #[test]
    fn an_empty_command_line_changes_nothing() {
        let m = merged("console=ttyS0 quiet");
        assert_eq!(m.config, NetworkConfig::default());
        assert_eq!(m.hostname, None);
    }

    #[test]
    fn static_ip_becomes_a_link_entry_with_dns_and_hostname() {
        let m = merged("ip=10.77.0.50::10.77.0.1:255.255.255.0:node7:eth0:none:10.77.0.53");
        let link = &m.config.links[0];
        assert_eq!(link.matches.name.as_deref(), Some("eth0"));
        assert_eq!(link.addressing.addresses[0].to_string(), "10.77.0.50/24");
        assert_eq!(link.addressing.gateway, Some("10.77.0.1".parse().unwrap()));
        assert!(!link.addressing.dhcp());
        assert_eq!(
            m.config.dns.servers,
            vec!["10.77.0.53".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(m.hostname.as_deref(), Some("node7"));
    }

    #[test]
    fn static_ip_without_an_interface_takes_the_first_link() {
        let m = merged("ip=10.0.0.5::10.0.0.1:24");
        assert!(m.config.links[0].first_only);
        assert_eq!(m.config.links[0].matches.name.as_deref(), Some("*"));
    }

    #[test]
    fn vlans_bonds_and_bridges_take_their_ip_settings() {
        let m = merged(
            "vlan=vlan10:eth0 ip=vlan10:dhcp bond=bond0:eth1,eth2:mode=active-backup,miimon=50 \
             ip=bond0:dhcp bridge=br0:eth3 ip=10.1.0.2::10.1.0.1:16::br0:none ip=eth0:off",
        );
        let c = &m.config;
        assert_eq!(c.vlans[0].id, 10);
        assert_eq!(c.vlans[0].link.as_str(), "eth0");
        assert!(c.vlans[0].addressing.dhcp());
        assert_eq!(c.bonds[0].mode, BondMode::ActiveBackup);
        assert_eq!(c.bonds[0].miimon, Duration::from_millis(50));
        assert_eq!(c.bonds[0].links.len(), 2);
        assert_eq!(
            c.bridges[0].addressing.addresses[0].to_string(),
            "10.1.0.2/16"
        );
        assert_eq!(c.links[0].matches.name.as_deref(), Some("eth0"));
        assert!(
            !c.links[0].addressing.dhcp(),
            "ip=eth0:off: the parent carries no address"
        );
    }

    #[test]
    fn ifname_names_links_by_mac_and_routes_find_their_interface() {
        let m = merged(
            "ifname=lan0:52:54:00:12:34:56 ip=10.0.0.5::10.0.0.1:24::lan0:none \
             rd.route=10.9.0.0/16:10.0.0.254 rd.route=10.8.0.0/16:10.0.0.253:lan0",
        );
        let link = &m.config.links[0];
        assert_eq!(link.name.as_ref().map(IfName::as_str), Some("lan0"));
        assert_eq!(
            link.matches.mac.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:12:34:56")
        );
        let routes: Vec<String> = link
            .addressing
            .routes
            .iter()
            .map(|r| r.to.to_string())
            .collect();
        assert_eq!(routes, ["10.9.0.0/16", "10.8.0.0/16"]);
    }

    #[test]
    fn nameservers_come_first_and_peerdns_turns_lease_dns_off() {
        let mut file = NetworkConfig::default();
        file.dns.servers = vec!["10.0.0.53".parse().unwrap()];
        let m = merge(file, &parse("nameserver=10.9.9.9 rd.peerdns=0").unwrap()).unwrap();
        assert_eq!(
            m.config.dns.servers,
            ["10.9.9.9", "10.0.0.53"]
                .map(|s| s.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert!(!m.config.dns.from_dhcp);
    }

    #[test]
    fn command_line_settings_replace_the_files_for_the_same_interface() {
        let file = NetworkConfig::parse(
            "f",
            "[[links]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.5/24\"]\n",
        )
        .unwrap();
        let m = merge(file, &parse("ip=eth0:dhcp").unwrap()).unwrap();
        assert_eq!(m.config.links.len(), 1);
        assert!(m.config.links[0].addressing.dhcp());
        assert!(m.config.links[0].addressing.addresses.is_empty());
    }

    #[test]
    fn ip_off_ignores_unconfigured_links_and_ipv6_methods_are_noted() {
        assert_eq!(merged("ip=off").config.unconfigured, Unconfigured::Ignore);
        let m = merged("ip=eth0:auto6");
        assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
        assert!(m.notes[0].contains("auto6"), "{:?}", m.notes);
    }

    #[test]
    fn bad_settings_are_errors_naming_the_key() {
        let e = merge(
            NetworkConfig::default(),
            &parse("bond=bond0:eth0:mode=fastest").unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("bond=bond0: unknown bond mode \"fastest\""),
            "{e:?}"
        );
        let e = merge(
            NetworkConfig::default(),
            &parse("bond=bond0:eth0:updelay=5").unwrap(),
        )
        .unwrap_err();
        assert!(
            e[0].contains("bond option updelay is not supported"),
            "{e:?}"
        );
        let e = merge(
            NetworkConfig::default(),
            &parse("rd.route=10.9.0.0/16:10.0.0.254").unwrap(),
        )
        .unwrap_err();
        assert!(e[0].contains("name the interface"), "{e:?}");
    }
}
