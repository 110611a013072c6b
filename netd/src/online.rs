//! When the node counts as online: the rule behind the `network-online` readiness.

use crate::config::Require;

/// What the rule needs to know about one managed interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceStatus {
    pub name: String,
    pub required: bool,
    /// It has an address from the configuration or a lease.
    pub configured: bool,
    /// It has (or is) the route out: a default route or a static configuration.
    pub routable: bool,
}

/// The interfaces that make the node online, or `None` while it is not.
///
/// - `any`: one interface configured and routable (a lease with a router, or static
///   addresses), so that the first lease on a multi-NIC machine does not wait for the others.
/// - `all`: every required interface configured (and at least one interface exists).
pub fn online(require: Require, ifaces: &[IfaceStatus]) -> Option<Vec<String>> {
    let names = |filter: &dyn Fn(&IfaceStatus) -> bool| -> Vec<String> {
        ifaces
            .iter()
            .filter(|i| filter(i))
            .map(|i| i.name.clone())
            .collect()
    };
    match require {
        Require::Any => {
            let up = names(&|i| i.configured && i.routable);
            (!up.is_empty()).then_some(up)
        }
        Require::All => {
            let required: Vec<&IfaceStatus> = ifaces.iter().filter(|i| i.required).collect();
            (!required.is_empty() && required.iter().all(|i| i.configured))
                .then(|| names(&|i| i.configured))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, required: bool, configured: bool, routable: bool) -> IfaceStatus {
        IfaceStatus {
            name: name.into(),
            required,
            configured,
            routable,
        }
    }

    #[test]
    fn any_needs_one_configured_routable_interface() {
        assert_eq!(online(Require::Any, &[]), None);
        assert_eq!(
            online(
                Require::Any,
                &[
                    status("eth0", true, true, false),
                    status("eth1", true, false, false)
                ]
            ),
            None
        );
        assert_eq!(
            online(
                Require::Any,
                &[
                    status("eth0", true, false, false),
                    status("eth1", true, true, true)
                ]
            ),
            Some(vec!["eth1".to_string()])
        );
    }

    #[test]
    fn all_needs_every_required_interface() {
        let mut ifaces = vec![
            status("eth0", true, true, true),
            status("eth1", true, false, false),
            status("eth2", false, false, false),
        ];
        assert_eq!(online(Require::All, &ifaces), None);
        ifaces[1].configured = true;
        assert_eq!(
            online(Require::All, &ifaces),
            Some(vec!["eth0".to_string(), "eth1".to_string()])
        );
        assert_eq!(
            online(Require::All, &[status("eth2", false, true, true)]),
            None
        );
    }
}
