//! Publishing this node's hardware inventory: `shoal-inventory` (run by PID 1 at boot and after
//! hotplug) writes it to a file; every second clusterd looks whether the file changed and
//! whether the replicated state holds what the file says, and proposes it when not. Comparing
//! with the state, not with what was last sent, makes a lost proposal or a restart of clusterd
//! heal by itself.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use shoal_inventory::Inventory;

use crate::state::HardwareRecord;

/// Turns the collector's JSON into what the state keeps. The JSON must be an inventory (an
/// arbitrary file there is refused, not published).
pub fn record(json: &str) -> Result<HardwareRecord, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    // serde would take a list for a struct; an inventory is an object.
    if !value.is_object() {
        return Err("not an inventory: not a JSON object".into());
    }
    let inventory: Inventory =
        serde_json::from_value(value).map_err(|e| format!("not an inventory: {e}"))?;
    if inventory.schema == 0 {
        return Err("not an inventory: no schema version".into());
    }
    Ok(HardwareRecord {
        json: json.to_string(),
        summary: shoal_inventory::summary(&inventory),
        labels: inventory.labels,
        updated_ms: 0,
    })
}

/// The inventory file as last read.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    /// Modification time and length when last read.
    seen: Option<(SystemTime, u64)>,
    current: Option<HardwareRecord>,
}

impl Watcher {
    pub fn new(path: &Path) -> Watcher {
        Watcher {
            path: path.to_path_buf(),
            seen: None,
            current: None,
        }
    }

    /// Re-reads the file if it changed; returns the inventory it holds (the last good one if
    /// the file is now unreadable or bad, which is logged once per change).
    pub fn current(&mut self) -> Option<&HardwareRecord> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return self.current.as_ref();
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if self.seen != Some(stamp) {
            self.seen = Some(stamp);
            match std::fs::read_to_string(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|json| record(&json))
            {
                Ok(record) => self.current = Some(record),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "inventory not published: {e}")
                }
            }
        }
        self.current.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory_json(threads: u32) -> String {
        let mut inv = Inventory {
            schema: shoal_inventory::SCHEMA,
            ..Inventory::default()
        };
        inv.cpu.threads = threads;
        inv.labels.insert("cpu.threads".into(), threads.to_string());
        serde_json::to_string(&inv).unwrap()
    }

    #[test]
    fn records_carry_summary_and_labels() {
        let r = record(&inventory_json(4)).unwrap();
        assert!(r.summary.starts_with("4 threads"), "{}", r.summary);
        assert_eq!(r.labels["cpu.threads"], "4");
        assert!(record("{}").unwrap_err().contains("no schema"));
        assert!(record("[1]").unwrap_err().contains("not a JSON object"));
        assert!(
            record("{\"schema\": \"x\"}")
                .unwrap_err()
                .contains("not an inventory")
        );
        assert!(record("{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn follows_the_file_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.json");
        let mut w = Watcher::new(&path);
        assert_eq!(w.current(), None);
        std::fs::write(&path, inventory_json(2)).unwrap();
        assert_eq!(w.current().unwrap().labels["cpu.threads"], "2");
        std::fs::write(&path, inventory_json(16)).unwrap();
        assert_eq!(w.current().unwrap().labels["cpu.threads"], "16");
        std::fs::write(&path, "garbage that is longer than before......").unwrap();
        assert_eq!(w.current().unwrap().labels["cpu.threads"], "16");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(w.current().unwrap().labels["cpu.threads"], "16");
    }
}
