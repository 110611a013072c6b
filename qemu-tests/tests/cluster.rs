//! Cluster membership in booted VMs (issue 6): three VMs started together on one LAN, with a
//! cluster secret from the configuration URL and no addresses configured anywhere, become one
//! cluster with a leader and no manual step; `shoalctl` on the host (in the test network) sees
//! it and writes through it; a 4th and a 5th node join as non-voters (three voters are
//! configured); the 5th reboots and, diskless, rejoins under a new id; powering the leader off
//! elects another and writes continue.
//!
//! Needs the release `shoalctl` binary (`cargo xtask test` builds the whole workspace).

use std::time::Duration;

use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::testing::{boot_timeout, eventually, shoalctl, start, test_image};
use shoal_qemu_tests::{Network, NicModel, Vm, scaled};

const SECRET: &str = "dm0gY2x1c3RlciB0ZXN0IHNlY3JldCwgMzIgYnl0ZXMhIQ==";

fn fail(vms: &[Vm], message: String) -> anyhow::Error {
    let mut text = message;
    for vm in vms {
        vm.mark_failed();
        text.push_str(&format!(
            "\n--- {} console tail:\n{}",
            vm.name(),
            vm.tail(40)
        ));
    }
    anyhow::anyhow!(text)
}

struct Membership {
    cluster_id: String,
    node: u64,
    leader: u64,
    /// Host time since this VM's QEMU started.
    at: Duration,
    /// The address its lease gave, without the prefix length.
    address: String,
}

fn membership(vm: &Vm) -> anyhow::Result<Membership> {
    vm.wait_for_event("cluster.member", boot_timeout())?;
    let timed = vm
        .events()
        .into_iter()
        .find(|e| e.name() == "cluster.member")
        .ok_or_else(|| anyhow::anyhow!("cluster.member vanished"))?;
    let Event::ClusterMember {
        cluster_id,
        node,
        leader,
        ..
    } = timed.record.event
    else {
        unreachable!()
    };
    let address = vm
        .leased_address()
        .ok_or_else(|| anyhow::anyhow!("no lease"))?;
    Ok(Membership {
        cluster_id,
        node,
        leader,
        at: timed.at,
        address,
    })
}

#[test]
fn three_vms_booted_together_form_one_cluster_and_elect_a_new_leader_when_it_powers_off()
-> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    network.start_dnsmasq(network.dhcp_config())?;
    let www = tempfile::tempdir()?;
    let config = format!("[cluster]\nname = \"vmlab\"\nsecret = \"{SECRET}\"\nexpected_size = 3\n");
    std::fs::write(www.path().join("cluster.toml"), &config)?;
    let operator = tempfile::tempdir()?;
    let machine = operator.path().join("machine.toml");
    std::fs::write(&machine, &config)?;
    let machine = machine.display().to_string();
    network.serve_http(www.path())?;
    let mut vms = Vec::new();
    for i in 0..3 {
        vms.push(start(&image, &format!("cluster{i}"), |b| {
            b.nic(&network, NicModel::VirtioNet)
                .cmdline("shoal.config=http://10.77.0.1/cluster.toml")
        })?);
    }
    let mut members = Vec::new();
    for vm in &vms {
        members.push(membership(vm).map_err(|e| fail(&vms, e.to_string()))?);
    }
    let first = &members[0];
    if members
        .iter()
        .any(|m| m.cluster_id != first.cluster_id || m.leader != first.leader)
    {
        let seen: Vec<(String, u64)> = members
            .iter()
            .map(|m| (m.cluster_id.clone(), m.leader))
            .collect();
        return Err(fail(
            &vms,
            format!("not one cluster with one leader: {seen:?}"),
        ));
    }
    let times: Vec<String> = members
        .iter()
        .map(|m| format!("{:.2}", m.at.as_secs_f64()))
        .collect();
    println!(
        "three VMs members of cluster {} with leader {}, seconds from each QEMU start: {}",
        first.cluster_id,
        first.leader,
        times.join(", ")
    );
    for vm in &vms {
        let steps: Vec<String> = vm
            .events()
            .iter()
            .filter(|e| {
                matches!(
                    e.name(),
                    "boot.complete"
                        | "network.online"
                        | "config.resolved"
                        | "cluster.initialize"
                        | "cluster.leader"
                        | "cluster.member"
                ) || matches!(&e.record.event, Event::Service { name, .. } if name == "clusterd")
            })
            .map(|e| format!("{} {:.2}", e.name(), e.at.as_secs_f64()))
            .collect();
        println!("{}: {}", vm.name(), steps.join(", "));
        if std::env::var_os("SHOAL_CLUSTER_DEBUG").is_some() {
            for l in vm.lines().iter().filter(|l| l.text.contains("clusterd")) {
                println!("  {:.2} {}", l.at.as_secs_f64(), l.text);
            }
        }
    }

    // The operator's view from the host: every node, and a write through one node read back
    // through another.
    let endpoint = |m: &Membership| format!("{}:7443", m.address);
    // Each node registers itself about a second after it becomes a member.
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(15));
    let nodes = loop {
        let listed = shoalctl(
            &network,
            &[
                "nodes",
                "--machine-config",
                &machine,
                "--endpoint",
                &endpoint(&members[0]),
                "-o",
                "json",
            ],
        )
        .map_err(|e| fail(&vms, e.to_string()))?;
        let nodes: serde_json::Value = serde_json::from_str(&listed)?;
        let healthy = nodes
            .as_array()
            .map_or(0, |a| a.iter().filter(|n| n["healthy"] == true).count());
        if healthy == 3 {
            break nodes;
        }
        if std::time::Instant::now() > deadline {
            return Err(fail(
                &vms,
                format!("shoalctl nodes never listed 3 healthy nodes: {nodes}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let leaders = nodes
        .as_array()
        .map_or(0, |a| a.iter().filter(|n| n["role"] == "leader").count());
    if leaders != 1 {
        return Err(fail(&vms, format!("not one leader in {nodes}")));
    }
    shoalctl(
        &network,
        &[
            "kv",
            "put",
            "greeting",
            "hello",
            "--machine-config",
            &machine,
            "--endpoint",
            &endpoint(&members[1]),
        ],
    )
    .map_err(|e| fail(&vms, e.to_string()))?;
    let read = shoalctl(
        &network,
        &[
            "kv",
            "get",
            "greeting",
            "--machine-config",
            &machine,
            "--endpoint",
            &endpoint(&members[2]),
            "-o",
            "json",
        ],
    )
    .map_err(|e| fail(&vms, e.to_string()))?;
    let read: serde_json::Value = serde_json::from_str(&read)?;
    if read["value"] != "hello" {
        return Err(fail(&vms, format!("read back {read}")));
    }

    // The footprint of an idle member (the figure the project compares: sum of VmRSS).
    let rss = vms[0]
        .wait_for_test_report("rss-cluster", scaled(Duration::from_secs(20)))
        .map_err(|e| fail(&vms, e.to_string()))?;
    let kib = |k: &str| rss[k].as_u64().unwrap_or(0);
    println!(
        "idle member: PID 1 {} KiB, supervisor {} KiB, netd {} KiB, clusterd {} KiB; {} processes, {:.1} MiB in all",
        kib("pid1_kib"),
        kib("supervisor_kib"),
        kib("netd_kib"),
        kib("clusterd_kib"),
        kib("processes"),
        kib("total_kib") as f64 / 1024.0
    );
    if kib("clusterd_kib") == 0 {
        return Err(fail(
            &vms,
            format!("no clusterd in the footprint report: {rss}"),
        ));
    }

    // A 4th and a 5th node join later, through whichever node answers: members, not voters
    // (three voters are configured, the default).
    let late_macs = [
        shoal_qemu_tests::vm::next_mac(),
        shoal_qemu_tests::vm::next_mac(),
    ];
    let boot_late = |i: usize, mac: &str| {
        start(&image, &format!("cluster{}", i + 3), |b| {
            b.nic_with_mac(&network, NicModel::VirtioNet, mac)
                .cmdline("shoal.config=http://10.77.0.1/cluster.toml")
        })
    };
    let mut late = Vec::new();
    for (i, mac) in late_macs.iter().enumerate() {
        late.push(boot_late(i, mac)?);
    }
    let mut late_members = Vec::new();
    for vm in &late {
        late_members.push(membership(vm).map_err(|e| fail(&late, e.to_string()))?);
    }
    if late_members
        .iter()
        .any(|m| m.cluster_id != first.cluster_id)
    {
        return Err(fail(&late, "a late node is in another cluster".into()));
    }
    let members_json = |endpoint: &str| -> anyhow::Result<serde_json::Value> {
        let text = shoalctl(
            &network,
            &[
                "members",
                "--machine-config",
                &machine,
                "--endpoint",
                endpoint,
                "-o",
                "json",
            ],
        )?;
        Ok(serde_json::from_str(&text)?)
    };
    let count = |v: &serde_json::Value, key: &str| v[key].as_array().map_or(0, Vec::len);
    eventually(
        "3 voters and 2 learners",
        scaled(Duration::from_secs(15)),
        Duration::from_millis(250),
        || {
            let view = members_json(&endpoint(&late_members[0])).map_err(|e| e.to_string())?;
            match (count(&view, "voters"), count(&view, "learners")) {
                (3, 2) => Ok(()),
                _ => Err(view.to_string()),
            }
        },
    )
    .map_err(|e| fail(&late, e))?;
    println!(
        "a 4th and a 5th node joined as non-voters: members {:.2} and {:.2} s after their QEMU start",
        late_members[0].at.as_secs_f64(),
        late_members[1].at.as_secs_f64()
    );

    // The 5th loses power and boots again. Diskless (no STATE partition yet), it rejoins as a
    // new member under a new id; the old id is forgotten after the forget delay (10 min).
    let old_id = late_members[1].node;
    late[1].kill();
    let rebooted = boot_late(1, &late_macs[1])?;
    let again =
        membership(&rebooted).map_err(|e| fail(std::slice::from_ref(&rebooted), e.to_string()))?;
    if again.cluster_id != first.cluster_id || again.node == old_id {
        return Err(fail(
            &late,
            format!(
                "the rebooted node is {:016x} in {} (was {old_id:016x} in {})",
                again.node, again.cluster_id, first.cluster_id
            ),
        ));
    }
    let view = members_json(&endpoint(&again)).map_err(|e| fail(&late, e.to_string()))?;
    let new_id = format!("{:016x}", again.node);
    if !view["learners"]
        .as_array()
        .is_some_and(|l| l.iter().any(|m| m["id"] == new_id.as_str()))
    {
        return Err(fail(
            &late,
            format!("the rebooted node is not a learner: {view}"),
        ));
    }
    println!(
        "the rebooted 5th node rejoined as {new_id} {:.2} s after its QEMU start",
        again.at.as_secs_f64()
    );
    drop(rebooted);
    drop(late);

    // Power cut on the leader.
    let Some(leader) = members.iter().position(|m| m.node == first.leader) else {
        return Err(fail(&vms, "the leader is none of the three".into()));
    };
    let old = first.leader;
    vms[leader].kill();
    let cut = std::time::Instant::now();
    for (i, vm) in vms.iter().enumerate() {
        if i == leader {
            continue;
        }
        vm.wait_for_event_matching(
            "cluster.leader",
            scaled(Duration::from_secs(15)),
            |r| matches!(r.event, Event::ClusterLeader { leader, .. } if leader != old),
        )
        .map_err(|e| fail(&vms, format!("{}: no new leader: {e}", vm.name())))?;
    }
    println!(
        "new leader seen by both survivors {:.2} s after the leader's QEMU was killed (host clock)",
        cut.elapsed().as_secs_f64()
    );
    // Writes continue through a survivor.
    let survivor = members
        .iter()
        .enumerate()
        .find(|(i, _)| *i != leader)
        .map(|(_, m)| endpoint(m))
        .unwrap_or_default();
    shoalctl(
        &network,
        &[
            "kv",
            "put",
            "greeting",
            "after",
            "--machine-config",
            &machine,
            "--endpoint",
            &survivor,
        ],
    )
    .map_err(|e| fail(&vms, format!("no write after the failover: {e}")))?;
    Ok(())
}
