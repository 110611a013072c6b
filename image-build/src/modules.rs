//! Kernel modules: reading `.modinfo`, choosing a set with its dependencies, and writing the
//! index files (`modules.dep`, `modules.alias`, `modules.softdep`) that PID 1 reads in place of
//! `depmod`'s binary indexes.
//!
//! Module names are compared with `-` and `_` treated as equal (the kernel does the same); the
//! canonical spelling used everywhere in the output is the one with underscores.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::Path;

use crate::elf;
use crate::error::{Error, Result};
use crate::glob;

/// Index and list files copied unchanged from the kernel package when present.
const COPIED_FILES: [&str; 2] = ["modules.builtin", "modules.builtin.modinfo"];

/// The canonical module name: `-` replaced by `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// What this crate reads from a module's `.modinfo` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, normalized (absent in very old modules).
    pub name: Option<String>,
    /// `alias=` patterns, in file order.
    pub aliases: Vec<String>,
    /// `depends=`, normalized, in file order.
    pub depends: Vec<String>,
    /// The `pre:` names of all `softdep=` entries (module names or aliases, as written).
    pub softdep_pre: Vec<String>,
    /// The `post:` names of all `softdep=` entries.
    pub softdep_post: Vec<String>,
}

/// Parses a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for entry in section.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(normalize(value)),
            "alias" => info.aliases.push(value.to_owned()),
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "softdep" => parse_softdep(value, &mut info.softdep_pre, &mut info.softdep_post),
            _ => {}
        }
    }
    info
}

/// Parses `pre: a b post: c` (either part optional, in any order).
fn parse_softdep(value: &str, pre: &mut Vec<String>, post: &mut Vec<String>) {
    #[derive(Clone, Copy)]
    enum Part {
        None,
        Pre,
        Post,
    }
    let mut part = Part::None;
    for token in value.split_whitespace() {
        match token {
            "pre:" => part = Part::Pre,
            "post:" => part = Part::Post,
            name => match part {
                Part::Pre => pre.push(name.to_owned()),
                Part::Post => post.push(name.to_owned()),
                Part::None => {}
            },
        }
    }
}

/// One loadable module of the kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (underscores).
    pub name: String,
    /// Path relative to `/lib/modules/$KVER`, such as `kernel/fs/ext4/ext4.ko`.
    pub path: String,
    /// Its `.modinfo`.
    pub info: ModInfo,
}

/// How a profile names modules: by name, or by a path glob under `kernel/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A module name (`-` or `_` spelling).
    Name(String),
    /// A glob over module paths, such as `kernel/drivers/net/ethernet/intel/**`.
    PathGlob(String),
}

impl Selector {
    /// Reads a profile entry: anything with a `/` is a path glob, which must start with `kernel/`.
    pub fn parse(entry: &str) -> Result<Selector, String> {
        if entry.contains('/') {
            if !entry.starts_with("kernel/") {
                return Err(format!(
                    "path glob {entry:?} must start with kernel/ (module paths are relative to /lib/modules/$KVER)"
                ));
            }
            return Ok(Selector::PathGlob(entry.to_owned()));
        }
        let valid = !entry.is_empty()
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!(
                "{entry:?} is neither a module name (letters, digits, _ and -) nor a path glob under kernel/"
            ));
        }
        Ok(Selector::Name(normalize(entry)))
    }
}

/// Why a selection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// The selector at this index of the list names nothing in this kernel.
    Selector {
        /// Index into the selector list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A selected module depends on something the package does not have.
    Dependency(String),
}

/// All modules of one kernel, plus the names built into it.
#[derive(Debug, Clone, Default)]
pub struct ModuleTree {
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
}

impl ModuleTree {
    /// Builds a tree from parsed modules and built-in names (from `modules.builtin`).
    pub fn new(
        modules: impl IntoIterator<Item = Module>,
        builtin: BTreeSet<String>,
    ) -> Result<ModuleTree> {
        let mut map = BTreeMap::new();
        for module in modules {
            if let Some(previous) = map.get(&module.name) {
                let previous: &Module = previous;
                return Err(Error::Modules(format!(
                    "two modules are called {}: {} and {}",
                    module.name, previous.path, module.path
                )));
            }
            map.insert(module.name.clone(), module);
        }
        Ok(ModuleTree {
            modules: map,
            builtin,
        })
    }

    /// Parses `modules.builtin` (one `kernel/.../name.ko` per line) into module names.
    pub fn parse_builtin(text: &str) -> BTreeSet<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko").map(normalize))
            .collect()
    }

    /// Reads every `.ko` under `moddir/kernel` and `moddir/modules.builtin`.
    /// `tick` is called once per module read (for progress).
    pub fn scan(moddir: &Path, mut tick: impl FnMut(usize, usize)) -> Result<ModuleTree> {
        let builtin_file = moddir.join("modules.builtin");
        let builtin = match fs::read_to_string(&builtin_file) {
            Ok(text) => Self::parse_builtin(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(Error::io("read", &builtin_file)(e)),
        };
        let mut paths = Vec::new();
        collect_modules(moddir, &moddir.join("kernel"), &mut paths)?;
        paths.sort();
        let total = paths.len();
        let mut modules = Vec::with_capacity(total);
        for (i, rel) in paths.into_iter().enumerate() {
            let file_path = moddir.join(&rel);
            let info = read_modinfo(&file_path)?;
            let stem = rel
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".ko"))
                .unwrap_or(&rel);
            let name = info.name.clone().unwrap_or_else(|| normalize(stem));
            modules.push(Module {
                name,
                path: rel,
                info,
            });
            tick(i + 1, total);
        }
        ModuleTree::new(modules, builtin)
    }

    /// Number of loadable modules.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether the tree has no loadable modules.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The module called `name` (either spelling).
    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Resolves a soft dependency as modprobe would: a module name, else built in (nothing to
    /// load), else every module with a matching alias (`crypto-crc32c` is an alias).
    fn resolve_softdep(&self, name: &str) -> Vec<String> {
        let canonical = normalize(name);
        if self.modules.contains_key(&canonical) {
            return vec![canonical];
        }
        if self.builtin.contains(&canonical) {
            return Vec::new();
        }
        let found: Vec<String> = self
            .modules
            .values()
            .filter(|m| {
                m.info
                    .aliases
                    .iter()
                    .any(|alias| glob::matches(alias, name, false))
            })
            .map(|m| m.name.clone())
            .collect();
        if found.is_empty() {
            tracing::debug!(
                softdep = name,
                "soft dependency matches no module; skipped as modprobe would"
            );
        }
        found
    }

    /// Selects modules by the profile's selectors and adds, transitively, their `depends`
    /// and soft dependencies (`pre` and `post`). Built-in names are skipped.
    pub fn select(&self, selectors: &[Selector]) -> Result<BTreeSet<String>, SelectError> {
        let mut roots = Vec::new();
        for (index, selector) in selectors.iter().enumerate() {
            match selector {
                Selector::Name(name) if self.modules.contains_key(name) => roots.push(name.clone()),
                Selector::Name(name) if self.builtin.contains(name) => {
                    tracing::debug!(module = %name, "selected module is built into the kernel");
                }
                Selector::Name(name) => {
                    return Err(SelectError::Selector {
                        index,
                        reason: format!(
                            "no module called {name} in this kernel, and it is not built in"
                        ),
                    });
                }
                Selector::PathGlob(pattern) => {
                    let before = roots.len();
                    roots.extend(
                        self.modules
                            .values()
                            .filter(|m| glob::matches(pattern, &m.path, true))
                            .map(|m| m.name.clone()),
                    );
                    if roots.len() == before {
                        return Err(SelectError::Selector {
                            index,
                            reason: format!("path glob {pattern} matches no module in this kernel"),
                        });
                    }
                }
            }
        }
        self.closure(roots)
    }

    fn closure(&self, roots: Vec<String>) -> Result<BTreeSet<String>, SelectError> {
        let mut selected = BTreeSet::new();
        let mut queue = roots;
        while let Some(name) = queue.pop() {
            if selected.contains(&name) {
                continue;
            }
            let module = &self.modules[&name];
            for dep in &module.info.depends {
                if self.modules.contains_key(dep) {
                    queue.push(dep.clone());
                } else if !self.builtin.contains(dep) {
                    return Err(SelectError::Dependency(format!(
                        "{} ({}) depends on {dep}, which is neither a module of this kernel nor built in",
                        module.name, module.path
                    )));
                }
            }
            for soft in module
                .info
                .softdep_pre
                .iter()
                .chain(&module.info.softdep_post)
            {
                queue.extend(self.resolve_softdep(soft));
            }
            selected.insert(name);
        }
        Ok(selected)
    }

    /// The full dependency list of `name` as `modules.dep` wants it: loading the list from
    /// last to first, then the module itself, meets every dependency before its user.
    fn dependency_paths(&self, name: &str) -> Vec<&str> {
        fn visit<'a>(
            tree: &'a ModuleTree,
            name: &str,
            seen: &mut BTreeSet<String>,
            order: &mut Vec<&'a str>,
        ) {
            let Some(module) = tree.modules.get(name) else {
                return;
            };
            let mut deps: Vec<&String> = module
                .info
                .depends
                .iter()
                .filter(|d| tree.modules.contains_key(*d))
                .collect();
            deps.sort();
            deps.dedup();
            for dep in deps {
                if seen.insert(dep.clone()) {
                    visit(tree, dep, seen, order);
                    order.push(&tree.modules[dep].path);
                }
            }
        }
        let mut seen = BTreeSet::from([name.to_owned()]);
        let mut order = Vec::new();
        visit(self, name, &mut seen, &mut order);
        // `order` has every dependency after its own dependencies; modules.dep wants it reversed.
        order.reverse();
        order
    }

    fn selected<'a>(&'a self, set: &'a BTreeSet<String>) -> impl Iterator<Item = &'a Module> + 'a {
        set.iter().filter_map(|name| self.modules.get(name))
    }

    /// `modules.dep`: one `path: dep-path ...` line per selected module, sorted by path.
    pub fn render_dep(&self, set: &BTreeSet<String>) -> String {
        let mut lines: Vec<String> = self
            .selected(set)
            .map(|m| {
                let mut line = format!("{}:", m.path);
                for dep in self.dependency_paths(&m.name) {
                    line.push(' ');
                    line.push_str(dep);
                }
                line
            })
            .collect();
        lines.sort();
        lines.into_iter().map(|l| l + "\n").collect()
    }

    /// `modules.alias`: `alias PATTERN NAME` lines, modules sorted by name, aliases in the
    /// order the module lists them.
    pub fn render_alias(&self, set: &BTreeSet<String>) -> String {
        let mut out = String::from("# Aliases extracted from modules themselves.\n");
        for module in self.selected(set) {
            for alias in &module.info.aliases {
                let _ = writeln!(out, "alias {alias} {}", module.name);
            }
        }
        out
    }

    /// `modules.softdep`: `softdep NAME pre: a b post: c`, with every name resolved to a
    /// selected module (aliases such as `crypto-crc32c` become the modules that provide them).
    pub fn render_softdep(&self, set: &BTreeSet<String>) -> String {
        let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
        let resolve = |names: &[String]| -> Vec<String> {
            let mut resolved = Vec::new();
            for name in names.iter().flat_map(|n| self.resolve_softdep(n)) {
                if set.contains(&name) && !resolved.contains(&name) {
                    resolved.push(name);
                }
            }
            resolved
        };
        for module in self.selected(set) {
            let pre = resolve(&module.info.softdep_pre);
            let post = resolve(&module.info.softdep_post);
            if pre.is_empty() && post.is_empty() {
                continue;
            }
            let mut line = format!("softdep {}", module.name);
            if !pre.is_empty() {
                let _ = write!(line, " pre: {}", pre.join(" "));
            }
            if !post.is_empty() {
                let _ = write!(line, " post: {}", post.join(" "));
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Copies the selected modules from `src_moddir` into `dest_moddir` (same relative paths)
    /// and writes the index files there. Returns the bytes of module files copied.
    pub fn install(
        &self,
        set: &BTreeSet<String>,
        src_moddir: &Path,
        dest_moddir: &Path,
    ) -> Result<u64> {
        let mut bytes = 0;
        for module in self.selected(set) {
            let src = src_moddir.join(&module.path);
            let dest = dest_moddir.join(&module.path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
            }
            bytes += fs::copy(&src, &dest)
                .map_err(Error::io(format!("copy {} to", src.display()), &dest))?;
        }
        fs::create_dir_all(dest_moddir).map_err(Error::io("create", dest_moddir))?;
        for (file, text) in self.index_files(set) {
            let path = dest_moddir.join(file);
            fs::write(&path, text).map_err(Error::io("write", &path))?;
        }
        for file in COPIED_FILES {
            let src = src_moddir.join(file);
            if src.exists() {
                fs::copy(&src, dest_moddir.join(file)).map_err(Error::io("copy", &src))?;
            }
        }
        Ok(bytes)
    }

    /// The generated index files for `set`: (file name, contents).
    pub fn index_files(&self, set: &BTreeSet<String>) -> [(&'static str, String); 3] {
        [
            ("modules.alias", self.render_alias(set)),
            ("modules.dep", self.render_dep(set)),
            ("modules.softdep", self.render_softdep(set)),
        ]
    }

    /// Relative paths of the selected modules, sorted.
    pub fn paths<'a>(&'a self, set: &'a BTreeSet<String>) -> Vec<&'a str> {
        let mut paths: Vec<&str> = self.selected(set).map(|m| m.path.as_str()).collect();
        paths.sort();
        paths
    }
}

/// The files copied unchanged from the kernel package's module directory, when present.
pub fn copied_index_files() -> &'static [&'static str] {
    &COPIED_FILES
}

fn collect_modules(moddir: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(Error::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("list", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(Error::io("stat", &path))?;
        if kind.is_dir() {
            collect_modules(moddir, &path, out)?;
            continue;
        }
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.ends_with(".ko") {
            let rel = path.strip_prefix(moddir).unwrap_or(&path);
            out.push(rel.to_string_lossy().into_owned());
        } else if [".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|ext| file_name.ends_with(ext))
        {
            return Err(Error::Modules(format!(
                "{}: compressed modules are not supported (Debian's 6.1 packages ship plain .ko files)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Reads and parses the `.modinfo` section of one module file.
pub fn read_modinfo(path: &Path) -> Result<ModInfo> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    let elf_error = |e: elf::ReadError| match e {
        elf::ReadError::Io(cause) => Error::Io {
            action: "read".into(),
            path: path.to_path_buf(),
            cause,
        },
        elf::ReadError::Malformed(m) => Error::Elf {
            path: path.to_path_buf(),
            reason: m.to_string(),
        },
    };
    let header = elf::read_header(&file).map_err(elf_error)?;
    let section = elf::section_by_name(&file, &header, ".modinfo")
        .map_err(elf_error)?
        .ok_or_else(|| Error::Elf {
            path: path.to_path_buf(),
            reason: "no .modinfo section".into(),
        })?;
    Ok(parse_modinfo(&section))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, modinfo: &str) -> Module {
        let info = parse_modinfo(modinfo.replace(';', "\0").as_bytes());
        let name = info.name.clone().unwrap();
        Module {
            name,
            path: path.into(),
            info,
        }
    }

    /// A small tree shaped like the real one: ext4 -> jbd2, mbcache, crc16 (built in here),
    /// a soft dependency through an alias, dm-verity -> dm-mod, dm-bufio.
    fn tree() -> ModuleTree {
        ModuleTree::new(
            [
                module("kernel/fs/ext4/ext4.ko", "name=ext4;alias=fs-ext4;alias=fs-ext3;depends=jbd2,mbcache,crc16;softdep=pre: crypto-crc32c"),
                module("kernel/fs/jbd2/jbd2.ko", "name=jbd2;depends=crc32c-generic"),
                module("kernel/fs/mbcache.ko", "name=mbcache;depends="),
                module("kernel/crypto/crc32c_generic.ko", "name=crc32c_generic;alias=crypto-crc32c;alias=crc32c"),
                module("kernel/arch/x86/crypto/crc32c-intel.ko", "name=crc32c_intel;alias=crypto-crc32c;alias=cpu:type:x86,ven*fam*mod*:feature:*0094*"),
                module("kernel/drivers/md/dm-verity.ko", "name=dm_verity;depends=reed_solomon,dm-mod,dm-bufio"),
                module("kernel/drivers/md/dm-mod.ko", "name=dm_mod;alias=devname:mapper/control;softdep=post: nonexistent pre: dm-bufio"),
                module("kernel/drivers/md/dm-bufio.ko", "name=dm_bufio;depends=dm-mod"),
                module("kernel/lib/reed_solomon/reed_solomon.ko", "name=reed_solomon"),
                module("kernel/drivers/net/virtio_net.ko", "name=virtio_net;alias=virtio:d00000001v*;depends=net_failover"),
                module("kernel/drivers/net/net_failover.ko", "name=net_failover;depends=failover"),
                module("kernel/net/core/failover.ko", "name=failover"),
            ],
            ModuleTree::parse_builtin("kernel/lib/crc16.ko\nkernel/drivers/block/loop.ko\n"),
        )
        .unwrap()
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn parses_modinfo_keys() {
        let info = parse_modinfo(
            b"license=GPL\0name=dm-verity\0depends=reed_solomon,dm-mod\0alias=a\0alias=b*\0softdep=pre: x y post: z\0softdep=post: w\0intree=Y\0\0\0",
        );
        assert_eq!(info.name.as_deref(), Some("dm_verity"));
        assert_eq!(info.depends, ["reed_solomon", "dm_mod"]);
        assert_eq!(info.aliases, ["a", "b*"]);
        assert_eq!(info.softdep_pre, ["x", "y"]);
        assert_eq!(info.softdep_post, ["z", "w"]);
        assert_eq!(parse_modinfo(b"depends=\0"), ModInfo::default());
    }

    #[test]
    fn parses_builtin_list() {
        let builtin = ModuleTree::parse_builtin(
            "kernel/drivers/char/tpm/tpm_tis-core.ko\n\nkernel/lib/crc16.ko\n",
        );
        assert_eq!(
            builtin.into_iter().collect::<Vec<_>>(),
            ["crc16", "tpm_tis_core"]
        );
    }

    #[test]
    fn selection_closes_over_depends_and_softdeps() {
        let tree = tree();
        let set = tree.select(&[Selector::parse("ext4").unwrap()]).unwrap();
        assert_eq!(
            names(&set),
            ["crc32c_generic", "crc32c_intel", "ext4", "jbd2", "mbcache"]
        );
        let set = tree
            .select(&[
                Selector::parse("dm-verity").unwrap(),
                Selector::parse("loop").unwrap(),
            ])
            .unwrap();
        assert_eq!(
            names(&set),
            ["dm_bufio", "dm_mod", "dm_verity", "reed_solomon"]
        );
    }

    #[test]
    fn selection_by_path_glob() {
        let tree = tree();
        let set = tree
            .select(&[Selector::parse("kernel/drivers/net/**").unwrap()])
            .unwrap();
        assert_eq!(names(&set), ["failover", "net_failover", "virtio_net"]);
    }

    #[test]
    fn selection_errors_name_the_entry() {
        let tree = tree();
        let err = tree
            .select(&[
                Selector::parse("ext4").unwrap(),
                Selector::parse("ext5").unwrap(),
            ])
            .unwrap_err();
        assert_eq!(
            err,
            SelectError::Selector {
                index: 1,
                reason: "no module called ext5 in this kernel, and it is not built in".into()
            }
        );
        let err = tree
            .select(&[Selector::parse("kernel/sound/**").unwrap()])
            .unwrap_err();
        assert!(matches!(err, SelectError::Selector { index: 0, .. }));
        assert!(Selector::parse("drivers/net/*").is_err());
        assert!(Selector::parse("virtio net").is_err());

        let broken =
            ModuleTree::new([module("kernel/a.ko", "name=a;depends=b")], BTreeSet::new()).unwrap();
        let err = broken.select(&[Selector::parse("a").unwrap()]).unwrap_err();
        assert!(
            matches!(err, SelectError::Dependency(msg) if msg.contains("a (kernel/a.ko) depends on b"))
        );
    }

    #[test]
    fn dep_file_lists_transitive_dependencies_loadable_from_last_to_first() {
        let tree = tree();
        let set = tree
            .select(&[
                Selector::parse("dm_verity").unwrap(),
                Selector::parse("ext4").unwrap(),
            ])
            .unwrap();
        let dep = tree.render_dep(&set);
        let expected = "\
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-verity.ko: kernel/lib/reed_solomon/reed_solomon.ko kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/crypto/crc32c_generic.ko
kernel/fs/jbd2/jbd2.ko: kernel/crypto/crc32c_generic.ko
kernel/fs/mbcache.ko:
kernel/lib/reed_solomon/reed_solomon.ko:
";
        assert_eq!(dep, expected);
    }

    #[test]
    fn dep_order_is_a_valid_load_order() {
        let tree = tree();
        let set = tree
            .select(&[
                Selector::parse("dm_verity").unwrap(),
                Selector::parse("ext4").unwrap(),
            ])
            .unwrap();
        let path_to_name: BTreeMap<&str, &str> = set
            .iter()
            .map(|n| (tree.modules[n].path.as_str(), n.as_str()))
            .collect();
        for line in tree.render_dep(&set).lines() {
            let (module, deps) = line.split_once(':').unwrap();
            let mut loaded = BTreeSet::new();
            for dep in deps.split_whitespace().rev().chain([module]) {
                let name = path_to_name[dep];
                for needed in &tree.modules[name].info.depends {
                    assert!(
                        tree.is_builtin(needed) || loaded.contains(needed.as_str()),
                        "{name} before {needed} in {line}"
                    );
                }
                loaded.insert(name);
            }
        }
    }

    #[test]
    fn alias_and_softdep_files() {
        let tree = tree();
        let set = tree
            .select(&[
                Selector::parse("ext4").unwrap(),
                Selector::parse("dm_mod").unwrap(),
            ])
            .unwrap();
        assert_eq!(
            tree.render_alias(&set),
            "# Aliases extracted from modules themselves.\n\
             alias crypto-crc32c crc32c_generic\n\
             alias crc32c crc32c_generic\n\
             alias crypto-crc32c crc32c_intel\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel\n\
             alias devname:mapper/control dm_mod\n\
             alias fs-ext4 ext4\n\
             alias fs-ext3 ext4\n"
        );
        assert_eq!(
            tree.render_softdep(&set),
            "# Soft dependencies extracted from modules themselves.\n\
             softdep dm_mod pre: dm_bufio\n\
             softdep ext4 pre: crc32c_generic crc32c_intel\n"
        );
    }

    #[test]
    fn install_copies_modules_and_writes_indexes() {
        let src = tempfile::tempdir().unwrap();
        let tree = ModuleTree::new(
            [
                module("kernel/fs/a.ko", "name=a;depends=b;alias=fs-a"),
                module("kernel/lib/b.ko", "name=b"),
            ],
            BTreeSet::new(),
        )
        .unwrap();
        for (path, name) in [("kernel/fs/a.ko", "a"), ("kernel/lib/b.ko", "b")] {
            fs::create_dir_all(src.path().join(path).parent().unwrap()).unwrap();
            fs::write(src.path().join(path), name).unwrap();
        }
        fs::write(src.path().join("modules.builtin"), "kernel/lib/crc16.ko\n").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let set = tree.select(&[Selector::parse("a").unwrap()]).unwrap();
        assert_eq!(tree.install(&set, src.path(), dest.path()).unwrap(), 2);
        let read = |p: &str| fs::read_to_string(dest.path().join(p)).unwrap();
        assert_eq!(read("kernel/fs/a.ko"), "a");
        assert_eq!(
            read("modules.dep"),
            "kernel/fs/a.ko: kernel/lib/b.ko\nkernel/lib/b.ko:\n"
        );
        assert_eq!(read("modules.builtin"), "kernel/lib/crc16.ko\n");
        assert!(read("modules.alias").ends_with("alias fs-a a\n"));
        assert!(!dest.path().join("modules.builtin.modinfo").exists());
    }

    #[test]
    fn scan_reads_elf_modules() {
        let dir = tempfile::tempdir().unwrap();
        let ko = crate::elf::fixtures::relocatable(&[
            (".text", b"\xc3"),
            (".modinfo", b"alias=fs-x\0depends=\0name=x_fs\0"),
        ]);
        fs::create_dir_all(dir.path().join("kernel/fs/x")).unwrap();
        fs::write(dir.path().join("kernel/fs/x/x-fs.ko"), ko).unwrap();
        let mut ticks = 0;
        let tree = ModuleTree::scan(dir.path(), |_, _| ticks += 1).unwrap();
        assert_eq!(ticks, 1);
        let module = tree.get("x-fs").unwrap();
        assert_eq!(module.path, "kernel/fs/x/x-fs.ko");
        assert_eq!(module.info.aliases, ["fs-x"]);

        fs::write(dir.path().join("kernel/fs/bad.ko"), b"not elf").unwrap();
        let err = ModuleTree::scan(dir.path(), |_, _| {}).unwrap_err();
        assert!(
            err.to_string().contains("bad.ko: not a usable ELF64 file"),
            "{err}"
        );
    }
}
