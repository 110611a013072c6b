//! PID 1 reaps orphans: the test image's boot task `shoal-test-orphans` makes some and reports.

use shoal_qemu_tests::testing::{boot_timeout, start, test_image};

#[test]
fn orphans_are_reaped() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "orphans", |b| b)?;
    let report = vm.wait_for_test_report("orphans", boot_timeout())?;
    let field = |name: &str| report.get(name).and_then(|v| v.as_u64());
    assert!(report.get("error").is_none(), "the helper failed: {report}");
    assert!(
        field("orphans").unwrap_or(0) > 0,
        "no orphans were created: {report}"
    );
    assert!(
        field("reparented").unwrap_or(0) > 0,
        "no orphan was re-parented to PID 1: {report}"
    );
    assert_eq!(
        field("zombies"),
        Some(0),
        "orphans left as zombies: {report}"
    );
    if let Some(all) = field("zombies_of_pid1") {
        assert_eq!(all, 0, "PID 1 has unreaped children: {report}");
    }
    Ok(())
}
