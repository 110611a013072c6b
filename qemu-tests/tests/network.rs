//! netd in booted VMs (issue 4), with dnsmasq on the harness bridge as the real DHCP server
//! (and the harness's own for leases shorter than dnsmasq's two minutes).
//! Connectivity is checked the way an operator would: by pinging the node's address from the
//! test network. The test image's `netinfo` service reports, once the node is online, what
//! programs on the node see (`/etc/resolv.conf`, routes, hostname).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_qemu_tests::dhcpd::LeaseConfig;
use shoal_qemu_tests::events::{Event, Record};
use shoal_qemu_tests::testing::{boot_timeout, start, step_timeout, test_image};
use shoal_qemu_tests::{DhcpConfig, Network, NicModel, Vm, scaled};

fn address_of(record: &Record) -> (String, Ipv4Addr) {
    let Event::DhcpBound { link, address, .. } = &record.event else {
        panic!("not a dhcp.bound event: {record:?}")
    };
    let ip = address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    (link.clone(), ip)
}

/// Pings until an answer comes or `timeout` passes.
fn reachable(network: &Network, addr: Ipv4Addr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if network.ping(addr, 1) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

fn fail(vm: &Vm, message: String) -> anyhow::Error {
    vm.mark_failed();
    anyhow::anyhow!("{message}\nconsole tail:\n{}", vm.tail(60))
}

#[test]
fn a_lease_brings_address_route_dns_ntp_mtu_and_slaac_and_is_renewed_at_t1() -> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    // 2-minute leases (dnsmasq's shortest), renewed after 5 s, rebound after 10 s.
    network.start_dnsmasq(DhcpConfig {
        lease_secs: 120,
        options: vec![
            "6,10.77.0.53".into(),
            "15,shoal.test".into(),
            "42,10.77.0.123".into(),
            "26,1400".into(),
            "58,5".into(),
            "59,10".into(),
        ],
        ..network.dhcp_config()
    })?;
    let mac = "52:54:00:77:4e:01";
    let vm = start(&image, "lease", |b| {
        b.nic_with_mac(&network, NicModel::VirtioNet, mac)
    })?;

    let bound = vm.wait_for_event("dhcp.bound", boot_timeout())?;
    let (link, addr) = address_of(&bound);
    let Event::DhcpBound {
        gateway,
        dns,
        lease_s,
        ms,
        ..
    } = &bound.event
    else {
        unreachable!()
    };
    println!("lease applied {ms} ms after netd started: {link} {addr}");
    if link != "eth0"
        || gateway.as_deref() != Some("10.77.0.1")
        || dns != &["10.77.0.53"]
        || *lease_s != 120
    {
        return Err(fail(&vm, format!("unexpected lease: {bound:?}")));
    }
    let online = vm.wait_for_event("network.online", step_timeout())?;
    let Event::NetworkOnline {
        timed_out, links, ..
    } = &online.event
    else {
        unreachable!()
    };
    if *timed_out || links != &["eth0"] {
        return Err(fail(&vm, format!("not online through eth0: {online:?}")));
    }
    if !reachable(&network, addr, scaled(Duration::from_secs(10))) {
        return Err(fail(&vm, format!("{addr} does not answer pings")));
    }
    let info: Value = vm.wait_for_test_report("netinfo", step_timeout())?;
    let resolv = info["resolv_conf"].as_str().unwrap_or_default();
    if !resolv.contains("nameserver 10.77.0.53\n") || !resolv.contains("search shoal.test\n") {
        return Err(fail(
            &vm,
            format!("/etc/resolv.conf on the node: {resolv:?}"),
        ));
    }
    if info["ntp_servers"] != "10.77.0.123\n" {
        return Err(fail(&vm, format!("NTP servers on the node: {info}")));
    }
    if info["mtu"]["eth0"] != 1400 {
        return Err(fail(
            &vm,
            format!("the lease's MTU (option 26) is not applied: {info}"),
        ));
    }
    // IPv6 router advertisements are accepted: the node has its SLAAC address from the
    // harness's fd77::/64 (EUI-64 from the MAC) and answers on it.
    let slaac: std::net::Ipv6Addr = "fd77::5054:ff:fe77:4e01".parse()?;
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while !network.ping6(slaac, 1) {
        if Instant::now() >= deadline {
            return Err(fail(&vm, format!("{slaac} (SLAAC) does not answer")));
        }
    }
    let routes: Vec<&str> = info["routes"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !routes.contains(&"0.0.0.0/0 via 10.77.0.1 dev eth0") {
        return Err(fail(
            &vm,
            format!("no default route via the router: {routes:?}"),
        ));
    }

    // T1 = 5 s: renewed, same address.
    let renewed = vm.wait_for_event("dhcp.renewed", step_timeout())?;
    let Event::DhcpRenewed { address, .. } = &renewed.event else {
        unreachable!()
    };
    if !address.starts_with(&format!("{addr}/")) {
        return Err(fail(
            &vm,
            format!("renewed a different address: {renewed:?}"),
        ));
    }

    Ok(())
}

/// dnsmasq will not lease for less than two minutes, so the expiry runs against the harness's
/// own server with a 20 s lease: renewed by unicast at T1 (5 s); once the server stops
/// answering, the renewal is retried by unicast, then broadcast to any server from T2 (10 s),
/// and when the lease ends the address is removed and stops answering.
#[test]
fn a_short_lease_is_renewed_then_rebound_by_broadcast_and_expires_without_a_server()
-> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    let config = LeaseConfig::short(20);
    let server = config.server;
    network.serve_dhcp(config)?;
    let vm = start(&image, "expiry", |b| {
        b.nic_with_mac(&network, NicModel::VirtioNet, "52:54:00:77:4e:02")
    })?;
    let bound = vm.wait_for_event("dhcp.bound", boot_timeout())?;
    let (_, addr) = address_of(&bound);
    if !matches!(bound.event, Event::DhcpBound { lease_s: 20, .. }) {
        return Err(fail(&vm, format!("unexpected lease: {bound:?}")));
    }
    if !reachable(&network, addr, scaled(Duration::from_secs(10))) {
        return Err(fail(&vm, format!("{addr} does not answer pings")));
    }
    vm.wait_for_event("dhcp.renewed", step_timeout())?;
    let dhcpd = network.dhcpd().expect("started above");
    let renewal = dhcpd.heard().into_iter().rfind(|h| h.answered);
    if !renewal
        .as_ref()
        .is_some_and(|h| h.ciaddr == addr && h.to == server)
    {
        return Err(fail(
            &vm,
            format!("the renewal was not a unicast REQUEST from {addr}: {renewal:?}"),
        ));
    }

    dhcpd.go_deaf();
    let deaf = Instant::now();
    let lost = vm.wait_for_event("dhcp.lost", scaled(Duration::from_secs(40)))?;
    let Event::DhcpLost { reason, .. } = &lost.event else {
        unreachable!()
    };
    let heard = dhcpd.heard();
    let unanswered: Vec<_> = heard.iter().filter(|h| !h.answered).collect();
    println!(
        "lease lost {:.1} s after the server went deaf ({reason}); unanswered: {:?}",
        deaf.elapsed().as_secs_f64(),
        unanswered
            .iter()
            .map(|h| format!(
                "{:.1}s to {}",
                h.at.duration_since(deaf).as_secs_f64(),
                h.to
            ))
            .collect::<Vec<_>>()
    );
    if reason != "expired" {
        return Err(fail(&vm, format!("lost for the wrong reason: {lost:?}")));
    }
    let renewing = unanswered
        .iter()
        .position(|h| h.to == server && h.ciaddr == addr);
    let rebinding = unanswered
        .iter()
        .position(|h| h.to == Ipv4Addr::BROADCAST && h.ciaddr == addr);
    if !matches!((renewing, rebinding), (Some(r), Some(b)) if r < b) {
        return Err(fail(
            &vm,
            format!("expected unicast renewals, then broadcast rebinds: {unanswered:?}"),
        ));
    }
    if network.ping(addr, 2) {
        return Err(fail(
            &vm,
            format!("{addr} still answers after its lease expired"),
        ));
    }
    Ok(())
}

#[test]
fn two_nics_on_two_networks_get_a_lease_each_and_one_default_route() -> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    let b = network.add_segment(1)?;
    network.start_dnsmasq(network.dhcp_config())?;
    network.start_segment_dnsmasq(network.segment_dhcp_config(&b))?;
    let vm = start(&image, "two-nics", |builder| {
        builder
            .nic(&network, NicModel::VirtioNet)
            .nic_on(&network, &b, NicModel::E1000e)
    })?;
    let first = vm.wait_for_nth_event("dhcp.bound", 0, boot_timeout())?;
    let second = vm.wait_for_nth_event("dhcp.bound", 1, step_timeout())?;
    // Which NIC the kernel calls eth0 depends on driver probe order; the subnets tell them apart.
    let mut leases = [address_of(&first), address_of(&second)];
    leases.sort_by_key(|(_, addr)| *addr);
    let [(link0, addr0), (link1, addr1)] = leases.clone();
    if link0 == link1 || addr0.octets()[2] != 0 || addr1.octets()[2] != 1 {
        return Err(fail(&vm, format!("leases: {leases:?}")));
    }
    for addr in [addr0, addr1] {
        if !reachable(&network, addr, scaled(Duration::from_secs(10))) {
            return Err(fail(&vm, format!("{addr} does not answer")));
        }
    }
    // The first lease took the default route; the second did not add another.
    let info: Value = vm.wait_for_test_report("netinfo", step_timeout())?;
    let defaults: Vec<String> = info["routes"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .filter(|r| r.starts_with("0.0.0.0/0"))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if defaults.len() != 1 {
        return Err(fail(
            &vm,
            format!("default routes: {defaults:?} (netinfo: {info})"),
        ));
    }
    Ok(())
}

#[test]
fn static_addressing_from_the_kernel_command_line_needs_no_dhcp_server() -> anyhow::Result<()> {
    let image = test_image()?;
    let network = Network::new()?;
    let vm = start(&image, "static", |b| {
        b.nic(&network, NicModel::VirtioNet)
            .cmdline("ip=10.77.0.42::10.77.0.1:255.255.255.0:static42:eth0:none:10.77.0.53")
    })?;
    let record = vm.wait_for_event("network.static", boot_timeout())?;
    let Event::NetworkStatic { link, addresses } = &record.event else {
        unreachable!()
    };
    if link != "eth0" || addresses != &["10.77.0.42/24"] {
        return Err(fail(&vm, format!("static configuration: {record:?}")));
    }
    vm.wait_for_event_matching(
        "hostname",
        step_timeout(),
        |r| matches!(&r.event, Event::Hostname { hostname, .. } if hostname == "static42"),
    )?;
    let online = vm.wait_for_event("network.online", step_timeout())?;
    if matches!(
        online.event,
        Event::NetworkOnline {
            timed_out: true,
            ..
        }
    ) {
        return Err(fail(&vm, format!("online only by timeout: {online:?}")));
    }
    if !reachable(
        &network,
        Ipv4Addr::new(10, 77, 0, 42),
        scaled(Duration::from_secs(10)),
    ) {
        return Err(fail(&vm, "10.77.0.42 does not answer pings".into()));
    }
    let info: Value = vm.wait_for_test_report("netinfo", step_timeout())?;
    if info["resolv_conf"]
        .as_str()
        .is_none_or(|r| !r.contains("nameserver 10.77.0.53\n"))
        || info["hostname"] != "static42"
    {
        return Err(fail(&vm, format!("netinfo: {info}")));
    }
    Ok(())
}

#[test]
fn an_active_backup_bond_keeps_connectivity_when_the_active_link_goes_down() -> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    network.start_dnsmasq(network.dhcp_config())?;
    let vm = start(&image, "bond", |b| {
        b.nic(&network, NicModel::VirtioNet)
            .nic(&network, NicModel::VirtioNet)
            .cmdline("bond=bond0:eth0,eth1:mode=active-backup,miimon=100 ip=bond0:dhcp")
    })?;
    let bound = vm.wait_for_event("dhcp.bound", boot_timeout())?;
    let (link, addr) = address_of(&bound);
    if link != "bond0" {
        return Err(fail(
            &vm,
            format!("the lease went to {link}, not bond0: {bound:?}"),
        ));
    }
    if !reachable(&network, addr, scaled(Duration::from_secs(10))) {
        return Err(fail(
            &vm,
            format!("{addr} does not answer through the bond"),
        ));
    }
    // The cable of the active port (eth0, the first) is pulled: its switch port goes down and
    // the NIC loses its carrier. The bond fails over to eth1 within miimon.
    let taps = vm.taps();
    network.set_link(&taps[0], false)?;
    vm.link_down(0)?;
    let pulled = Instant::now();
    if !reachable(&network, addr, scaled(Duration::from_secs(10))) {
        return Err(fail(
            &vm,
            format!("{addr} unreachable after the active link went down"),
        ));
    }
    println!(
        "bond0 answered again {:.2} s after eth0 went down",
        pulled.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn a_vlan_on_a_nic_gets_its_own_lease_from_the_server_on_that_vlan() -> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    // VLAN 10 on br0 is the untagged segment br10 (10.77.10.0/24) behind the harness's
    // user-space 802.1Q relay; br0 itself has its own server for untagged eth0.
    let vlan = network.add_vlan(10, 10)?;
    network.start_dnsmasq(network.dhcp_config())?;
    network.start_segment_dnsmasq(network.segment_dhcp_config(&vlan.segment))?;
    let vm = start(&image, "vlan", |b| {
        b.nic(&network, NicModel::VirtioNet)
            .cmdline("vlan=vlan10:eth0 ip=vlan10:dhcp")
    })?;
    let bound = vm
        .wait_for_event_matching(
            "dhcp.bound on vlan10",
            boot_timeout(),
            |r| matches!(&r.event, Event::DhcpBound { link, .. } if link == "vlan10"),
        )
        .map_err(|e| anyhow::anyhow!("{e}\nVLAN relay: {:?}", vlan.counters()))?;
    let (_, addr) = address_of(&bound);
    println!("vlan10 bound {addr}; relay: {:?}", vlan.counters());
    if addr.octets()[..3] != vlan.segment.host_addr.octets()[..3] {
        return Err(fail(
            &vm,
            format!("vlan10's lease is not from the VLAN's subnet: {bound:?}"),
        ));
    }
    if !reachable(&network, addr, scaled(Duration::from_secs(10))) {
        return Err(fail(
            &vm,
            format!(
                "{addr} does not answer through the VLAN; relay: {:?}",
                vlan.counters()
            ),
        ));
    }
    Ok(())
}
