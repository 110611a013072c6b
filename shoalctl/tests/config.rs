//! The real `shoalctl` binary on machine configurations: `config validate`, `config schema` and
//! `gen config`, in temporary directories.

// Helpers are test code too: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};
use shoal_config::MachineConfig;

const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";

/// Success, stdout and stderr.
fn shoalctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_good_file_validates_with_a_summary_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[cluster]
name = "lab"
secret = "{SECRET}"
expected_size = 5
voters = 3

[services.metrics]
command = ["/opt/metrics/agent"]
restart = {{ delay = "1s" }}

[[network.links]]
match = {{ name = "eth0" }}
[[network.vlans]]
name = "vlan10"
link = "eth0"
id = 10

[[nodes]]
match = {{ serial = "SN1" }}
hostname = "edge-1"
"#
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let (ok, out, err) = shoalctl(&["config", "validate", path]);
    assert!(ok, "{err}");
    assert_eq!(err, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{path}: valid"));
    assert_eq!(
        lines[1..],
        [
            "cluster:        lab",
            "expected size:  5 nodes",
            "voters:         3",
            lines[4],
            "node sections:  1",
            "services:       metrics",
            "network:        1 link, 1 VLAN, 0 bonds, 0 bridges",
            "api tokens:     -",
        ]
    );
    assert!(
        lines[4].starts_with("secret:         present <redacted, 37 bytes, #"),
        "{out}"
    );
    assert!(!out.contains(SECRET), "{out}");

    let (ok, out, _) = shoalctl(&["config", "validate", path, "-o", "json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["cluster"]["name"], "lab");
    assert_eq!(json["cluster"]["secret"], true);
    assert_eq!(json["network"]["vlans"], 1);
    assert!(!out.contains(SECRET), "{out}");
}

#[test]
fn a_bad_file_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine.toml");
    std::fs::write(
        &file,
        r#"
[cluster]
name = "lab"
voters = 4

[services.metrics]
command = ["/opt/metrics/agent"]
restart = { delay = "soon" }

[[network.vlans]]
name = "vlan10"
link = "eth0"
id = 5000
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) = shoalctl(&["config", "validate", path]);
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!(
                "{path}: cluster.voters: 4 voters cannot keep a majority well; use 1, 3, 5 or 7"
            ),
            format!("{path}: network.vlans[0].id: VLAN id 5000 is not 1 to 4094"),
            // From the supervisor's own parser.
            format!(
                "{path}: services.metrics.restart.delay: \"soon\" is not a duration (use 100ms, \
                 5s, 2m, 1h)"
            ),
        ]
    );

    let (ok, out, err) = shoalctl(&["config", "validate", path, "-o", "json"]);
    assert!(!ok);
    assert_eq!(err, "");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(
        json["errors"][2]["location"],
        "services.metrics.restart.delay"
    );

    // A syntax or shape error carries its line and column.
    std::fs::write(&file, "[cluster]\nname = \"lab\"\nsize = 3\n").unwrap();
    let (ok, _, err) = shoalctl(&["config", "validate", path]);
    assert!(!ok);
    assert_eq!(
        err.trim_end(),
        format!(
            "{path}: line 3, column 1: unknown field `size`, expected one of `name`, `secret`, \
             `expected_size`, `voters`, `seeds`, `port`"
        )
    );

    let (ok, _, err) = shoalctl(&["config", "validate", "/nonexistent/machine.toml"]);
    assert!(!ok);
    assert_eq!(
        err.trim_end(),
        "shoalctl: cannot read /nonexistent/machine.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn the_schema_is_json_with_the_top_level_sections() {
    let (ok, out, err) = shoalctl(&["config", "schema"]);
    assert!(ok, "{err}");
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    for section in [
        "version", "cluster", "node", "network", "services", "update", "api", "nodes",
    ] {
        assert!(schema["properties"].get(section).is_some(), "{section}");
    }
    assert_eq!(schema["additionalProperties"], false);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/machine-config.schema.json"
    ))
    .unwrap();
    assert!(
        out == committed,
        "docs/machine-config.schema.json is not what `config schema` prints"
    );
}

/// The cluster secret and admin token `gen config` wrote into `dir`.
fn generated(dir: &Path) -> (MachineConfig, toml::Table) {
    let machine = std::fs::read_to_string(dir.join("machine.toml")).unwrap();
    let config = MachineConfig::parse("machine.toml", &machine, None).unwrap();
    let client: toml::Table = std::fs::read_to_string(dir.join("shoalctl.toml"))
        .unwrap()
        .parse()
        .unwrap();
    (config, client)
}

#[test]
fn gen_config_writes_a_valid_private_pair_and_never_overwrites_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("lab");
    let out = out_dir.to_str().unwrap();
    let args = [
        "gen", "config", "--name", "lab", "--size", "5", "--voters", "5", "--out", out,
    ];
    let (ok, stdout, stderr) = shoalctl(&args);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "wrote {out}/machine.toml: cluster \"lab\", 5 nodes, 5 voters, a new cluster secret, \
             the admin token's hash\n\
             wrote {out}/shoalctl.toml: the admin token for \"lab\"; list node addresses in \
             endpoints\n"
        )
    );
    assert!(
        stderr.starts_with("shoalctl: warning: both files hold secrets"),
        "{stderr}"
    );
    for file in ["machine.toml", "shoalctl.toml"] {
        assert_eq!(mode(&out_dir.join(file)), 0o600, "{file}");
    }

    let (config, client) = generated(&out_dir);
    assert_eq!(config.cluster.name, "lab");
    assert_eq!(
        (config.cluster.expected_size, config.cluster.voters),
        (5, 5)
    );
    assert_eq!(config.cluster.secret.as_ref().unwrap().expose().len(), 32);
    assert_eq!(client["cluster"].as_str(), Some("lab"));
    assert_eq!(client["endpoints"].as_array().map(Vec::len), Some(0));
    let token = client["token"].as_str().unwrap();
    assert_eq!(token.len(), 64, "{token}");
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(config.api.tokens["admin"], format!("sha256:{hash}"));
    // Neither the secret nor the token is printed.
    let secret = config.cluster.secret.as_ref().unwrap().to_base64();
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
    assert!(!stdout.contains(token) && !stderr.contains(token));

    // shoalctl itself takes what it wrote.
    let (ok, _, err) = shoalctl(&["config", "validate", &format!("{out}/machine.toml")]);
    assert!(ok, "{err}");

    // Again: refused, nothing touched.
    let before = std::fs::read(out_dir.join("machine.toml")).unwrap();
    let (ok, stdout, stderr) = shoalctl(&args);
    assert!(!ok);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "shoalctl: {out}/machine.toml and {out}/shoalctl.toml are there already; nothing \
             written (--force replaces them, and the secrets they hold are lost)"
        )
    );
    assert_eq!(std::fs::read(out_dir.join("machine.toml")).unwrap(), before);

    // One of the two is enough to refuse.
    std::fs::remove_file(out_dir.join("machine.toml")).unwrap();
    let (ok, _, stderr) = shoalctl(&args);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{out}/shoalctl.toml is there already")),
        "{stderr}"
    );
    assert!(!out_dir.join("machine.toml").exists(), "nothing written");

    // --force replaces both, with new secrets, and a file that was readable is 0600 again.
    std::fs::write(out_dir.join("machine.toml"), "").unwrap();
    std::fs::set_permissions(
        out_dir.join("machine.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut forced = args.to_vec();
    forced.push("--force");
    let (ok, _, stderr) = shoalctl(&forced);
    assert!(ok, "{stderr}");
    assert_eq!(mode(&out_dir.join("machine.toml")), 0o600);
    let (again, again_client) = generated(&out_dir);
    assert_ne!(again.cluster.secret, config.cluster.secret);
    assert_ne!(again_client["token"], client["token"]);
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn gen_config_twice_gives_different_secrets_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let (ok, _, err) = shoalctl(&[
            "gen",
            "config",
            "--name",
            "edge",
            "--size",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
    }
    let ((config_a, client_a), (config_b, client_b)) = (generated(&a), generated(&b));
    assert_eq!(config_a.cluster.voters, 1, "one voter below three nodes");
    assert_ne!(config_a.cluster.secret, config_b.cluster.secret);
    assert_ne!(client_a["token"], client_b["token"]);
    assert_ne!(config_a.api.tokens["admin"], config_b.api.tokens["admin"]);
}

#[test]
fn gen_config_refuses_values_the_configuration_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (ok, _, err) = shoalctl(&[
        "gen", "config", "--name", "Lab_1", "--voters", "4", "--out", out,
    ]);
    assert!(!ok);
    assert_eq!(
        err.trim_end(),
        "shoalctl: nothing written:\n  \
         --name: \"Lab_1\" is not a DNS label (1 to 63 of a-z, 0-9, '-', not starting or ending with '-')\n  \
         --voters: 4 voters cannot keep a majority well; use 1, 3, 5 or 7"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
