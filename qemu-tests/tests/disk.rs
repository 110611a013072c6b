//! The A/B disk image under UEFI: OVMF runs systemd-boot from the ESP, which boots slot A's
//! kernel with the root hash on its command line; PID 1 opens the slot through dm-verity, grows
//! STATE to fill the disk and mounts it on /var, so the node keeps its identity across reboots;
//! configd reads the machine configuration dropped onto the ESP.
//! A flipped byte in the slot stops the boot with a message naming dm-verity.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::testing::{boot_timeout, eventually, host_tool, step_timeout, test_image};
use shoal_qemu_tests::vm::Disk;
use shoal_qemu_tests::{Image, Network, NicModel, Vm, scaled};

const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";

fn fail(vm: &Vm, message: String) -> anyhow::Error {
    vm.mark_failed();
    anyhow::anyhow!("{}: {message}", vm.name())
}

/// The image flashed onto a 1 GiB disk in `dir`, with a one-node cluster's machine
/// configuration (and `extra`) dropped onto its ESP the way an edge appliance gets it before
/// shipping; the configuration is also `dir/machine.toml`, for shoalctl.
fn flash(image: &Image, dir: &Path, extra: &str) -> anyhow::Result<std::path::PathBuf> {
    let disk = dir.join("disk.raw");
    let disk_arg = disk.display().to_string();
    host_tool(
        "cp",
        &[
            "--sparse=always",
            &image.disk_raw().display().to_string(),
            &disk_arg,
        ],
    )?;
    host_tool("truncate", &["-s", "1G", &disk_arg])?;
    let config = dir.join("machine.toml");
    std::fs::write(
        &config,
        format!("[cluster]\nname = \"disk\"\nsecret = \"{SECRET}\"\nexpected_size = 1\n{extra}"),
    )?;
    let (esp_offset, _) = partition(image, "ESP")?;
    host_tool(
        "mcopy",
        &[
            "-i",
            &format!("{disk_arg}@@{esp_offset}"),
            &config.display().to_string(),
            "::shoal/machine.toml",
        ],
    )?;
    Ok(disk)
}

/// The test image flashed (see [`flash`], with `extra` configuration) into a fresh directory,
/// and a test network with DHCP for the VM that boots it.
fn lab(extra: &str) -> anyhow::Result<(Image, Network, tempfile::TempDir, std::path::PathBuf)> {
    let image = test_image()?;
    let mut network = Network::new()?;
    network.start_dnsmasq(network.dhcp_config())?;
    let dir = tempfile::tempdir()?;
    let disk = flash(&image, dir.path(), extra)?;
    Ok((image, network, dir, disk))
}

/// Where partition `name` of the image's disk starts, and its size, from the manifest.
fn partition(image: &Image, name: &str) -> anyhow::Result<(u64, u64)> {
    let disk = image
        .manifest()
        .disk
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the test image has no disk"))?;
    let p = disk
        .partitions
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow::anyhow!("no partition {name} in the manifest"))?;
    Ok((p.offset, p.size))
}

fn boot(name: &str, network: &Network, disk: &Path) -> anyhow::Result<Vm> {
    // The variable store lives next to the disk: the same machine across reboots.
    let vars = disk.with_extension("vars");
    Ok(Vm::builder(name)
        .uefi_vars(vars)
        .firmware_boot()
        .disk(Disk::virtio(disk))
        .nic(network, NicModel::VirtioNet)
        .start()?)
}

/// The node's id once it is a member, and the STATE event of this boot.
fn member_and_state(vm: &Vm) -> anyhow::Result<(u64, u64, Option<u64>)> {
    let verity = vm
        .wait_for_event("root.verity", boot_timeout())
        .map_err(|e| fail(vm, e.to_string()))?;
    let Event::RootVerity {
        slot, partition, ..
    } = &verity.event
    else {
        unreachable!()
    };
    if (slot.as_str(), partition.as_str()) != ("a", "vda2") {
        return Err(fail(vm, format!("booted slot {slot} from {partition}")));
    }
    let state = vm
        .wait_for_event("state.mounted", step_timeout())
        .map_err(|e| fail(vm, e.to_string()))?;
    let Event::StateMounted {
        bytes, grown_from, ..
    } = state.event
    else {
        unreachable!()
    };
    let member = vm
        .wait_for_event("cluster.member", step_timeout())
        .map_err(|e| fail(vm, e.to_string()))?;
    let Event::ClusterMember { node, .. } = member.event else {
        unreachable!()
    };
    println!(
        "{}: root.verity at {:.2} s, state.mounted ({bytes} bytes, grown from {grown_from:?}) at {:.2} s, member {node:016x} at {:.2} s",
        vm.name(),
        verity.t,
        state.t,
        member.t
    );
    Ok((node, bytes, grown_from))
}

#[test]
fn a_flashed_disk_boots_its_verified_slot_grows_state_and_keeps_the_node_identity()
-> anyhow::Result<()> {
    let (image, network, _dir, disk) = lab("")?;
    let disk_arg = disk.display().to_string();
    let (state_offset, state_size) = partition(&image, "shoal-state")?;

    let vm = boot("disk-first", &network, &disk)?;
    let (first_id, bytes, grown_from) = member_and_state(&vm)?;
    let resolved = vm
        .wait_for_event("config.resolved", step_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    let Event::ConfigResolved { sources, ms, .. } = &resolved.event else {
        unreachable!()
    };
    println!("ESP source: configuration in force {ms} ms after shoal-configd started");
    if sources.as_slice() != ["esp: /dev/vda1:shoal/machine.toml"] {
        return Err(fail(
            &vm,
            format!("configuration from {sources:?}, not the ESP"),
        ));
    }
    // STATE now ends where the usable space does: before the 33 sectors of the backup table.
    let expected = (1 << 30) - 33 * 512 - state_offset;
    if grown_from != Some(state_size) || bytes != expected {
        return Err(fail(
            &vm,
            format!(
                "STATE {bytes} bytes grown from {grown_from:?}; expected {expected} from {state_size}"
            ),
        ));
    }
    vm.powerdown()?;
    vm.wait_exit(step_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    drop(vm);

    // What the first boot left on the disk: a valid GPT for the whole disk, and an ext4 that
    // fills STATE.
    let raw = &disk;
    let verify = host_tool("sfdisk", &["--verify", &disk_arg])?;
    anyhow::ensure!(
        verify.contains("No errors detected"),
        "sfdisk --verify after growing: {verify}"
    );
    let mut sb = [0u8; 1024];
    File::open(raw)?.read_exact_at(&mut sb, state_offset + 1024)?;
    let blocks = u64::from(u32::from_le_bytes(sb[4..8].try_into()?));
    let block_size = 1024u64 << u32::from_le_bytes(sb[0x18..0x1c].try_into()?);
    anyhow::ensure!(
        blocks * block_size == expected / block_size * block_size,
        "ext4 on STATE is {} bytes, the partition {expected}",
        blocks * block_size
    );

    // The second boot finds STATE grown, and the node is the same member.
    let vm = boot("disk-second", &network, &disk)?;
    let (second_id, bytes, grown_from) = member_and_state(&vm)?;
    if grown_from.is_some() || bytes != expected {
        return Err(fail(
            &vm,
            format!("second boot: STATE {bytes} bytes, grown from {grown_from:?}"),
        ));
    }
    if second_id != first_id {
        return Err(fail(
            &vm,
            format!(
                "the node came back as {second_id:016x}, not {first_id:016x}: STATE lost its identity"
            ),
        ));
    }
    Ok(())
}

#[test]
fn a_flipped_byte_in_the_root_slot_is_caught_by_dm_verity() -> anyhow::Result<()> {
    let image = test_image()?;
    let network = Network::new()?;
    let dir = tempfile::tempdir()?;
    // A raw copy of the disk with one bit of slot A's erofs superblock flipped.
    let disk = dir.path().join("disk.raw");
    host_tool(
        "cp",
        &[
            "--sparse=always",
            &image.disk_raw().display().to_string(),
            &disk.display().to_string(),
        ],
    )?;
    let (slot_offset, _) = partition(&image, "shoal-root-a")?;
    let file = File::options().read(true).write(true).open(&disk)?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, slot_offset + 1024 + 40)?;
    file.write_all_at(&[byte[0] ^ 0x10], slot_offset + 1024 + 40)?;
    file.sync_all()?;
    drop(file);

    let vm = Vm::builder("disk-tampered")
        .uefi()
        .firmware_boot()
        .disk(Disk::virtio(&disk))
        .nic(&network, NicModel::VirtioNet)
        .start()?;
    vm.expect_failures();
    let failed = vm
        .wait_for_event("boot.failed", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    let Event::BootFailed { reason, .. } = &failed.event else {
        unreachable!()
    };
    if !reason.contains("dm-verity") {
        return Err(fail(
            &vm,
            format!("boot failed for another reason: {reason}"),
        ));
    }
    if vm
        .events()
        .iter()
        .any(|e| e.record.event.name() == "root.mounted")
    {
        return Err(fail(&vm, "the tampered root was mounted".into()));
    }
    println!("tampered slot: {reason}");
    Ok(())
}

/// The test image's update bundle (signed with the development key its profile trusts) holds
/// exactly what the disk's slot A holds, and a node trusting another key refuses it.
#[test]
fn the_update_bundle_holds_slot_a_signed_with_the_trusted_key() -> anyhow::Result<()> {
    use shoal_update::bundle::{PublicKey, Reader, SigningKey};
    let image = test_image()?;
    let trusted = PublicKey::parse(
        image
            .manifest()
            .update
            .as_ref()
            .map(|u| u.key.as_str())
            .ok_or_else(|| anyhow::anyhow!("the test image has no update bundle"))?,
    )?;
    let bundle = image.dir().join("update.bundle");
    let mut reader = Reader::open(File::open(&bundle)?, &[trusted], std::env::consts::ARCH)?;
    let disk = image
        .manifest()
        .disk
        .as_ref()
        .expect("checked by partition()");
    anyhow::ensure!(reader.manifest.root_hash == disk.root_hash);
    anyhow::ensure!(reader.manifest.hash_offset == disk.hash_offset);
    let mut parts = Vec::new();
    for name in shoal_update::bundle::PARTS {
        let mut bytes = Vec::new();
        reader.copy_part(name, &mut bytes, |_| {})?;
        parts.push(bytes);
    }
    anyhow::ensure!(
        parts[0] == std::fs::read(image.kernel())?,
        "vmlinuz differs"
    );
    let (slot_offset, _) = partition(&image, "shoal-root-a")?;
    let mut slot = vec![0u8; parts[2].len()];
    File::open(image.disk_raw())?.read_exact_at(&mut slot, slot_offset)?;
    anyhow::ensure!(parts[2] == slot, "the root part is not slot A's content");
    let (other, _) = SigningKey::generate()?;
    let refused = Reader::open(File::open(&bundle)?, &[other.public()], "x86_64")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    anyhow::ensure!(refused.contains("does not trust"), "{refused}");
    Ok(())
}

/// Reboots `vm` (Ctrl-Alt-Del; QEMU exits) and boots the same machine again as `name`, which
/// must come up from the root slot on `partition`.
fn reboot(
    vm: Vm,
    name: &str,
    network: &Network,
    disk: &Path,
    partition: &str,
) -> anyhow::Result<Vm> {
    vm.ctrl_alt_delete()?;
    vm.wait_exit(step_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    drop(vm);
    let vm = boot(name, network, disk)?;
    let booted = vm
        .wait_for_event("root.verity", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    if !matches!(&booted.event, Event::RootVerity { partition: p, .. } if p == partition) {
        return Err(fail(&vm, format!("booted {booted:?}, not {partition}")));
    }
    Ok(vm)
}

/// shoalctl from the host against the one-node cluster of a VM booted with [`flash`].
fn ctl(vm: &Vm, network: &Network, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let address = vm
        .leased_address()
        .ok_or_else(|| fail(vm, "no lease".into()))?;
    let machine = dir.join("machine.toml").display().to_string();
    let endpoint = format!("{address}:7443");
    let connection = ["--machine-config", &machine, "--endpoint", &endpoint];
    shoal_qemu_tests::testing::shoalctl(network, &[args, &connection[..]].concat())
}

fn update_status(vm: &Vm, network: &Network, dir: &Path) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&ctl(
        vm,
        network,
        dir,
        &["update", "status", "-o", "json"],
    )?)?)
}

/// Waits until the cluster's record of the one node (`shoalctl nodes`) shows it running
/// `slot` in `state`, with the image's version (`VERSION_ID` of its os-release); a changed slot
/// state is published within about a second of the change.
fn record_shows_slot(
    vm: &Vm,
    network: &Network,
    dir: &Path,
    slot: &str,
    state: &str,
) -> anyhow::Result<()> {
    eventually(
        &format!("the node record shows slot {slot} ({state})"),
        scaled(Duration::from_secs(15)),
        Duration::from_millis(500),
        || {
            let out = ctl(vm, network, dir, &["nodes", "-o", "json"]).map_err(|e| e.to_string())?;
            let nodes: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let node = &nodes[0];
            if node["slot"] == slot
                && node["slot_state"] == state
                && node["version"] == env!("CARGO_PKG_VERSION")
            {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .map_err(|e| fail(vm, e))
}

#[test]
fn an_update_goes_to_slot_b_is_blessed_once_the_node_is_back_survives_a_reboot_and_rolls_back()
-> anyhow::Result<()> {
    let (image, network, dir, disk) = lab("")?;
    let bundle = std::fs::read(image.dir().join("update.bundle"))?;

    let vm = boot("update-a", &network, &disk)?;
    let (node_id, _, _) = member_and_state(&vm)?;
    record_shows_slot(&vm, &network, dir.path(), "a", "good")?;
    // Refused bundles change nothing: a forged manifest, a truncated body, a changed byte in
    // the root image (its hash), a bundle for another architecture (signed by the trusted key).
    let mut forged = bundle[..8192].to_vec();
    forged[100] ^= 1;
    let truncated = bundle[..1 << 20].to_vec();
    let mut changed = bundle.clone();
    let last = changed.len() - 4096;
    changed[last] ^= 1;
    let arm = dir.path().join("arm.bundle");
    resigned_bundle(&image, &arm, |m| m.arch = "aarch64".into())?;
    for (what, bytes, expected) in [
        ("forged", forged, "bad signature"),
        ("truncated", truncated, "truncated"),
        ("changed", changed, "sha256"),
        ("arm", std::fs::read(&arm)?, "aarch64"),
    ] {
        let file = dir.path().join(format!("{what}.bundle"));
        std::fs::write(&file, bytes)?;
        let err = ctl(
            &vm,
            &network,
            dir.path(),
            &["update", "apply", &file.display().to_string()],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        if !err.contains(expected) {
            return Err(fail(
                &vm,
                format!("{what} bundle: {err:?}, expected {expected:?}"),
            ));
        }
    }
    let status = update_status(&vm, &network, dir.path())?;
    if status["slots"][1]["state"] != "empty" || status["slots"][0]["default"] != true {
        return Err(fail(
            &vm,
            format!("refused bundles changed the slots: {status}"),
        ));
    }

    let started = std::time::Instant::now();
    let applied: serde_json::Value = serde_json::from_str(&ctl(
        &vm,
        &network,
        dir.path(),
        &[
            "update",
            "apply",
            &image.dir().join("update.bundle").display().to_string(),
            "-o",
            "json",
        ],
    )?)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "update apply: {:.1} MiB in {seconds:.1} s ({:.1} MiB/s) under TCG",
        bundle.len() as f64 / (1 << 20) as f64,
        bundle.len() as f64 / (1 << 20) as f64 / seconds
    );
    if applied["slot"] != "b" {
        return Err(fail(&vm, format!("applied {applied}")));
    }
    let status = update_status(&vm, &network, dir.path())?;
    if status["slots"][1]["state"] != "trial" || status["slots"][1]["default"] != true {
        return Err(fail(&vm, format!("after apply: {status}")));
    }
    // The reboot runs slot B on trial; back in its cluster, the node blesses it.
    let vm = reboot(vm, "update-b", &network, &disk, "vda3")?;
    let blessed = vm
        .wait_for_event("update.blessed", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    println!(
        "update: slot b blessed {:.2} s after the kernel started (guest clock)",
        blessed.t
    );
    let status = update_status(&vm, &network, dir.path())?;
    if status["booted"] != "b" || status["slots"][1]["state"] != "good" {
        return Err(fail(&vm, format!("after blessing: {status}")));
    }
    // The cluster's record follows: registered on trial, published again once blessed.
    record_shows_slot(&vm, &network, dir.path(), "b", "good")?;
    // It stays on B; an operator's rollback then brings A back, with STATE (the node's
    // identity) intact across both switches.
    let vm = reboot(vm, "update-b-again", &network, &disk, "vda3")?;
    vm.wait_for_event("cluster.member", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    let rolled: serde_json::Value = serde_json::from_str(&ctl(
        &vm,
        &network,
        dir.path(),
        &["update", "rollback", "-o", "json"],
    )?)?;
    if rolled["slots"][0]["default"] != true || rolled["slots"][0]["state"] != "good" {
        return Err(fail(&vm, format!("after rollback: {rolled}")));
    }
    let vm = reboot(vm, "update-rolled-back", &network, &disk, "vda2")?;
    let member = vm
        .wait_for_event("cluster.member", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    if !matches!(member.event, Event::ClusterMember { node, .. } if node == node_id) {
        return Err(fail(
            &vm,
            format!("after the rollback the node is {member:?}, not {node_id:016x}"),
        ));
    }
    let status = update_status(&vm, &network, dir.path())?;
    if status["booted"] != "a" || !status["last_result"].to_string().contains("rolled back") {
        return Err(fail(&vm, format!("after the rollback: {status}")));
    }
    Ok(())
}

/// The test image's update bundle with `extra` added to its kernel command line, signed again
/// with the development key the test image trusts: a broken image, for the failure tests.
fn broken_bundle(image: &Image, extra: &str, out: &Path) -> anyhow::Result<()> {
    resigned_bundle(image, out, |m| m.cmdline = format!("{} {extra}", m.cmdline))
}

/// The test image's update bundle with its manifest changed by `edit`, signed again with the
/// development key the test image trusts.
fn resigned_bundle(
    image: &Image,
    out: &Path,
    edit: impl FnOnce(&mut shoal_update::bundle::Manifest),
) -> anyhow::Result<()> {
    use shoal_update::bundle::{PARTS, Reader, SigningKey, write};
    let key_file =
        shoal_image_build::workspace_root().join("image-build/profiles/keys/dev-update.key");
    let key = SigningKey::parse(&std::fs::read_to_string(key_file)?)?;
    let mut reader = Reader::open(
        File::open(image.dir().join("update.bundle"))?,
        &[key.public()],
        "x86_64",
    )?;
    let mut manifest = reader.manifest.clone();
    edit(&mut manifest);
    let mut parts = Vec::new();
    for name in PARTS {
        let mut bytes = Vec::new();
        reader.copy_part(name, &mut bytes, |_| {})?;
        parts.push((name, bytes));
    }
    let readers = parts
        .iter()
        .map(|(name, bytes)| {
            (
                *name,
                bytes.len() as u64,
                Box::new(&bytes[..]) as Box<dyn std::io::Read + '_>,
            )
        })
        .collect();
    write(&mut File::create(out)?, manifest, readers, &key)?;
    Ok(())
}

#[test]
fn a_new_image_that_panics_hangs_or_never_becomes_healthy_falls_back_to_the_old_slot_with_the_reason()
-> anyhow::Result<()> {
    // One try per update, and 15 s to become healthy, to keep the test short.
    let (image, network, dir, disk) = lab("[update]\ntries = 1\ntrial_timeout = \"15s\"\n")?;
    let mut vm = boot("fail-a", &network, &disk)?;
    let (node_id, _, _) = member_and_state(&vm)?;
    for (what, knobs, reason) in [
        (
            "panics",
            "shoaltest.panic shoal.reboot_delay=1",
            "in its only boot it never got as far as mounting STATE",
        ),
        (
            "hangs",
            "shoaltest.hang shoal.watchdog=5",
            "in its only boot it started but stopped before it was healthy",
        ),
        (
            "never-healthy",
            "shoaltest.clusterd_exit",
            "in its only boot it booted but was not healthy (back in its cluster) within 15 s",
        ),
    ] {
        let bundle = dir.path().join(format!("{what}.bundle"));
        broken_bundle(&image, knobs, &bundle)?;
        ctl(
            &vm,
            &network,
            dir.path(),
            &["update", "apply", &bundle.display().to_string()],
        )?;
        vm.ctrl_alt_delete()?;
        vm.wait_exit(step_timeout())
            .map_err(|e| fail(&vm, e.to_string()))?;
        drop(vm);

        // The trial boot of slot B fails its own way, and the machine resets or reboots.
        // (Only slot B's command line has the knobs: a panic is slot B's; the others show
        // slot B's trial starting.)
        let trial = boot(&format!("fail-{what}"), &network, &disk)?;
        if what != "panics" {
            let started = trial
                .wait_for_event("update.trial", boot_timeout())
                .map_err(|e| fail(&trial, e.to_string()))?;
            if !matches!(&started.event, Event::UpdateTrial { slot, timeout_s: 15, .. } if slot == "b")
            {
                return Err(fail(&trial, format!("{what}: {started:?}")));
            }
        }
        let how = match what {
            "panics" => "panic",
            "hangs" => "update.trial",
            _ => "update.unhealthy",
        };
        let seen = trial
            .wait_for_event(how, boot_timeout())
            .map_err(|e| fail(&trial, e.to_string()))?;
        trial
            .wait_exit(boot_timeout())
            .map_err(|e| fail(&trial, format!("{what}: still running: {e}")))?;
        println!(
            "{what}: {how} at {:.2} s (guest clock), then the machine restarted",
            seen.t
        );
        drop(trial);

        // Out of tries: systemd-boot goes back to slot A, which says why the update failed.
        let back = boot(&format!("fail-{what}-back"), &network, &disk)?;
        let booted = back
            .wait_for_event("root.verity", boot_timeout())
            .map_err(|e| fail(&back, e.to_string()))?;
        if !matches!(&booted.event, Event::RootVerity { partition, .. } if partition == "vda2") {
            return Err(fail(&back, format!("{what}: came back on {booted:?}")));
        }
        let failed = back
            .wait_for_event("update.failed", boot_timeout())
            .map_err(|e| fail(&back, e.to_string()))?;
        let Event::UpdateFailed { message } = &failed.event else {
            unreachable!()
        };
        if !message.contains(reason) || !message.ends_with("back on slot a") {
            return Err(fail(&back, format!("{what}: the failure says {message:?}")));
        }
        let member = back
            .wait_for_event("cluster.member", boot_timeout())
            .map_err(|e| fail(&back, e.to_string()))?;
        if !matches!(member.event, Event::ClusterMember { node, .. } if node == node_id) {
            return Err(fail(&back, format!("{what}: back as {member:?}")));
        }
        let status = update_status(&back, &network, dir.path())?;
        if status["booted"] != "a"
            || status["slots"][1]["state"] != "failed"
            || status["last_result"] != message.as_str()
        {
            return Err(fail(&back, format!("{what}: status {status}")));
        }
        println!("{what}: {message}");
        vm = back;
    }
    Ok(())
}

#[test]
fn a_power_cut_at_any_point_of_an_update_leaves_a_good_slot_to_boot() -> anyhow::Result<()> {
    let (image, network, dir, disk) = lab("")?;
    let bundle = image.dir().join("update.bundle").display().to_string();
    // Slot A's entry also asks the test image for a raw write to STATE, the figure an apply is
    // compared with (the same size as the bundle).
    let (esp_offset, _) = partition(&image, "ESP")?;
    let esp = format!("{}@@{esp_offset}", disk.display());
    let entry = host_tool("mtype", &["-i", &esp, "::loader/entries/shoal-a.conf"])?;
    let entry = entry.replace("\noptions ", "\noptions shoaltest.diskwrite=36 ");
    let edited = dir.path().join("shoal-a.conf");
    std::fs::write(&edited, entry)?;
    let edited = edited.display().to_string();
    host_tool(
        "mcopy",
        &["-o", "-i", &esp, &edited, "::loader/entries/shoal-a.conf"],
    )?;
    let mut vm = boot("cut-a", &network, &disk)?;
    let (node_id, _, _) = member_and_state(&vm)?;
    let raw = vm
        .wait_for_test_report("diskwrite", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    println!(
        "raw sequential write to STATE in this VM: {} MiB in {} ms ({} MiB/s)",
        raw["mib"], raw["ms"], raw["mib_s"]
    );
    // Cuts early (the header, the kernel, the initramfs on the ESP), in the root image, and
    // near the end (the root synced, the entry being written); an apply takes about 8 s here.
    let mut current = "a".to_string();
    for (n, after_ms) in [500u64, 1500, 2800, 4500].into_iter().enumerate() {
        let address = vm
            .leased_address()
            .ok_or_else(|| fail(&vm, "no lease".into()))?;
        let machine = dir.path().join("machine.toml").display().to_string();
        let endpoint = format!("{address}:7443");
        let bin = shoal_qemu_tests::target_dir().join("release/shoalctl");
        let mut apply = network
            .command(&bin.display().to_string())
            .args(["update", "apply", &bundle, "--machine-config", &machine])
            .args(["--endpoint", &endpoint])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(after_ms));
        vm.kill();
        let _ = apply.kill();
        let _ = apply.wait();
        drop(vm);

        // Whatever was cut, the machine boots a slot whose image is whole (dm-verity checks
        // every block read), with its identity, and can be updated again.
        let again = boot(&format!("cut-{n}"), &network, &disk)?;
        let booted = again
            .wait_for_event("root.verity", boot_timeout())
            .map_err(|e| fail(&again, e.to_string()))?;
        let member = again
            .wait_for_event("cluster.member", boot_timeout())
            .map_err(|e| fail(&again, e.to_string()))?;
        if !matches!(member.event, Event::ClusterMember { node, .. } if node == node_id) {
            return Err(fail(
                &again,
                format!("cut after {after_ms} ms: back as {member:?}"),
            ));
        }
        let Event::RootVerity { slot, .. } = &booted.event else {
            unreachable!()
        };
        let status = update_status(&again, &network, dir.path())?;
        let (current_index, other_index) = if current == "a" { (0, 1) } else { (1, 0) };
        println!(
            "power cut {after_ms} ms into the apply from slot {current}: booted slot {slot}; the \
             other slot is {}",
            status["slots"][other_index]["state"]
        );
        // Either the cut came before the new slot's entry was complete, and the node is back on
        // the slot it ran, the other one not bootable; or after, and the new slot runs (on
        // trial, or already blessed), the old one still good.
        let fine = if *slot == current {
            matches!(
                status["slots"][other_index]["state"].as_str(),
                Some("empty" | "failed")
            )
        } else {
            status["slots"][current_index]["state"] == "good"
                && matches!(
                    status["slots"][other_index]["state"].as_str(),
                    Some("trial" | "good")
                )
        };
        if status["booted"] != slot.as_str() {
            return Err(fail(&again, format!("booted {slot}, status says {status}")));
        }
        if !fine {
            // What the bootloader sees, for the report.
            let listing = host_tool("mdir", &["-i", &esp, "::loader/entries"]).unwrap_or_default();
            let mut texts = String::new();
            for line in listing.lines().filter(|l| l.contains("shoal-")) {
                if let Some(name) = line.split_whitespace().last() {
                    let text =
                        host_tool("mtype", &["-i", &esp, &format!("::loader/entries/{name}")])
                            .unwrap_or_else(|e| e.to_string());
                    texts.push_str(&format!("--- {name}\n{text}\n"));
                }
            }
            return Err(fail(
                &again,
                format!("cut after {after_ms} ms: {status}\n{listing}\n{texts}"),
            ));
        }
        current = slot.clone();
        vm = again;
    }
    // After the cuts a full apply still works, this time downloaded by shoalctl from a web
    // server and streamed on as it arrives.
    let mut network = network;
    network.serve_http(image.dir())?;
    let out = ctl(
        &vm,
        &network,
        dir.path(),
        &["update", "apply", "http://10.77.0.1/update.bundle"],
    )?;
    println!("{}", out.trim());
    let applied = vm
        .wait_for_event("update.applied", step_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    if let Event::UpdateApplied { bytes, ms, .. } = applied.event {
        println!(
            "update apply on the node: {:.1} MiB in {:.0} ms ({:.2} MiB/s), raw write {} MiB/s",
            bytes as f64 / f64::from(1 << 20),
            ms,
            bytes as f64 / f64::from(1 << 20) / (ms / 1000.0),
            raw["mib_s"]
        );
    }
    let status = update_status(&vm, &network, dir.path())?;
    let other = if current == "a" { 1 } else { 0 };
    if status["slots"][other]["state"] != "trial" {
        return Err(fail(&vm, format!("after the cuts, apply gave {status}")));
    }
    Ok(())
}
