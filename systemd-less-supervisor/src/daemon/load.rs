//! Loading the definitions at startup: every usable service, and every problem with the rest.
//!
//! [`config::load_dir`] is all or nothing (it reports every problem of a directory at once,
//! which is what an operator fixing files wants). A node must not stay dark because one file
//! is broken, so when it fails the files are parsed again one by one and every definition that
//! has no problem of its own is kept. The problems are still reported, each as
//! `FILE[:LINE:COLUMN]: [field FIELD: ]REASON`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{self, ConfigError, Service, ServiceName};
use crate::users::Users;

/// What startup found in the services directory.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The definitions without problems, sorted by name.
    pub services: Vec<Service>,
    /// Definitions that exist but cannot be used: services depending on them wait.
    pub invalid: BTreeSet<ServiceName>,
    /// Every problem, as printed.
    pub errors: Vec<String>,
}

/// Reads every `*.toml` in `dir` and checks accounts against `users`.
pub(crate) fn load(dir: &Path, users: &Users) -> Loaded {
    let (services, errors) = match config::load_dir(dir) {
        Ok(services) => (services, Vec::new()),
        Err(errors) => (parse_each(dir), errors),
    };
    let mut loaded = Loaded::default();
    let mut services = services;
    let mut problems: Vec<ConfigError> = errors;
    if let Err(account_errors) = config::validate_accounts(&services, users) {
        // validate_accounts names the file without its directory.
        problems.extend(account_errors.into_iter().map(|mut error| {
            error.source = dir.join(&error.source);
            error
        }));
    }
    let broken: BTreeSet<String> = problems.iter().filter_map(|e| stem_of(&e.source)).collect();
    services.retain(|service| !broken.contains(service.name.as_str()));
    services.sort_by(|a, b| a.name.cmp(&b.name));
    loaded.invalid = broken.iter().filter_map(|stem| stem.parse().ok()).collect();
    loaded.errors = problems.iter().map(ToString::to_string).collect();
    loaded.services = services;
    loaded
}

/// Every definition in `dir` that parses on its own (the graph is checked by `load_dir`).
fn parse_each(dir: &Path) -> Vec<Service> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| {
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(path).ok()?;
            config::parse_service_all(&stem, path, &text).ok()
        })
        .collect()
}

/// The service a problem is about: the stem of a `*.toml` file (not the directory itself).
fn stem_of(source: &Path) -> Option<String> {
    if source.extension().is_none_or(|e| e != "toml") {
        return None;
    }
    Some(source.file_stem()?.to_string_lossy().into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn keeps_valid_services_and_reports_the_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "good.toml", "command = [\"/bin/true\"]\n");
        write(
            dir.path(),
            "bad.toml",
            "command = [\"/bin/true\"]\nbogus = 1\n",
        );
        write(
            dir.path(),
            "needs-bad.toml",
            "command = [\"/bin/true\"]\nrequires = [\"bad\"]\n",
        );
        write(
            dir.path(),
            "missing-dep.toml",
            "command = [\"/bin/true\"]\nafter = [\"ghost\"]\n",
        );
        write(
            dir.path(),
            "nobody.toml",
            "command = [\"/bin/true\"]\nuser = \"nobody-here\"\n",
        );
        write(dir.path(), "notes.txt", "not a definition");
        let loaded = load(dir.path(), &Users::parse("", ""));
        let names: Vec<&str> = loaded.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good", "needs-bad"]);
        let invalid: Vec<&str> = loaded.invalid.iter().map(ServiceName::as_str).collect();
        assert_eq!(invalid, ["bad", "missing-dep", "nobody"]);
        assert_eq!(loaded.errors.len(), 3, "{:#?}", loaded.errors);
        let bad = format!(
            "{}:2:1: field bogus: ",
            dir.path().join("bad.toml").display()
        );
        assert!(
            loaded.errors.iter().any(|e| e.starts_with(&bad)),
            "{:#?}",
            loaded.errors
        );
        let nobody = format!("{}: field user: ", dir.path().join("nobody.toml").display());
        assert!(
            loaded.errors.iter().any(|e| e.starts_with(&nobody)),
            "{:#?}",
            loaded.errors
        );
    }

    #[test]
    fn a_missing_directory_is_one_error_and_no_service() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&dir.path().join("nope"), &Users::parse("", ""));
        assert!(loaded.services.is_empty());
        assert!(loaded.invalid.is_empty());
        assert_eq!(loaded.errors.len(), 1);
        assert!(loaded.errors[0].contains("cannot read the service directory"));
    }

    #[test]
    fn a_clean_directory_has_no_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.toml", "command = [\"/bin/true\"]\n");
        write(
            dir.path(),
            "a.toml",
            "command = [\"/bin/true\"]\nafter = [\"b\"]\n",
        );
        let loaded = load(dir.path(), &Users::parse("", ""));
        assert!(loaded.errors.is_empty());
        assert_eq!(loaded.services.len(), 2);
        assert_eq!(loaded.services[0].name.as_str(), "a");
    }
}
