//! Checks the generated module index files against kmod's `depmod` on the real kernel package:
//! the same dependencies for every module of the default profile's full set, the same aliases,
//! and a `modules.dep` order that loads every dependency before its user.
//!
//! Needs the kernel package (downloaded into `<workspace>/.cache/shoal` if missing) and
//! `depmod` (Debian package kmod). Missing tools fail the test.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use shoal_image_build::modules::ModuleTree;
use shoal_image_build::{default_cache_dir, kernel, load_profile};

fn parse_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| {
            (
                module.to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

#[test]
fn index_files_agree_with_depmod() {
    let profile = load_profile("default").unwrap();
    let kernel = kernel::fetch(&profile.kernel_package, &default_cache_dir(), |_| {})
        .unwrap_or_else(|e| {
            panic!("fetching the kernel package failed (CI runs apt-get update first): {e}")
        });
    let tree = ModuleTree::scan(&kernel.modules_dir, |_, _| {}).unwrap();
    let selectors: Vec<_> = profile
        .early_modules
        .iter()
        .chain(&profile.full_modules)
        .map(|entry| entry.selector.clone())
        .collect();
    let set = tree.select(&selectors).unwrap();

    let root = tempfile::tempdir().unwrap();
    let ours_dir = root.path().join("ours");
    tree.install(&set, &kernel.modules_dir, &ours_dir).unwrap();
    let ours_dep = parse_dep(&std::fs::read_to_string(ours_dir.join("modules.dep")).unwrap());
    let ours_alias = std::fs::read_to_string(ours_dir.join("modules.alias")).unwrap();

    // depmod -b ROOT works on ROOT/lib/modules/KVER.
    let depmod_root = root.path().join("depmod");
    let depmod_dir = depmod_root.join("lib/modules").join(&kernel.release);
    std::fs::create_dir_all(depmod_dir.parent().unwrap()).unwrap();
    std::fs::rename(&ours_dir, &depmod_dir).unwrap();
    // Only to quiet depmod's warning; the order file does not change modules.dep's contents.
    std::fs::write(depmod_dir.join("modules.order"), "").unwrap();
    let status = Command::new("depmod")
        .arg("-b")
        .arg(&depmod_root)
        .arg(&kernel.release)
        .status()
        .or_else(|_| {
            Command::new("/sbin/depmod")
                .arg("-b")
                .arg(&depmod_root)
                .arg(&kernel.release)
                .status()
        })
        .expect("depmod is needed for this test: apt-get install kmod");
    assert!(status.success(), "depmod failed: {status}");
    let theirs_dep = parse_dep(&std::fs::read_to_string(depmod_dir.join("modules.dep")).unwrap());
    let theirs_alias = std::fs::read_to_string(depmod_dir.join("modules.alias")).unwrap();

    assert_eq!(
        ours_dep.keys().collect::<Vec<_>>(),
        theirs_dep.keys().collect::<Vec<_>>()
    );
    for (module, deps) in &ours_dep {
        let ours: BTreeSet<&String> = deps.iter().collect();
        let theirs: BTreeSet<&String> = theirs_dep[module].iter().collect();
        assert_eq!(ours, theirs, "dependencies of {module}");
    }
    let aliases = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("alias "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(aliases(&ours_alias), aliases(&theirs_alias));

    // Loading each list from last to first, then the module, meets every dependency first.
    for (module, deps) in &ours_dep {
        let mut loaded: BTreeSet<&str> = BTreeSet::new();
        for path in deps.iter().rev().chain([module]) {
            for needed in &ours_dep[path] {
                assert!(
                    loaded.contains(needed.as_str()),
                    "{module}: {path} would load before {needed}"
                );
            }
            loaded.insert(path);
        }
    }
}
