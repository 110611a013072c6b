//! Name resolution and time sources for the rest of the node: `resolv.conf` and the NTP server
//! list, rendered from the configuration and the leases (pure), and written atomically.
//!
//! The image's `/etc/resolv.conf` is a symbolic link to `/run/shoal/resolv.conf`, so the
//! read-only root needs no change and every program finds the current servers.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// glibc and musl read at most three `nameserver` lines.
pub const MAX_NAMESERVERS: usize = 3;
/// glibc's limit on `search` domains.
pub const MAX_SEARCH: usize = 6;

/// Where DNS settings come from, in order of preference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSources {
    /// From the configuration and the kernel command line.
    pub configured_servers: Vec<IpAddr>,
    pub configured_search: Vec<String>,
    /// From leases, in the order the links were bound: (servers, domain name, search list).
    pub leases: Vec<(Vec<Ipv4Addr>, Option<String>, Vec<String>)>,
    /// Whether lease settings count at all.
    pub use_leases: bool,
}

/// The servers and search domains in force (deduplicated, in preference order, capped).
pub fn resolve(sources: &DnsSources) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut push_server = |s: IpAddr| {
        if !servers.contains(&s) && !s.is_unspecified() {
            servers.push(s);
        }
    };
    for s in &sources.configured_servers {
        push_server(*s);
    }
    let mut push_domain = |d: &str| {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        if !d.is_empty() && !search.contains(&d) {
            search.push(d);
        }
    };
    for d in &sources.configured_search {
        push_domain(d);
    }
    if sources.use_leases {
        for (lease_servers, domain, lease_search) in &sources.leases {
            for s in lease_servers {
                push_server(IpAddr::V4(*s));
            }
            // RFC 3397's list wins over the single domain name (option 15) when both are given.
            if lease_search.is_empty() {
                if let Some(d) = domain {
                    push_domain(d);
                }
            } else {
                for d in lease_search {
                    push_domain(d);
                }
            }
        }
    }
    servers.truncate(MAX_NAMESERVERS);
    search.truncate(MAX_SEARCH);
    (servers, search)
}

/// The text of `resolv.conf` for these settings.
pub fn render_resolv_conf(servers: &[IpAddr], search: &[String]) -> String {
    let mut text = String::from("# Written by shoal-netd; changes are overwritten.\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    text
}

/// NTP servers in force: configured ones first, then those leases offer.
pub fn ntp_servers(
    configured: &[String],
    leases: &[Vec<Ipv4Addr>],
    use_leases: bool,
) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let lease_servers = leases.iter().flatten().map(ToString::to_string);
    for s in configured
        .iter()
        .cloned()
        .chain(lease_servers.filter(|_| use_leases))
    {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    all
}

/// Writes `path` atomically (temporary file, fsync, rename) unless it already holds `text`.
/// Returns whether it changed.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn configured_servers_come_first_then_leases_deduplicated_and_capped() {
        let sources = DnsSources {
            configured_servers: vec!["10.0.0.53".parse().unwrap()],
            configured_search: vec!["Example.NET.".into()],
            leases: vec![
                (
                    vec![v4("10.77.0.1"), v4("10.0.0.53")],
                    Some("lan".into()),
                    vec![],
                ),
                (
                    vec![v4("10.88.0.1"), v4("10.99.0.1")],
                    Some("ignored".into()),
                    vec!["a.example".into(), "example.net".into()],
                ),
            ],
            use_leases: true,
        };
        let (servers, search) = resolve(&sources);
        assert_eq!(
            servers,
            ["10.0.0.53", "10.77.0.1", "10.88.0.1"]
                .map(|s| s.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(search, ["example.net", "lan", "a.example"]);
        assert_eq!(
            render_resolv_conf(&servers, &search),
            "# Written by shoal-netd; changes are overwritten.\nnameserver 10.0.0.53\n\
             nameserver 10.77.0.1\nnameserver 10.88.0.1\nsearch example.net lan a.example\n"
        );
    }

    #[test]
    fn leases_can_be_ignored() {
        let sources = DnsSources {
            leases: vec![(vec![v4("10.77.0.1")], None, vec![])],
            use_leases: false,
            ..DnsSources::default()
        };
        assert_eq!(resolve(&sources), (vec![], vec![]));
        assert_eq!(
            render_resolv_conf(&[], &[]),
            "# Written by shoal-netd; changes are overwritten.\n"
        );
    }

    #[test]
    fn ntp_servers_merge_in_order() {
        let leases = vec![
            vec![v4("10.77.0.1")],
            vec![v4("10.77.0.1"), v4("10.88.0.1")],
        ];
        assert_eq!(
            ntp_servers(&["time.example".into()], &leases, true),
            ["time.example", "10.77.0.1", "10.88.0.1"]
        );
        assert_eq!(ntp_servers(&[], &leases, false), Vec::<String>::new());
    }

    #[test]
    fn files_are_replaced_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal/resolv.conf");
        assert!(write_if_changed(&path, "a\n").unwrap());
        assert!(!write_if_changed(&path, "a\n").unwrap());
        assert!(write_if_changed(&path, "b\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        assert!(!path.with_extension("tmp").exists());
    }
}
