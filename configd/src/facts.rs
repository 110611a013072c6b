//! The node's identity as the configuration sees it: MACs of its physical NICs, SMBIOS UUID
//! and serial number, hostname. Read from a sysfs/procfs root given as a parameter.

use std::path::Path;

use shoal_config::node::NodeFacts;

/// Serial numbers firmware reports when it has none.
const NO_SERIAL: [&str; 6] = [
    "",
    "0",
    "Not Specified",
    "To be filled by O.E.M.",
    "Default string",
    "System Serial Number",
];

/// Reads the facts under `sys` (`/sys`) and `proc` (`/proc`); missing ones stay `None`.
pub fn read(sys: &Path, proc: &Path) -> NodeFacts {
    let mut nics: Vec<(String, [u8; 6])> = std::fs::read_dir(sys.join("class/net"))
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let dir = entry.path();
            let device = std::fs::canonicalize(dir.join("device")).ok()?;
            let mac = parse_mac(std::fs::read_to_string(dir.join("address")).ok()?.trim())?;
            Some((device.to_string_lossy().into_owned(), mac))
        })
        .collect();
    // The NIC with the lowest bus path first: stable across boots, the one ${mac} names.
    nics.sort();
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let uuid = read(&sys.join("class/dmi/id/product_uuid"))
        .map(|u| u.to_ascii_lowercase())
        .filter(|u| usable_uuid(u));
    let serial =
        read(&sys.join("class/dmi/id/product_serial")).filter(|s| !NO_SERIAL.contains(&s.as_str()));
    let hostname =
        read(&proc.join("sys/kernel/hostname")).filter(|h| !h.is_empty() && h != "(none)");
    NodeFacts {
        macs: nics.into_iter().map(|(_, mac)| mac).collect(),
        uuid,
        serial,
        hostname,
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

/// Not a placeholder some firmware fills in (all zeros, all ones).
fn usable_uuid(uuid: &str) -> bool {
    shoal_config::machine::is_uuid(uuid)
        && !uuid.chars().filter(|c| *c != '-').all(|c| c == '0')
        && !uuid.chars().filter(|c| *c != '-').all(|c| c == 'f')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(sys: &Path, name: &str, pci: &str, mac: &str) {
        let device = sys.join("devices/pci0000:00").join(pci);
        std::fs::create_dir_all(&device).unwrap();
        let dir = sys.join("class/net").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        std::os::unix::fs::symlink(&device, dir.join("device")).unwrap();
    }

    #[test]
    fn reads_macs_in_bus_order_uuid_serial_and_hostname_from_a_fixture_tree() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let proc = root.path().join("proc");
        nic(&sys, "eth1", "0000:00:04.0", "52:54:00:00:00:02");
        nic(&sys, "eth0", "0000:00:03.0", "52:54:00:00:00:01");
        std::fs::create_dir_all(sys.join("class/net/lo")).unwrap();
        std::fs::write(sys.join("class/net/lo/address"), "00:00:00:00:00:00\n").unwrap();
        std::fs::create_dir_all(sys.join("class/dmi/id")).unwrap();
        std::fs::write(
            sys.join("class/dmi/id/product_uuid"),
            "4C4C4544-0042-3510-8051-B4C04F384B32\n",
        )
        .unwrap();
        std::fs::write(sys.join("class/dmi/id/product_serial"), "SN42\n").unwrap();
        std::fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        std::fs::write(proc.join("sys/kernel/hostname"), "node-1\n").unwrap();
        let facts = read(&sys, &proc);
        assert_eq!(
            facts.macs,
            [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]]
        );
        assert_eq!(
            facts.uuid.as_deref(),
            Some("4c4c4544-0042-3510-8051-b4c04f384b32")
        );
        assert_eq!(facts.serial.as_deref(), Some("SN42"));
        assert_eq!(facts.hostname.as_deref(), Some("node-1"));
    }

    #[test]
    fn placeholders_and_missing_sources_give_nothing() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        std::fs::create_dir_all(sys.join("class/dmi/id")).unwrap();
        std::fs::write(
            sys.join("class/dmi/id/product_uuid"),
            "00000000-0000-0000-0000-000000000000\n",
        )
        .unwrap();
        std::fs::write(
            sys.join("class/dmi/id/product_serial"),
            "To be filled by O.E.M.\n",
        )
        .unwrap();
        let facts = read(&sys, &root.path().join("proc"));
        assert_eq!(facts, NodeFacts::default());
    }
}
