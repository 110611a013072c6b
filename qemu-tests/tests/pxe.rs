//! Network boot: no `-kernel`; QEMU's iPXE ROM gets the script URL from dnsmasq and loads the
//! kernel and initramfs over HTTP from the harness's file server.

use shoal_qemu_tests::testing::{boot_timeout, test_image};
use shoal_qemu_tests::{Network, NicModel, Vm};

#[test]
fn boots_over_the_network_with_ipxe_and_http() -> anyhow::Result<()> {
    let image = test_image()?;
    let mut network = Network::new()?;
    network.enable_pxe(&image)?;
    let vm = Vm::builder("pxe")
        .nic(&network, NicModel::VirtioNet)
        .pxe()
        .start()?;
    vm.wait_for_event("boot.complete", boot_timeout())?;
    let served = network.http().map(|h| h.served()).unwrap_or_default();
    for file in ["/boot.ipxe", "/vmlinuz", "/initramfs"] {
        assert!(
            served.iter().any(|s| s.path == file && s.status == 200),
            "{file} was not fetched over HTTP: {served:?}"
        );
    }
    Ok(())
}
