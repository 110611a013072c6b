//! The JSON Schema of the machine configuration, for editors: `docs/machine-config.schema.json`
//! is what [`schema`] returns (a test keeps the two equal). Regenerate it with
//! `cargo run -p shoalctl -- config schema > docs/machine-config.schema.json`.
//!
//! Draft 7, which the TOML language servers (taplo, Even Better TOML) and most editors read.
//! The schema catches what an editor can show as you type: unknown keys, types, enumerations,
//! patterns and ranges. Checks across fields (`api.port` equal to `cluster.port`, a bond's
//! `primary` among its links, service definitions) stay with [`MachineConfig::parse`].

use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};

use crate::machine::MachineConfig;

/// The schema of [`MachineConfig`] as JSON.
pub fn schema() -> serde_json::Value {
    let generator = SchemaSettings::draft07()
        .with_transform(NoNull)
        .into_generator();
    generator.into_root_schema_for::<MachineConfig>().to_value()
}

/// The schema as the committed file holds it: pretty-printed, with a final newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// TOML has no null: an `Option` field is one that may be left out, never one set to null, so
/// the `null` alternatives schemars gives options are removed.
#[derive(Debug, Clone)]
struct NoNull;

impl Transform for NoNull {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        transform_subschemas(self, schema);
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if let Some(serde_json::Value::Array(types)) = object.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                object.insert("type".into(), only);
            }
        }
        if let Some(serde_json::Value::Array(alternatives)) = object.get_mut("enum") {
            alternatives.retain(|v| !v.is_null());
        }
        if let Some(serde_json::Value::Array(alternatives)) = object.get_mut("anyOf") {
            alternatives.retain(|a| a.get("type").and_then(|t| t.as_str()) != Some("null"));
            if alternatives.len() == 1 {
                let only = alternatives.remove(0);
                object.remove("anyOf");
                match only {
                    // Draft 7 ignores what stands beside a `$ref`: keep it in an allOf.
                    serde_json::Value::Object(o) if o.contains_key("$ref") => {
                        object.insert("allOf".into(), vec![serde_json::Value::Object(o)].into());
                    }
                    serde_json::Value::Object(o) => {
                        for (key, value) in o {
                            object.entry(key).or_insert(value);
                        }
                    }
                    other => {
                        object.insert("anyOf".into(), vec![other].into());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGENERATE: &str =
        "cargo run -p shoalctl -- config schema > docs/machine-config.schema.json";

    #[test]
    fn the_committed_schema_is_what_the_code_generates() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/machine-config.schema.json"
        );
        let committed = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}; generate it with\n  {REGENERATE}"));
        // Compared as text: the file editors read is exactly this.
        assert!(
            committed == schema_text(),
            "docs/machine-config.schema.json is out of date; regenerate it with\n  {REGENERATE}"
        );
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A TOML document as the JSON an editor's schema check sees.
    fn as_json(text: &str) -> serde_json::Value {
        let table: toml::Table = text.parse().expect("TOML");
        serde_json::to_value(table).expect("JSON")
    }

    fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
        validator
            .iter_errors(&as_json(text))
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn the_documented_example_parses_and_the_schema_accepts_it() {
        let validator = jsonschema::validator_for(&schema()).expect("a valid draft 7 schema");
        let text = fixture("machine-example.toml");
        let config = MachineConfig::parse("machine-example.toml", &text, None)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(schema_errors(&validator, &text), Vec::<String>::new());
        // What this crate writes back, and an empty file, pass too.
        let written = toml::to_string(&config).expect("serialises");
        assert_eq!(schema_errors(&validator, &written), Vec::<String>::new());
        let defaults = toml::to_string(&MachineConfig::default()).expect("serialises");
        assert_eq!(schema_errors(&validator, &defaults), Vec::<String>::new());
        assert_eq!(schema_errors(&validator, ""), Vec::<String>::new());
    }

    #[test]
    fn the_schema_refuses_what_the_parser_refuses() {
        let validator = jsonschema::validator_for(&schema()).expect("a valid draft 7 schema");
        let cases = [
            "version = 2\n",
            "[clusters]\n",
            "[cluster]\nsize = 3\n",
            "[cluster]\nname = \"Lab_1\"\n",
            "[cluster]\nvoters = 4\n",
            "[cluster]\nexpected_size = 0\n",
            "[cluster]\nsecret = \"dG9vIHNob3J0\"\n",
            "[cluster]\nsecret = \"not base64!\"\n",
            "[cluster]\nseeds = [\"10.0.0.1\"]\n",
            "[node]\nvoter = \"always\"\n",
            "[node]\nlabels = { \"bad key\" = \"v\" }\n",
            "[network]\nnamin = 1\n",
            "[network.online]\ntimeout = \"soon\"\n",
            "[[network.links]]\nmatch = { name = \"eth0\" }\nmtuu = 1500\n",
            "[[network.links]]\nmatch = { mac = \"52:54:00:12:34\" }\n",
            "[[network.links]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.5\"]\n",
            "[[network.links]]\nmatch = { name = \"eth0\" }\nmtu = 20\n",
            "[[network.vlans]]\nname = \"a-very-long-interface\"\nlink = \"eth0\"\nid = 5\n",
            "[[network.vlans]]\nname = \"vlan5\"\nlink = \"eth0\"\nid = 4095\n",
            "[[network.bonds]]\nname = \"bond0\"\nlinks = [\"eth0\"]\nmode = \"active-standby\"\n",
            "[[network.bonds]]\nname = \"bond0\"\nlinks = [\"eth0\"]\nmode = \"802.3ad\"\nmiimon = 100\n",
            "[services.Bad]\ncommand = [\"/x\"]\n",
            "[update]\ntrusted_keys = [\"rsa:AAAA\"]\n",
            "[update]\npolicy = \"nightly\"\n",
            "[api]\nport = 0\n",
            "[api]\ntokens = { admin = \"secret-token\" }\n",
            "[[nodes]]\nmatch = {}\n",
            "[[nodes]]\nhostname = \"no-match\"\n",
            "[[nodes]]\nmatch = { uuid = \"1234\" }\n",
        ];
        for text in cases {
            assert!(
                MachineConfig::parse("m", text, None).is_err(),
                "the parser takes {text:?}"
            );
            assert!(
                !schema_errors(&validator, text).is_empty(),
                "the schema takes {text:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_by_the_schema_too() {
        let s = schema();
        assert_eq!(s["additionalProperties"], false);
        for name in [
            "Cluster",
            "Node",
            "NetworkConfig",
            "LinkConfig",
            "BondConfig",
            "Api",
        ] {
            assert_eq!(
                s["definitions"][name]["additionalProperties"], false,
                "{name}"
            );
        }
        // Flattened addressing fields are part of the link's own properties.
        let link = &s["definitions"]["LinkConfig"]["properties"];
        for field in [
            "match",
            "name",
            "ignore",
            "dhcp",
            "addresses",
            "gateway",
            "routes",
            "mtu",
        ] {
            assert!(link.get(field).is_some(), "LinkConfig.{field}: {link}");
        }
        assert!(
            link.get("first_only").is_none(),
            "not a configuration field"
        );
    }

    #[test]
    fn custom_values_are_strings_with_their_shape() {
        let s = schema();
        let defs = &s["definitions"];
        for name in ["Secret", "Mac", "Cidr", "IfName"] {
            assert_eq!(defs[name]["type"], "string", "{name}");
            assert!(defs[name]["pattern"].is_string(), "{name}");
        }
        let timeout = &defs["Online"]["properties"]["timeout"];
        assert_eq!(timeout["type"], "string");
        assert_eq!(timeout["default"], "30000ms");
        let modes = defs["BondMode"].to_string();
        assert!(
            modes.contains("802.3ad") && modes.contains("active-backup"),
            "{modes}"
        );
        // No nulls: TOML cannot write one.
        assert!(!s.to_string().contains("\"null\""), "{s}");
    }
}
