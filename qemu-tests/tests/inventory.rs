//! The hardware inventory in a booted VM (issue 5): QEMU is told exactly what hardware to
//! emulate (CPU topology, two NUMA nodes, SMBIOS strings for the system, board, chassis, BIOS
//! and DIMMs, an NVMe, a virtio and an AHCI disk with serials, virtio and e1000e NICs with set
//! MACs), and the inventory the node publishes to its (one-node) cluster, read with `shoalctl`
//! from the host, must say exactly that. A disk and a NIC hot-plugged through QEMU's monitor
//! then appear in it.
//!
//! The VM also writes a capture of its hardware (`shoal-inventory capture`) into a 9p share;
//! replayed on the host it must give the same inventory as the node published. With
//! `SHOAL_SAVE_FIXTURE=1` the capture becomes the `qemu-vm` fixture of inventory/tests.
//!
//! Needs the release `shoalctl` binary (`cargo xtask test` builds the whole workspace).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::testing::{boot_timeout, eventually, shoalctl, start, test_image};
use shoal_qemu_tests::{Network, NicModel, Vm, scaled};

const SECRET: &str = "aW52ZW50b3J5IHRlc3Qgc2VjcmV0LCAzMiBieXRlcyEh";
const UUID: &str = "9a1c2f50-6b7e-4d2a-8c11-0123456789ab";
const VIRTIO_MAC: &str = "52:54:00:aa:00:01";
const E1000E_MAC: &str = "52:54:00:aa:00:02";

/// QEMU's description of the machine: what the inventory must report.
fn hardware_args(dir: &Path) -> anyhow::Result<Vec<String>> {
    let disk = |name: &str, mib: u64| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::File::create(&path)?.set_len(mib << 20)?;
        Ok(path.display().to_string())
    };
    let nvme = disk("nvme.img", 64)?;
    let sata = disk("sata.img", 48)?;
    let virtio = disk("virtio.img", 32)?;
    // An ext4 superblock signature with a label on the virtio disk: the probe must find it.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&virtio)?;
        f.write_all_at(&[0x53, 0xEF], 1024 + 56)?;
        f.write_all_at(&0x40u32.to_le_bytes(), 1024 + 96)?;
        f.write_all_at(b"shoal-data", 1024 + 120)?;
    }
    let args = [
        "-smp",
        "4,sockets=2,cores=1,threads=2",
        "-object",
        "memory-backend-ram,id=m0,size=256M",
        "-object",
        "memory-backend-ram,id=m1,size=256M",
        "-numa",
        "node,nodeid=0,cpus=0-1,memdev=m0",
        "-numa",
        "node,nodeid=1,cpus=2-3,memdev=m1",
        "-smbios",
        "type=0,vendor=Shoal Firmware,version=1.2.3,date=11/22/2026,release=1.16",
        "-smbios",
        &format!(
            "type=1,manufacturer=Shoal Labs,product=Reef 9000,version=A1,serial=SYS-SN-1,uuid={UUID},sku=REEF-9K,family=Reef"
        ),
        "-smbios",
        "type=2,manufacturer=Shoal Boards,product=RB-1,version=2,serial=BOARD-SN-1,asset=BOARD-AT-1,location=Slot 0",
        "-smbios",
        "type=3,manufacturer=Shoal Cases,version=3,serial=CHASSIS-SN-1,asset=CHASSIS-AT-1,sku=CASE-1",
        "-smbios",
        "type=17,loc_pfx=DIMM,bank=BANK,manufacturer=Shoal Memory,serial=DIMM-SN-1,asset=DIMM-AT-1,part=SM-512,speed=3200",
        "-drive",
        &format!("file={nvme},if=none,id=nv0,format=raw"),
        "-device",
        "nvme,drive=nv0,serial=NVME-SN-1",
        "-drive",
        &format!("file={virtio},if=none,id=vd0,format=raw"),
        "-device",
        "virtio-blk-pci,drive=vd0,serial=VIRTIO-SN-1",
        "-device",
        "ahci,id=ahci0",
        "-drive",
        &format!("file={sata},if=none,id=sd0,format=raw"),
        "-device",
        "ide-hd,drive=sd0,bus=ahci0.0,serial=SATA-SN-1,model=Shoal SATA Disk",
    ];
    Ok(args.iter().map(|s| s.to_string()).collect())
}

fn fail(vm: &Vm, message: String) -> anyhow::Error {
    vm.mark_failed();
    anyhow::anyhow!("{message}\n--- console tail:\n{}", vm.tail(60))
}

/// Asserts `actual[pointer] == expected` for each pair, listing every mismatch at once.
fn expect_fields(actual: &Value, expected: &[(&str, Value)]) -> Result<(), String> {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(pointer, want)| actual.pointer(pointer) != Some(want))
        .map(|(pointer, want)| {
            format!(
                "{pointer}: expected {want}, got {:?}",
                actual.pointer(pointer)
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v[key] == value)
}

/// A test network with DHCP, serving a one-node cluster's configuration at
/// `http://10.77.0.1/cluster.toml`; the directory also holds it as `machine.toml` for shoalctl.
fn one_node_lab() -> anyhow::Result<(Network, tempfile::TempDir)> {
    let mut network = Network::new()?;
    network.start_dnsmasq(network.dhcp_config())?;
    let www = tempfile::tempdir()?;
    let config = format!("[cluster]\nname = \"hw\"\nsecret = \"{SECRET}\"\nexpected_size = 1\n");
    std::fs::write(www.path().join("cluster.toml"), &config)?;
    std::fs::write(www.path().join("machine.toml"), &config)?;
    network.serve_http(www.path())?;
    Ok((network, www))
}

/// shoalctl from the host, connected to a VM's one-node cluster.
struct Operator<'a> {
    network: &'a Network,
    machine: String,
    endpoint: String,
    /// The VM's node id, 16 hex digits.
    node: String,
}

impl<'a> Operator<'a> {
    /// Waits for `vm` to be a member, and connects to it.
    fn of(vm: &Vm, network: &'a Network, www: &tempfile::TempDir) -> anyhow::Result<Self> {
        let member = vm
            .wait_for_event("cluster.member", boot_timeout())
            .map_err(|e| fail(vm, e.to_string()))?;
        let Event::ClusterMember { node, .. } = member.event else {
            unreachable!()
        };
        let address = vm
            .leased_address()
            .ok_or_else(|| fail(vm, "no lease".into()))?;
        Ok(Operator {
            network,
            machine: www.path().join("machine.toml").display().to_string(),
            endpoint: format!("{address}:7443"),
            node: format!("{node:016x}"),
        })
    }

    fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let connection = [
            "--machine-config",
            &self.machine,
            "--endpoint",
            &self.endpoint,
        ];
        shoalctl(self.network, &[args, &connection[..]].concat())
    }

    /// The node's inventory as the cluster holds it now.
    fn inventory(&self) -> anyhow::Result<Value> {
        let text = self.ctl(&["inventory", &self.node, "-o", "json"])?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The inventory once the node has published it (about a second after it registers).
    fn published(&self, vm: &Vm) -> anyhow::Result<Value> {
        eventually(
            "the published inventory",
            scaled(Duration::from_secs(20)),
            Duration::from_millis(500),
            || self.inventory().map_err(|e| e.to_string()),
        )
        .map_err(|e| fail(vm, e))
    }
}

#[test]
fn the_inventory_says_exactly_what_qemu_emulates_and_follows_hotplugged_devices()
-> anyhow::Result<()> {
    let image = test_image()?;
    let (network, www) = one_node_lab()?;
    let images = tempfile::tempdir()?;
    let mut args = hardware_args(images.path())?;
    let share = tempfile::tempdir()?;
    args.extend([
        "-fsdev".to_string(),
        format!(
            "local,id=capfs,path={},security_model=none",
            share.path().display()
        ),
        "-device".to_string(),
        "virtio-9p-pci,fsdev=capfs,mount_tag=capture".to_string(),
    ]);
    let vm = start(&image, "inventory", |b| {
        b.nic_with_mac(&network, NicModel::VirtioNet, VIRTIO_MAC)
            .nic_with_mac(&network, NicModel::E1000e, E1000E_MAC)
            .memory_mb(512)
            // The Intel vendor makes the kernel read SMT siblings from CPUID leaf 0xB; with
            // qemu64's default AMD vendor and no topoext, each thread looks like a core.
            .cpu("qemu64,vendor=GenuineIntel")
            .cmdline("shoal.config=http://10.77.0.1/cluster.toml shoaltest.capture")
            .args(args)
    })?;

    let boot = vm
        .wait_for_event("hardware.inventory", boot_timeout())
        .map_err(|e| fail(&vm, e.to_string()))?;
    let Event::HardwareInventory {
        summary,
        ms,
        bytes,
        gaps,
        reason,
    } = boot.event
    else {
        unreachable!()
    };
    println!(
        "boot inventory ({reason}): {summary}; collected in {ms:.1} ms, {bytes} bytes as JSON"
    );
    if !gaps.is_empty() {
        println!("  not read: {gaps:?}");
    }
    let operator = Operator::of(&vm, &network, &www)?;
    let node = operator.node.clone();
    let ctl = |args: &[&str]| operator.ctl(args);
    let fetch = || operator.inventory();
    let poll = Duration::from_millis(500);
    let inv = operator.published(&vm)?;

    let dimm = &inv["memory"]["dimms"][0];
    let mut checks = vec![
        ("/system/vendor", json!("Shoal Labs")),
        ("/system/product", json!("Reef 9000")),
        ("/system/version", json!("A1")),
        ("/system/serial", json!("SYS-SN-1")),
        ("/system/uuid", json!(UUID)),
        ("/system/sku", json!("REEF-9K")),
        ("/system/family", json!("Reef")),
        ("/system/board/vendor", json!("Shoal Boards")),
        ("/system/board/product", json!("RB-1")),
        ("/system/board/serial", json!("BOARD-SN-1")),
        ("/system/board/asset_tag", json!("BOARD-AT-1")),
        ("/system/board/location", json!("Slot 0")),
        ("/system/chassis/vendor", json!("Shoal Cases")),
        ("/system/chassis/serial", json!("CHASSIS-SN-1")),
        ("/system/chassis/asset_tag", json!("CHASSIS-AT-1")),
        ("/system/chassis/sku", json!("CASE-1")),
        ("/system/firmware/vendor", json!("Shoal Firmware")),
        ("/system/firmware/version", json!("1.2.3")),
        ("/system/firmware/date", json!("11/22/2026")),
        ("/system/firmware/release", json!("1.16")),
        ("/system/firmware/boot_mode", json!("bios")),
        ("/system/virtual", json!(true)),
        ("/system/hypervisor", json!("qemu-tcg")),
        ("/cpu/sockets", json!(2)),
        ("/cpu/cores", json!(2)),
        ("/cpu/threads", json!(4)),
        ("/cpu/numa/0/cpus", json!("0-1")),
        ("/cpu/numa/0/memory_bytes", json!(256u64 << 20)),
        ("/cpu/numa/1/cpus", json!("2-3")),
        ("/cpu/numa/1/memory_bytes", json!(256u64 << 20)),
        ("/memory/installed_bytes", json!(512u64 << 20)),
        ("/labels/cpu.cores", json!("2")),
        ("/labels/cpu.vendor", json!("intel")),
        ("/labels/numa.nodes", json!("2")),
        ("/labels/disk.nvme", json!("true")),
        ("/labels/machine.hypervisor", json!("qemu-tcg")),
    ];
    if inv["memory"]["dimms"].as_array().map(Vec::len) != Some(1) {
        return Err(fail(&vm, format!("expected one DIMM: {}", inv["memory"])));
    }
    for (field, want) in [
        ("size_bytes", json!(512u64 << 20)),
        ("manufacturer", json!("Shoal Memory")),
        ("serial", json!("DIMM-SN-1")),
        ("asset_tag", json!("DIMM-AT-1")),
        ("part_number", json!("SM-512")),
        ("speed_mts", json!(3200)),
        ("slot", json!("DIMM 0")),
        ("bank", json!("BANK")),
    ] {
        if dimm[field] != want {
            checks.push((
                "/memory/dimms/0/__mismatch",
                json!(format!("{field}: expected {want}, got {}", dimm[field])),
            ));
        }
    }
    let disks = &inv["storage"]["disks"];
    let disk = |name: &str| find(disks, "name", name).cloned().unwrap_or(Value::Null);
    let (nvme, vda, sda) = (disk("nvme0n1"), disk("vda"), disk("sda"));
    let mut problems = Vec::new();
    for (d, name, size, transport, serial) in [
        (&nvme, "nvme0n1", 64u64 << 20, "nvme", "NVME-SN-1"),
        (&vda, "vda", 32 << 20, "virtio", "VIRTIO-SN-1"),
        (&sda, "sda", 48 << 20, "sata", "SATA-SN-1"),
    ] {
        if let Err(e) = expect_fields(
            d,
            &[
                ("/size_bytes", json!(size)),
                ("/transport", json!(transport)),
                ("/serial", json!(serial)),
            ],
        ) {
            problems.push(format!("disk {name}:\n{e}"));
        }
    }
    if sda["model"] != "Shoal SATA Disk" {
        problems.push(format!("sda model: {}", sda["model"]));
    }
    if vda["filesystem"]["kind"] != "ext4" || vda["filesystem"]["label"] != "shoal-data" {
        problems.push(format!("vda filesystem: {}", vda["filesystem"]));
    }
    if nvme["nvme"] != json!({"controller": "nvme0", "nsid": 1}) {
        problems.push(format!("nvme namespace: {}", nvme["nvme"]));
    }
    let controller = &inv["storage"]["nvme_controllers"][0];
    if controller["serial"] != "NVME-SN-1" || controller["namespaces"] != json!(["nvme0n1"]) {
        problems.push(format!("nvme controller: {controller}"));
    }
    let nics = &inv["network"];
    for (mac, driver) in [(VIRTIO_MAC, "virtio_net"), (E1000E_MAC, "e1000e")] {
        match find(nics, "permanent_mac", mac) {
            Some(nic) if nic["driver"] == driver => {}
            other => problems.push(format!("NIC {mac} ({driver}): {other:?}")),
        }
    }
    if nics.as_array().map(Vec::len) != Some(2) {
        problems.push(format!("expected 2 NICs: {nics}"));
    }
    // Names from the PCI ID database in the image.
    match find(&inv["pci"], "driver", "e1000e") {
        Some(d)
            if d["vendor"] == "Intel Corporation"
                && d["device"].as_str().is_some_and(|n| n.contains("82574L"))
                && d["class"] == "Ethernet controller" => {}
        other => problems.push(format!("e1000e's PCI names: {other:?}")),
    }
    if let Err(e) = expect_fields(&inv, &checks) {
        problems.push(e);
    }
    if !problems.is_empty() {
        return Err(fail(
            &vm,
            format!(
                "the inventory is not what QEMU emulates:\n{}\n\ninventory: {inv:#}",
                problems.join("\n")
            ),
        ));
    }
    println!(
        "published inventory matches QEMU's hardware: {} bytes, gaps: {}",
        serde_json::to_string(&inv)?.len(),
        inv["gaps"]
    );

    // The capture the VM wrote, replayed here, says the same about the hardware (link state and
    // names may differ: it was taken before netd brought the links up).
    let report = vm
        .wait_for_test_report("capture", scaled(Duration::from_secs(150)))
        .map_err(|e| fail(&vm, e.to_string()))?;
    if report["ok"] != true {
        return Err(fail(&vm, format!("the capture failed: {report}")));
    }
    let root = share.path().join("root");
    let recorded = shoal_inventory::Recorded::load(&root).map_err(|e| anyhow::anyhow!(e))?;
    let replayed = serde_json::to_value(shoal_inventory::collect(
        &shoal_inventory::Roots::under(&root),
        &recorded,
    ))?;
    for part in ["system", "cpu", "memory", "storage", "pci", "accelerators"] {
        if replayed[part] != inv[part] {
            return Err(fail(
                &vm,
                format!(
                    "the capture replays {part} differently:\n{:#}\nvs published\n{:#}",
                    replayed[part], inv[part]
                ),
            ));
        }
    }
    if std::env::var_os("SHOAL_SAVE_FIXTURE").is_some() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/tests/fixtures/qemu-vm");
        let _ = std::fs::remove_dir_all(fixture.join("root"));
        std::fs::create_dir_all(&fixture)?;
        let status = std::process::Command::new("cp")
            .args([
                "-a",
                &root.display().to_string(),
                &fixture.join("root").display().to_string(),
            ])
            .status()?;
        anyhow::ensure!(status.success(), "copying the capture: {status}");
        println!("saved the capture as {}", fixture.display());
    }

    // The human table and the node view say the same.
    let table = ctl(&["inventory", &node])?;
    for needle in [
        "Reef 9000",
        "NVME-SN-1",
        "Shoal SATA Disk",
        E1000E_MAC,
        "numa.nodes=2",
    ] {
        if !table.contains(needle) {
            return Err(fail(
                &vm,
                format!("`shoalctl inventory` lacks {needle:?}:\n{table}"),
            ));
        }
    }
    let view = ctl(&["node", &node])?;
    if !view.contains("4 threads (2 sockets, 2 cores), 512 MiB, 3 disks, 2 NICs") {
        return Err(fail(
            &vm,
            format!("`shoalctl node` lacks the hardware summary:\n{view}"),
        ));
    }

    // Hot-plug a disk through QEMU's monitor: it shows up in the published inventory.
    let hot = images.path().join("hot.img");
    std::fs::File::create(&hot)?.set_len(16 << 20)?;
    let collections_before = vm
        .events()
        .iter()
        .filter(|e| e.name() == "hardware.inventory")
        .count();
    let hotplugged = Instant::now();
    vm.qmp(|q| {
        q.execute(
            "blockdev-add",
            Some(json!({"driver": "raw", "node-name": "hp0",
                        "file": {"driver": "file", "filename": hot.display().to_string()}})),
        )?;
        q.device_add(json!({"driver": "virtio-blk-pci", "drive": "hp0", "id": "hpdisk", "serial": "HOT-SN-1"}))
    })?;
    // The collector runs again once the uevents settle (the events before are the boot's).
    let again = vm
        .wait_for_nth_event(
            "hardware.inventory",
            collections_before,
            scaled(Duration::from_secs(30)),
        )
        .map_err(|e| fail(&vm, e.to_string()))?;
    if let Event::HardwareInventory { ms, reason, .. } = again.event {
        println!("inventory collected again ({reason}) in {ms:.1} ms, on an idle node");
    }
    // Waits for the published inventory to list an entry under `list` with `key` = `value`.
    let appears = |list: &str, key: &str, value: &str| {
        eventually(
            &format!("{key} {value} in {list}"),
            scaled(Duration::from_secs(20)),
            poll,
            || {
                let inv = fetch().map_err(|e| e.to_string())?;
                let entries = inv.pointer(list).cloned().unwrap_or_default();
                find(&entries, key, value)
                    .cloned()
                    .ok_or_else(|| entries.to_string())
            },
        )
        .map_err(|e| fail(&vm, e))
    };
    let disk = appears("/storage/disks", "serial", "HOT-SN-1")?;
    println!(
        "hot-plugged disk {} ({} bytes) published {:.2} s after device_add",
        disk["name"],
        disk["size_bytes"],
        hotplugged.elapsed().as_secs_f64()
    );
    if disk["size_bytes"] != json!(16u64 << 20) || disk["transport"] != "virtio" {
        return Err(fail(&vm, format!("hot-plugged disk: {disk}")));
    }

    // And a NIC: it appears with its MAC and driver.
    let nic = vm.hotplug_nic(&network, NicModel::E1000e)?;
    let plugged = Instant::now();
    let found = appears("/network", "permanent_mac", &nic.mac)?;
    println!(
        "hot-plugged NIC {} ({}) published {:.2} s after device_add",
        found["name"],
        found["driver"],
        plugged.elapsed().as_secs_f64()
    );
    if found["driver"] != "e1000e" {
        return Err(fail(&vm, format!("hot-plugged NIC: {found}")));
    }
    Ok(())
}

#[test]
fn under_uefi_boot_mode_and_secure_boot_come_from_the_firmware() -> anyhow::Result<()> {
    let image = test_image()?;
    let (network, www) = one_node_lab()?;
    // OVMF without enrolled keys: UEFI, Secure Boot off. The variable store is the VM's own.
    let code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    let vars = www.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)?;
    let vm = start(&image, "inventory-uefi", |b| {
        b.nic(&network, NicModel::VirtioNet)
            .cmdline("shoal.config=http://10.77.0.1/cluster.toml")
            .args([
                "-drive".to_string(),
                format!("if=pflash,format=raw,readonly=on,file={code}"),
                "-drive".to_string(),
                format!("if=pflash,format=raw,file={}", vars.display()),
            ])
    })?;
    let operator = Operator::of(&vm, &network, &www)?;
    let inv = operator.published(&vm)?;
    expect_fields(
        &inv,
        &[
            ("/system/firmware/boot_mode", json!("uefi")),
            ("/system/firmware/secure_boot", json!(false)),
            ("/labels/firmware.uefi", json!("true")),
        ],
    )
    .map_err(|e| fail(&vm, format!("{e}\nfirmware: {}", inv["system"]["firmware"])))?;
    if inv["gaps"].to_string().contains("secure boot") {
        return Err(fail(&vm, format!("efivarfs was not read: {}", inv["gaps"])));
    }
    println!("UEFI: {}", inv["system"]["firmware"]);
    Ok(())
}
