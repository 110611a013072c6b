//! Kernel uevents (`NETLINK_KOBJECT_UEVENT`): the messages the kernel broadcasts when a device
//! appears, changes or goes. Parsing is pure; the socket lives in `sys`.

use std::collections::BTreeMap;

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub vars: BTreeMap<String, String>,
}

impl Uevent {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
}

/// Parses one datagram: `ACTION@DEVPATH\0KEY=VALUE\0...`. Returns `None` for anything else,
/// including messages a udev daemon would multicast (they start with `libudev`).
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut parts = buf.split(|&b| b == 0).filter(|p| !p.is_empty());
    let header = std::str::from_utf8(parts.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    let mut vars = BTreeMap::new();
    for part in parts {
        let Ok(text) = std::str::from_utf8(part) else {
            continue;
        };
        if let Some((k, v)) = text.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    // The header and ACTION/DEVPATH must agree; a message that lies about itself is dropped.
    if vars.get("ACTION").is_some_and(|a| a != action)
        || vars.get("DEVPATH").is_some_and(|d| d != devpath)
    {
        return None;
    }
    Some(Uevent {
        action: action.to_string(),
        devpath: devpath.to_string(),
        vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_add_event() {
        let msg = b"add@/devices/pci0000:00/0000:00:04.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00\0SEQNUM=1234\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.devpath, "/devices/pci0000:00/0000:00:04.0");
        assert_eq!(ev.get("SUBSYSTEM"), Some("pci"));
        assert!(
            ev.get("MODALIAS")
                .unwrap()
                .starts_with("pci:v00008086d000010D3")
        );
    }

    #[test]
    fn rejects_other_messages() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b"add@/a\0ACTION=remove\0"), None);
        assert_eq!(parse(b"add@/a\0DEVPATH=/b\0"), None);
    }

    #[test]
    fn tolerates_odd_variables() {
        let ev = parse(b"change@/devices/x\0NOEQUALS\0\xff\xff=1\0K=v=w\0").unwrap();
        assert_eq!(ev.get("K"), Some("v=w"));
        assert_eq!(ev.vars.len(), 1);
    }
}
