//! Kernel module resolution without udev or kmod: which modules a device's modalias needs
//! (`modules.alias`), in which order to load them (`modules.dep`, `modules.softdep`), and which
//! ones are built into the kernel (`modules.builtin`). Pure: the index files are read by the
//! caller and handed in as text, so everything here is tested on fixtures.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A module's canonical name: the kernel treats `-` and `_` alike and reports `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/drivers/net/virtio_net.ko`.
pub fn name_from_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// `fnmatch(3)` without flags, as modprobe uses it for aliases: `*`, `?`, `[...]` with ranges
/// and `!`/`^` negation, and `\` escapes. `*` also matches `/`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the most recent `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == b'[' {
                        // An unterminated '[' matches itself.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() && p[pi + 1] == t[ti] => {
                    pi += 2;
                    ti += 1;
                    continue;
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last `*` swallow one more character, or fail.
        match star {
            Some((after_star, star_ti)) => {
                pi = after_star;
                ti = star_ti + 1;
                star = Some((after_star, star_ti + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression starting at `p[start] == '['`.
/// Returns (matched, index after the closing `]`), or `None` if the bracket never closes.
fn match_class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = p[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// The part of a modalias or alias pattern that selects the bus (`pci`, `virtio`, `acpi`, ...),
/// used to avoid matching every device against every alias.
fn bus_of(s: &str) -> &str {
    s.split(':').next().unwrap_or("")
}

/// `modules.alias`, indexed by bus.
#[derive(Debug, Default)]
pub struct AliasIndex {
    /// Patterns whose bus part is a plain word, by bus.
    by_bus: HashMap<String, Vec<(String, String)>>,
    /// Patterns whose bus part itself holds a wildcard (rare, e.g. `acpi*:...`).
    wild: Vec<(String, String)>,
}

impl AliasIndex {
    /// Parses `alias PATTERN MODULE` lines; other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut index = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            let (Some(pattern), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            let entry = (pattern.to_string(), normalize(module));
            let bus = bus_of(pattern);
            if bus.contains(['*', '?', '[', '\\']) {
                index.wild.push(entry);
            } else {
                index.by_bus.entry(bus.to_string()).or_default().push(entry);
            }
        }
        index
    }

    /// Every module whose alias matches `modalias`, sorted and without repeats.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let candidates = self.by_bus.get(bus_of(modalias)).into_iter().flatten();
        let found: BTreeSet<String> = candidates
            .chain(self.wild.iter())
            .filter(|(pattern, _)| glob_match(pattern, modalias))
            .map(|(_, module)| module.clone())
            .collect();
        found.into_iter().collect()
    }
}

/// `modules.dep`, `modules.softdep` and `modules.builtin` together: where each module's file is
/// and what must be loaded before it.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// Module name -> (path relative to the modules directory, its dependencies' names).
    modules: BTreeMap<String, (String, Vec<String>)>,
    soft_pre: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
    /// Alias -> modules, for soft dependencies that name an alias.
    aliases: AliasIndex,
}

/// One step of a load plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStep {
    pub name: String,
    /// Relative to the modules directory (`kernel/drivers/...ko`).
    pub path: String,
    /// A soft dependency (or one of its dependencies): loading it is best effort, and its
    /// failure does not stop the plan. `crc32c_intel` fails on CPUs without SSE4.2, say, and
    /// `crc32c_generic` serves instead.
    pub optional: bool,
}

/// Why a module cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("module {0} is not in modules.dep (not part of this image)")]
    Unknown(String),
}

impl ModuleDb {
    /// Parses the index files. `aliases` resolves soft dependencies that name an alias.
    pub fn parse(dep: &str, softdep: &str, builtin: &str, aliases: AliasIndex) -> Self {
        let mut db = Self {
            aliases,
            ..Self::default()
        };
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(name_from_path).collect();
            db.modules
                .insert(name_from_path(path), (path.to_string(), deps));
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut in_pre = false;
            for word in words {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    dep if in_pre => db
                        .soft_pre
                        .entry(normalize(module))
                        .or_default()
                        .push(normalize(dep)),
                    _ => {}
                }
            }
        }
        db.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(name_from_path)
            .collect();
        db
    }

    /// Every module whose alias matches a device's modalias.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        self.aliases.lookup(modalias)
    }

    fn soft_providers(&self, alias: &str) -> Vec<String> {
        // Crypto modules register "crypto-NAME" as well as "NAME".
        let mut found = self.aliases.lookup(alias);
        found.extend(self.aliases.lookup(&format!("crypto-{alias}")));
        found.sort();
        found.dedup();
        found
    }

    /// The modules `name` needs in the kernel before it loads, each with whether it is a hard
    /// dependency (`modules.dep`) or a provider of a soft pre-dependency (best effort).
    /// Built-in modules are left out; unknown ones are kept (planning reports them).
    pub fn prerequisites(&self, name: &str) -> Vec<(String, bool)> {
        let name = normalize(name);
        let mut found: Vec<(String, bool)> = Vec::new();
        for pre in self.soft_pre.get(&name).into_iter().flatten() {
            if self.modules.contains_key(pre) {
                found.push((pre.clone(), false));
            } else {
                found.extend(self.soft_providers(pre).into_iter().map(|p| (p, false)));
            }
        }
        if let Some((_, deps)) = self.modules.get(&name) {
            found.extend(deps.iter().map(|d| (d.clone(), true)));
        }
        found.retain(|(m, _)| !self.builtin.contains(m));
        found
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalize(name))
    }

    /// The modules to load, in order, so that `name` ends up loaded: soft pre-dependencies
    /// first (best effort: unknown ones are skipped), then hard dependencies depth-first, then
    /// the module itself. Modules in `loaded` and built-in ones are left out.
    pub fn plan(&self, name: &str, loaded: &BTreeSet<String>) -> Result<Vec<LoadStep>, PlanError> {
        let name = normalize(name);
        if self.builtin.contains(&name) || loaded.contains(&name) {
            return Ok(Vec::new());
        }
        let mut plan = Vec::new();
        let mut seen = BTreeSet::new();
        self.visit(&name, loaded, &mut seen, &mut plan, false)?;
        Ok(plan)
    }

    fn visit(
        &self,
        name: &str,
        loaded: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        plan: &mut Vec<LoadStep>,
        optional: bool,
    ) -> Result<(), PlanError> {
        if !seen.insert(name.to_string()) || loaded.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        let Some((path, deps)) = self.modules.get(name) else {
            return if optional {
                Ok(())
            } else {
                Err(PlanError::Unknown(name.to_string()))
            };
        };
        for pre in self.soft_pre.get(name).into_iter().flatten() {
            // A soft dependency may name an alias rather than a module (libcrc32c wants
            // "crc32c", which crc32c_generic and crc32c_intel provide): take every provider.
            if self.modules.contains_key(pre) {
                self.visit(pre, loaded, seen, plan, true)?;
            } else {
                for provider in self.soft_providers(pre) {
                    self.visit(&provider, loaded, seen, plan, true)?;
                }
            }
        }
        for dep in deps {
            self.visit(dep, loaded, seen, plan, optional)?;
        }
        plan.push(LoadStep {
            name: name.to_string(),
            path: path.clone(),
            optional,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob_match(
            "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(!glob_match(
            "pci:v00001AF4d00001001sv*",
            "pci:v00001AF4d00001000sv00001AF4"
        ));
        assert!(glob_match(
            "virtio:d00000001v*",
            "virtio:d00000001v00001AF4"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**a**", "xxaxx"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("a*b*c", "a/b/c"));
        assert!(!glob_match("a*b*c", "a/b/d"));
    }

    #[test]
    fn glob_classes_and_escapes() {
        assert!(glob_match("x[0-9]y", "x7y"));
        assert!(!glob_match("x[0-9]y", "xay"));
        assert!(glob_match("x[!0-9]y", "xay"));
        assert!(glob_match("x[^0-9]y", "xay"));
        assert!(glob_match("x[]a]y", "x]y"));
        assert!(glob_match("x[a-]y", "x-y"));
        assert!(glob_match(r"a\*b", "a*b"));
        assert!(!glob_match(r"a\*b", "axb"));
        assert!(glob_match("a[b", "a[b"));
        // A real alias with a class, from the i6300esb/e1000e style tables.
        assert!(glob_match("acpi*:PNP0C0[CD]:*", "acpi:PNP0C0C:"));
    }

    const ALIASES: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias acpi*:LNXPWRBN:* button
alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
";

    #[test]
    fn alias_lookup_by_bus_and_wildcard_bus() {
        let index = AliasIndex::parse(ALIASES);
        assert_eq!(
            index.lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            vec!["virtio_pci"]
        );
        assert_eq!(
            index.lookup("virtio:d00000001v00001AF4"),
            vec!["virtio_net"]
        );
        assert_eq!(index.lookup("acpi:LNXPWRBN:"), vec!["button"]);
        assert_eq!(
            index.lookup("input:b0019v0000p0001e0000-e0,1,k74,ramlsfw"),
            vec!["evdev"]
        );
        assert!(
            index
                .lookup("usb:v1D6Bp0002d0601dc09dsc00dp01ic09isc00ip00in00")
                .is_empty()
        );
    }

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/net/net_failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
";

    fn names(plan: &[LoadStep]) -> Vec<&str> {
        plan.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn plans_dependencies_before_the_module() {
        let db = ModuleDb::parse(
            DEP,
            "softdep ext4 pre: crc32c_generic missing_one\nsoftdep jbd2 pre: crc32c\n",
            "kernel/drivers/virtio/virtio.ko\n",
            AliasIndex::parse("alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n"),
        );
        let plan = db.plan("virtio-net", &BTreeSet::new()).unwrap();
        assert_eq!(names(&plan), vec!["failover", "net_failover", "virtio_net"]);
        assert_eq!(plan[2].path, "kernel/drivers/net/virtio_net.ko");

        let plan = db.plan("ext4", &BTreeSet::new()).unwrap();
        assert_eq!(
            names(&plan),
            vec!["crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"]
        );
        // A soft dependency naming an alias loads the modules providing it.
        let plan = db.plan("jbd2", &BTreeSet::new()).unwrap();
        assert_eq!(names(&plan), vec!["crc32c_generic", "jbd2"]);
        assert_eq!(
            plan.iter().map(|s| s.optional).collect::<Vec<_>>(),
            vec![true, false]
        );

        let plan = db.plan("dm_verity", &BTreeSet::new()).unwrap();
        assert_eq!(names(&plan), vec!["dm_mod", "dm_verity"]);
    }

    #[test]
    fn skips_loaded_and_builtin_modules() {
        let db = ModuleDb::parse(
            DEP,
            "",
            "kernel/drivers/virtio/virtio.ko\n",
            AliasIndex::default(),
        );
        let loaded: BTreeSet<String> = ["failover".to_string()].into();
        assert_eq!(
            names(&db.plan("virtio_net", &loaded).unwrap()),
            vec!["net_failover", "virtio_net"]
        );
        assert!(db.plan("virtio", &BTreeSet::new()).unwrap().is_empty());
        assert!(db.is_builtin("virtio"));
        assert!(db.contains("dm-mod"));
    }

    #[test]
    fn unknown_modules_are_an_error() {
        let db = ModuleDb::parse(DEP, "", "", AliasIndex::default());
        assert_eq!(
            db.plan("nope", &BTreeSet::new()),
            Err(PlanError::Unknown("nope".into()))
        );
        let db = ModuleDb::parse("kernel/a.ko: kernel/b.ko\n", "", "", AliasIndex::default());
        assert_eq!(
            db.plan("a", &BTreeSet::new()),
            Err(PlanError::Unknown("b".into()))
        );
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            name_from_path("kernel/drivers/md/dm-verity.ko"),
            "dm_verity"
        );
        assert_eq!(name_from_path("kernel/x/y.ko.zst"), "y");
        assert_eq!(name_from_path("virtio_net"), "virtio_net");
    }
}
