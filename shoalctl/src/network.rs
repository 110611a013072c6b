//! `shoalctl network`: netd's state, read over `org.shoal.Network1`, and its reload.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use shoal_api::network::{LinkStatus, NetworkClient, NetworkStatus, RouteStatus, SOCKET};

use crate::Output;
use crate::table::{or_dash, render};

#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: Option<NetworkCommand>,
    /// Lines and tables for people, or JSON or YAML (the API's field names) for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// netd's API socket.
    #[arg(long, default_value = SOCKET, global = true)]
    socket: PathBuf,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum NetworkCommand {
    /// Online or not, each link in a line, the default route and DNS (the default).
    Status,
    /// Every link: kind, MAC, MTU, state, addresses, DHCP client.
    Links,
    /// The main routing table.
    Routes,
    /// DNS servers, search domains and NTP servers in force.
    Dns,
    /// The DHCP clients and their leases.
    Leases,
    /// Re-read netd's configuration (root or an admin); on errors the last good one stays.
    Reload,
}

pub async fn run(args: NetworkArgs) -> Result<()> {
    let client = connect(&args.socket).await?;
    let command = args.command.unwrap_or(NetworkCommand::Status);
    let status = match command {
        NetworkCommand::Reload => return reload(&client, args.output).await,
        _ => client.status().await?,
    };
    let output = args.output;
    let data = |value: serde_json::Value| crate::print_data(output, &value);
    match (command, output) {
        (NetworkCommand::Status, Output::Table) => print!("{}", summary(&status)),
        (NetworkCommand::Status, _) => data(serde_json::to_value(&status)?)?,
        (NetworkCommand::Links, Output::Table) => print!("{}", links_table(&status.links)),
        (NetworkCommand::Links, _) => data(serde_json::to_value(&status.links)?)?,
        (NetworkCommand::Routes, Output::Table) => print!("{}", routes_table(&status.routes)),
        (NetworkCommand::Routes, _) => data(serde_json::to_value(&status.routes)?)?,
        (NetworkCommand::Dns, Output::Table) => print!("{}", dns(&status)),
        (NetworkCommand::Dns, _) => data(serde_json::json!({
            "dns_servers": status.dns_servers,
            "dns_search": status.dns_search,
            "ntp_servers": status.ntp_servers,
        }))?,
        (NetworkCommand::Leases, Output::Table) => print!("{}", leases_table(&status.links)),
        (NetworkCommand::Leases, _) => data(leases_json(&status.links)?)?,
        (NetworkCommand::Reload, _) => unreachable!("reload is answered above"),
    }
    Ok(())
}

async fn connect(socket: &Path) -> Result<NetworkClient> {
    NetworkClient::connect(socket)
        .await
        .map_err(|e| crate::cannot_reach(e, format!("cannot reach netd at {}", socket.display())))
}

async fn reload(client: &NetworkClient, output: Output) -> Result<()> {
    let errors = client.reload().await?;
    match output {
        Output::Table if errors.is_empty() => println!("configuration reloaded"),
        Output::Table => {}
        _ => crate::print_data(output, &serde_json::json!({ "errors": errors }))?,
    }
    if !errors.is_empty() {
        bail!(
            "netd rejected the configuration; the last good one stays in force:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// `up`, `down` (administratively) or `no-carrier`.
fn link_state(link: &LinkStatus) -> &'static str {
    match (link.up, link.carrier) {
        (false, _) => "down",
        (true, false) => "no-carrier",
        (true, true) => "up",
    }
}

/// What runs on a link: its DHCP client's state, the bond or bridge it is a port of, or that
/// netd leaves it alone.
fn link_role(link: &LinkStatus) -> String {
    if let Some(lease) = link.dhcp.first() {
        format!("dhcp {}", lease.state)
    } else if !link.master.is_empty() {
        format!("port of {}", link.master)
    } else if !link.managed {
        "unmanaged".into()
    } else {
        "-".into()
    }
}

fn list(items: &[String], separator: &str) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(separator)
    }
}

fn is_default(route: &RouteStatus) -> bool {
    route.destination == "0.0.0.0/0" || route.destination == "::/0"
}

/// `online`, the configuration's sources and errors, one line per link, the default routes
/// and DNS.
fn summary(status: &NetworkStatus) -> String {
    let mut out = String::new();
    let online = match (status.online, status.online_timed_out) {
        (true, _) => "yes",
        (false, true) => "no (gave up waiting at online.timeout; boot went on)",
        (false, false) => "no",
    };
    out.push_str(&format!("online: {online}\n"));
    if !status.config_sources.is_empty() {
        out.push_str(&format!(
            "configuration: {}\n",
            status.config_sources.join(", ")
        ));
    }
    if !status.config_errors.is_empty() {
        out.push_str("configuration rejected, the last good one stays in force:\n");
        for e in &status.config_errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    if status.links.is_empty() {
        out.push_str("links: none\n");
    } else {
        out.push_str("links:\n");
    }
    let rows: Vec<Vec<String>> = status
        .links
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                link_state(l).into(),
                list(&l.addresses, ", "),
                link_role(l),
            ]
        })
        .collect();
    for line in render(&rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    let defaults: Vec<&RouteStatus> = status.routes.iter().filter(|r| is_default(r)).collect();
    if defaults.is_empty() {
        out.push_str("default route: none\n");
    }
    for r in defaults {
        let via = if r.gateway.is_empty() {
            String::new()
        } else {
            format!("via {} ", r.gateway)
        };
        out.push_str(&format!(
            "default route: {via}dev {} ({}, metric {})\n",
            r.link,
            or_dash(&r.protocol),
            r.metric
        ));
    }
    let search = if status.dns_search.is_empty() {
        String::new()
    } else {
        format!(" (search: {})", status.dns_search.join(", "))
    };
    out.push_str(&format!(
        "DNS: {}{search}\n",
        if status.dns_servers.is_empty() {
            "none".to_string()
        } else {
            status.dns_servers.join(", ")
        }
    ));
    out
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn links_table(links: &[LinkStatus]) -> String {
    let mut rows = vec![header(&[
        "NAME",
        "KIND",
        "MAC",
        "MTU",
        "STATE",
        "ADDRESSES",
        "DHCP",
    ])];
    for l in links {
        rows.push(vec![
            l.name.clone(),
            or_dash(&l.kind),
            or_dash(&l.mac),
            l.mtu.to_string(),
            link_state(l).into(),
            list(&l.addresses, ","),
            link_role(l),
        ]);
    }
    render(&rows)
}

fn routes_table(routes: &[RouteStatus]) -> String {
    let mut rows = vec![header(&[
        "DESTINATION",
        "GATEWAY",
        "LINK",
        "METRIC",
        "PROTOCOL",
    ])];
    for r in routes {
        rows.push(vec![
            r.destination.clone(),
            or_dash(&r.gateway),
            or_dash(&r.link),
            r.metric.to_string(),
            or_dash(&r.protocol),
        ]);
    }
    render(&rows)
}

fn dns(status: &NetworkStatus) -> String {
    render(&[
        vec!["DNS servers".into(), list(&status.dns_servers, ", ")],
        vec!["search domains".into(), list(&status.dns_search, ", ")],
        vec!["NTP servers".into(), list(&status.ntp_servers, ", ")],
    ])
}

fn leases_table(links: &[LinkStatus]) -> String {
    let mut rows = vec![header(&[
        "LINK",
        "ADDRESS",
        "SERVER",
        "GATEWAY",
        "LEASE",
        "REMAINING",
        "STATE",
    ])];
    for l in links {
        for lease in &l.dhcp {
            let held = !lease.address.is_empty();
            let time = |s: u32| if held { duration(s) } else { "-".into() };
            rows.push(vec![
                l.name.clone(),
                or_dash(&lease.address),
                or_dash(&lease.server),
                or_dash(&lease.gateway),
                time(lease.lease_s),
                time(lease.remaining_s),
                lease.state.clone(),
            ]);
        }
    }
    render(&rows)
}

/// Each DHCP client as its lease's fields plus `link`.
fn leases_json(links: &[LinkStatus]) -> Result<serde_json::Value> {
    let mut leases = Vec::new();
    for l in links {
        for lease in &l.dhcp {
            let mut value = serde_json::to_value(lease)?;
            if let Some(object) = value.as_object_mut() {
                object.insert("link".into(), l.name.clone().into());
            }
            leases.push(value);
        }
    }
    Ok(leases.into())
}

/// `45s`, `59m59s`, `1h`, `1h30m`, `2d3h`: the two largest units that are not zero.
pub(crate) fn duration(seconds: u32) -> String {
    let units = [
        (seconds / 86_400, "d"),
        (seconds / 3600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let Some(first) = units.iter().position(|(n, _)| *n > 0) else {
        return "0s".into();
    };
    units[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use shoal_api::network::LeaseStatus;

    use super::*;

    fn sample() -> NetworkStatus {
        let link = |name: &str, up: bool, carrier: bool| LinkStatus {
            name: name.into(),
            up,
            carrier,
            mtu: 1500,
            managed: true,
            ..LinkStatus::default()
        };
        NetworkStatus {
            online: true,
            links: vec![
                LinkStatus {
                    managed: false,
                    mtu: 65536,
                    addresses: vec!["127.0.0.1/8".into(), "::1/128".into()],
                    ..link("lo", true, true)
                },
                LinkStatus {
                    mac: "52:54:00:12:34:56".into(),
                    driver: "virtio_net".into(),
                    addresses: vec!["10.0.2.15/24".into()],
                    dhcp: vec![LeaseStatus {
                        state: "bound".into(),
                        address: "10.0.2.15/24".into(),
                        server: "10.0.2.2".into(),
                        gateway: "10.0.2.2".into(),
                        lease_s: 86_400,
                        remaining_s: 5400,
                        dns: vec!["10.0.2.3".into()],
                        ..LeaseStatus::default()
                    }],
                    ..link("eth0", true, true)
                },
                LinkStatus {
                    mac: "52:54:00:12:34:57".into(),
                    dhcp: vec![LeaseStatus {
                        state: "selecting".into(),
                        ..LeaseStatus::default()
                    }],
                    ..link("eth1", true, false)
                },
                LinkStatus {
                    kind: "bond".into(),
                    ..link("bond0", false, false)
                },
                LinkStatus {
                    master: "bond0".into(),
                    ..link("eth2", true, true)
                },
            ],
            routes: vec![
                RouteStatus {
                    destination: "0.0.0.0/0".into(),
                    gateway: "10.0.2.2".into(),
                    link: "eth0".into(),
                    metric: 1024,
                    protocol: "dhcp".into(),
                },
                RouteStatus {
                    destination: "10.0.2.0/24".into(),
                    gateway: "".into(),
                    link: "eth0".into(),
                    metric: 1024,
                    protocol: "kernel".into(),
                },
            ],
            dns_servers: vec!["10.0.2.3".into(), "1.1.1.1".into()],
            dns_search: vec!["example.com".into()],
            ntp_servers: vec![],
            config_sources: vec!["/etc/shoal/network.toml".into()],
            config_errors: vec![],
            online_timed_out: false,
        }
    }

    #[test]
    fn summary_shows_online_links_default_route_and_dns() {
        assert_eq!(
            summary(&sample()),
            "\
online: yes
configuration: /etc/shoal/network.toml
links:
  lo     up          127.0.0.1/8, ::1/128  unmanaged
  eth0   up          10.0.2.15/24          dhcp bound
  eth1   no-carrier  -                     dhcp selecting
  bond0  down        -                     -
  eth2   up          -                     port of bond0
default route: via 10.0.2.2 dev eth0 (dhcp, metric 1024)
DNS: 10.0.2.3, 1.1.1.1 (search: example.com)
"
        );
    }

    #[test]
    fn summary_tells_a_rejected_configuration_and_a_timeout() {
        let status = NetworkStatus {
            online_timed_out: true,
            config_errors: vec!["network.toml: line 3, column 1: unknown field `mtuu`".into()],
            ..NetworkStatus::default()
        };
        assert_eq!(
            summary(&status),
            "\
online: no (gave up waiting at online.timeout; boot went on)
configuration rejected, the last good one stays in force:
  network.toml: line 3, column 1: unknown field `mtuu`
links: none
default route: none
DNS: none
"
        );
    }

    #[test]
    fn tables() {
        let status = sample();
        assert_eq!(
            links_table(&status.links),
            "\
NAME   KIND  MAC                MTU    STATE       ADDRESSES            DHCP
lo     -     -                  65536  up          127.0.0.1/8,::1/128  unmanaged
eth0   -     52:54:00:12:34:56  1500   up          10.0.2.15/24         dhcp bound
eth1   -     52:54:00:12:34:57  1500   no-carrier  -                    dhcp selecting
bond0  bond  -                  1500   down        -                    -
eth2   -     -                  1500   up          -                    port of bond0
"
        );
        assert_eq!(
            routes_table(&status.routes),
            "\
DESTINATION  GATEWAY   LINK  METRIC  PROTOCOL
0.0.0.0/0    10.0.2.2  eth0  1024    dhcp
10.0.2.0/24  -         eth0  1024    kernel
"
        );
        assert_eq!(
            leases_table(&status.links),
            "\
LINK  ADDRESS       SERVER    GATEWAY   LEASE  REMAINING  STATE
eth0  10.0.2.15/24  10.0.2.2  10.0.2.2  1d     1h30m      bound
eth1  -             -         -         -      -          selecting
"
        );
        assert_eq!(
            dns(&status),
            "\
DNS servers     10.0.2.3, 1.1.1.1
search domains  example.com
NTP servers     -
"
        );
    }

    #[test]
    fn leases_json_names_the_link() {
        let json = leases_json(&sample().links).unwrap();
        assert_eq!(json[0]["link"], "eth0");
        assert_eq!(json[0]["remaining_s"], 5400);
        assert_eq!(json[1]["state"], "selecting");
        assert_eq!(json.as_array().unwrap().len(), 2);
    }

    #[test]
    fn durations() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (3599, "59m59s"),
            (3600, "1h"),
            (3660, "1h1m"),
            (3661, "1h1m"),
            (5400, "1h30m"),
            (86_400, "1d"),
            (86_460, "1d"),
            (183_600, "2d3h"),
        ];
        for (seconds, text) in cases {
            assert_eq!(duration(seconds), text, "{seconds}");
        }
    }
}
