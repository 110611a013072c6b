//! dnsmasq as the DHCP server of a test network (DNS off). With an iPXE script URL set it
//! answers iPXE's DHCP requests (they carry option 175) with that URL as the boot file; QEMU's
//! NIC option ROM is iPXE, so there is no first TFTP stage.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::net::{HOST_ADDR, Namespace};

/// dnsmasq will not hand out leases shorter than this.
pub const MIN_LEASE_SECS: u32 = 120;
use crate::{Error, Result};

/// How long dnsmasq may take to report that DHCP is up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What dnsmasq hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// First and last address of the dynamic range (on [`HOST_ADDR`]'s /24).
    pub range: (Ipv4Addr, Ipv4Addr),
    /// Fixed leases: MAC address (`52:54:00:..`) to address.
    pub fixed: Vec<(String, Ipv4Addr)>,
    /// The URL iPXE should chain-load (`http://.../boot.ipxe`).
    pub ipxe_script: Option<String>,
    /// Lease time in seconds (dnsmasq's minimum is [`MIN_LEASE_SECS`]).
    pub lease_secs: u32,
    /// Extra `--dhcp-option=` values, such as `6,10.77.0.53` (DNS) or `58,5` (T1).
    pub options: Vec<String>,
    /// The bridge it serves (`br0`, or a [`crate::net::Segment`]'s).
    pub interface: String,
    /// Names it answers over DNS (and nothing else); empty: no DNS server at all.
    pub dns_names: Vec<(String, Ipv4Addr)>,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        let [a, b, c, _] = HOST_ADDR.octets();
        DhcpConfig {
            range: (Ipv4Addr::new(a, b, c, 100), Ipv4Addr::new(a, b, c, 199)),
            fixed: Vec::new(),
            ipxe_script: None,
            lease_secs: 3600,
            options: Vec::new(),
            interface: "br0".into(),
            dns_names: Vec::new(),
        }
    }
}

impl DhcpConfig {
    /// The default configuration for the /24 around `host` (a [`crate::Network`]'s address).
    pub fn for_host(host: Ipv4Addr) -> DhcpConfig {
        let [a, b, c, _] = host.octets();
        DhcpConfig {
            range: (Ipv4Addr::new(a, b, c, 100), Ipv4Addr::new(a, b, c, 199)),
            ..DhcpConfig::default()
        }
    }
}

impl DhcpConfig {
    /// dnsmasq's command line for this configuration, files under `dir`.
    fn args(&self, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "--no-daemon".to_string(),
            "--conf-file=/dev/null".to_string(),
            format!("--interface={}", self.interface),
            "--bind-interfaces".to_string(),
            "--user=root".to_string(),
            "--log-dhcp".to_string(),
            // dnsmasq would otherwise ping an address for up to 3 s before offering it.
            "--no-ping".to_string(),
            format!("--log-facility={}", dir.join("dnsmasq.log").display()),
            format!("--dhcp-leasefile={}", dir.join("leases").display()),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            format!(
                "--dhcp-range={},{},255.255.255.0,{}",
                self.range.0,
                self.range.1,
                self.lease_secs.max(MIN_LEASE_SECS)
            ),
            // Router advertisements (SLAAC only, no DHCPv6): iPXE finishes configuring as soon as
            // one arrives instead of waiting ~15 s for IPv6 to time out.
            "--enable-ra".to_string(),
            format!(
                "--dhcp-range=::,constructor:{},ra-only,64,1h",
                self.interface
            ),
        ];
        if self.dns_names.is_empty() {
            args.push("--port=0".to_string());
        } else {
            // Only the names given: no upstream servers, no /etc/hosts of the machine.
            args.extend(["--no-resolv".to_string(), "--no-hosts".to_string()]);
            for (name, addr) in &self.dns_names {
                args.push(format!("--address=/{name}/{addr}"));
            }
        }
        for option in &self.options {
            args.push(format!("--dhcp-option={option}"));
        }
        for (mac, addr) in &self.fixed {
            args.push(format!("--dhcp-host={mac},{addr}"));
        }
        if let Some(url) = &self.ipxe_script {
            args.push("--dhcp-match=set:ipxe,175".to_string());
            args.push(format!("--dhcp-boot=tag:ipxe,{url}"));
            // iPXE's no-pxedhcp setting (175.176): do not wait for ProxyDHCP offers.
            args.push("--dhcp-option=tag:ipxe,encap:175,176,1".to_string());
        }
        args
    }
}

/// A running dnsmasq; killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    pub(crate) fn start(namespace: &Namespace, config: DhcpConfig) -> Result<Dnsmasq> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-dnsmasq-")
            .tempdir()
            .map_err(Error::io("create dnsmasq's directory"))?;
        let stderr = File::create(dir.path().join("dnsmasq.stderr"))
            .map_err(Error::io("create dnsmasq.stderr"))?;
        let mut command = namespace.command("dnsmasq");
        command
            .args(config.args(dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        crate::process::die_with_parent(&mut command);
        let child = command.spawn().map_err(Error::io("start dnsmasq"))?;
        let mut dnsmasq = Dnsmasq { child, dir };
        dnsmasq.wait_until_serving()?;
        Ok(dnsmasq)
    }

    /// dnsmasq logs its DHCP range once its sockets are bound.
    fn wait_until_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.log().contains("DHCP, IP range") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Command {
                    command: "dnsmasq".into(),
                    status: status.to_string(),
                    stderr: format!("{}{}", self.stderr(), self.log()),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Command {
                    command: "dnsmasq".into(),
                    status: format!("not serving DHCP after {START_TIMEOUT:?}"),
                    stderr: format!("{}{}", self.stderr(), self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// dnsmasq's log so far (DHCP conversations included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.stderr")).unwrap_or_default()
    }

    /// The current leases file (`expiry mac ip hostname client-id` per line).
    pub fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("leases")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_clients_get_the_script_url() {
        let config = DhcpConfig {
            fixed: vec![("52:54:00:77:00:01".into(), Ipv4Addr::new(10, 77, 0, 11))],
            ipxe_script: Some("http://10.77.0.1:80/boot.ipxe".into()),
            ..DhcpConfig::default()
        };
        let args = config.args(Path::new("/d"));
        assert!(
            args.contains(&"--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,3600".to_string())
        );
        assert!(args.contains(&"--dhcp-host=52:54:00:77:00:01,10.77.0.11".to_string()));
        assert!(args.contains(&"--dhcp-match=set:ipxe,175".to_string()));
        assert!(args.contains(&"--dhcp-boot=tag:ipxe,http://10.77.0.1:80/boot.ipxe".to_string()));
        assert!(args.contains(&"--port=0".to_string()));
    }
}
