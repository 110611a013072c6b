//! User and group names from the image's own `/etc/passwd` and `/etc/group`.
//!
//! Shoal has no NSS: the read-only root image carries the only account database there is, so
//! reading the two files is all a lookup needs. The root directory is a parameter so tests (and
//! tools inspecting an unpacked image) can point it at a fixture tree.
//!
//! Lookups follow glibc where it matters: comment and blank lines are ignored, the first entry
//! of a name wins, and a malformed line is skipped (with a warning) rather than making every
//! account unusable. `root` (uid 0, gid 0) is always known, also with no files at all.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::config::Account;

/// The numeric identity a service runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in the order the definition lists them, without duplicates.
    pub groups: Vec<u32>,
}

/// One `/etc/passwd` entry, as far as the supervisor needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PasswdEntry {
    uid: u32,
    gid: u32,
}

/// The image's account database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, PasswdEntry>,
    /// Primary gid of the first entry with each uid, for `user = <number>`.
    primary_gid_by_uid: BTreeMap<u32, u32>,
    groups: BTreeMap<String, u32>,
}

impl Users {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`; a missing file counts as empty.
    pub fn load(root: &Path) -> io::Result<Users> {
        let read = |name: &str| match std::fs::read_to_string(root.join("etc").join(name)) {
            Ok(text) => Ok(text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(error) => Err(io::Error::new(
                error.kind(),
                format!(
                    "cannot read {}: {error}",
                    root.join("etc").join(name).display()
                ),
            )),
        };
        Ok(Users::parse(&read("passwd")?, &read("group")?))
    }

    /// Parses the contents of `/etc/passwd` and `/etc/group`.
    pub fn parse(passwd: &str, group: &str) -> Users {
        let mut users = Users::default();
        for (number, line) in content_lines(passwd) {
            // name:password:uid:gid:gecos:home:shell
            let fields: Vec<&str> = line.split(':').collect();
            let parsed = match fields.as_slice() {
                [name, _, uid, gid, _, _, _] if valid_name(name) => parse_id(uid)
                    .zip(parse_id(gid))
                    .map(|(uid, gid)| (name, uid, gid)),
                _ => None,
            };
            let Some((name, uid, gid)) = parsed else {
                tracing::warn!(line = number, "skipping malformed /etc/passwd line");
                continue;
            };
            users
                .users
                .entry((*name).to_owned())
                .or_insert(PasswdEntry { uid, gid });
            users.primary_gid_by_uid.entry(uid).or_insert(gid);
        }
        for (number, line) in content_lines(group) {
            // name:password:gid:members
            let fields: Vec<&str> = line.split(':').collect();
            let parsed = match fields.as_slice() {
                [name, _, gid, _] if valid_name(name) => parse_id(gid).map(|gid| (name, gid)),
                _ => None,
            };
            let Some((name, gid)) = parsed else {
                tracing::warn!(line = number, "skipping malformed /etc/group line");
                continue;
            };
            users.groups.entry((*name).to_owned()).or_insert(gid);
        }
        users
            .users
            .entry("root".to_owned())
            .or_insert(PasswdEntry { uid: 0, gid: 0 });
        users.primary_gid_by_uid.entry(0).or_insert(0);
        users.groups.entry("root".to_owned()).or_insert(0);
        users
    }

    /// The uid and primary gid of a user name.
    pub fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users.get(name).map(|entry| (entry.uid, entry.gid))
    }

    /// The gid of a group name.
    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }

    /// Turns a definition's `user`, `group` and `supplementary_groups` into numbers.
    ///
    /// A number needs no entry (a service may run as an id the image never names). A name must
    /// have one. Without `group`, the gid is the user's primary group, or for a number with no
    /// passwd entry the same number as the uid. Supplementary groups are exactly the listed ones:
    /// membership lists in `/etc/group` are not consulted, so a definition shows everything a
    /// service gets.
    pub fn resolve(
        &self,
        user: &Account,
        group: Option<&Account>,
        supplementary: &[Account],
    ) -> Result<Ids, String> {
        let (uid, primary_gid) = match user {
            Account::Name(name) => self
                .user(name)
                .ok_or_else(|| format!("unknown user {name:?} (not in /etc/passwd)"))?,
            Account::Id(uid) => (
                *uid,
                self.primary_gid_by_uid.get(uid).copied().unwrap_or(*uid),
            ),
        };
        let gid = match group {
            Some(group) => self.gid(group)?,
            None => primary_gid,
        };
        let mut groups = Vec::with_capacity(supplementary.len());
        for group in supplementary {
            let gid = self.gid(group)?;
            if !groups.contains(&gid) {
                groups.push(gid);
            }
        }
        Ok(Ids { uid, gid, groups })
    }

    fn gid(&self, group: &Account) -> Result<u32, String> {
        match group {
            Account::Name(name) => self
                .group(name)
                .ok_or_else(|| format!("unknown group {name:?} (not in /etc/group)")),
            Account::Id(gid) => Ok(*gid),
        }
    }
}

/// Non-blank, non-comment lines with their 1-based line numbers.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace)
}

/// A decimal id; `u32::MAX` is `(uid_t) -1`, which means "unchanged" to the kernel.
fn parse_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|id| *id != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# the image's accounts
root:x:0:0:root:/root:/bin/sh
netd:x:101:101:network daemon:/nonexistent:/usr/sbin/nologin

clusterd:x:102:65534::/var/lib/clusterd:/usr/sbin/nologin
netd:x:999:999:shadowed duplicate:/:/bin/false
broken line without colons
short:x:5:5
badid:x:abc:5::/:/bin/sh
minus:x:-1:5::/:/bin/sh
unset:x:4294967295:5::/:/bin/sh
";

    const GROUP: &str = "\
root:x:0:
adm:x:4:netd,clusterd
netd:x:101:
nogroup:x:65534:
adm:x:44:
bad:x:nope:
toofew:x
";

    fn name(text: &str) -> Account {
        Account::Name(text.to_owned())
    }

    fn users() -> Users {
        Users::parse(PASSWD, GROUP)
    }

    #[test]
    fn parses_entries_first_one_wins_and_skips_malformed_lines() {
        let users = users();
        assert_eq!(users.user("root"), Some((0, 0)));
        assert_eq!(users.user("netd"), Some((101, 101)));
        assert_eq!(users.user("clusterd"), Some((102, 65534)));
        assert_eq!(users.group("adm"), Some(4));
        assert_eq!(users.group("nogroup"), Some(65534));
        for skipped in [
            "short",
            "badid",
            "minus",
            "unset",
            "broken line without colons",
        ] {
            assert_eq!(users.user(skipped), None, "{skipped}");
        }
        assert_eq!(users.group("bad"), None);
        assert_eq!(users.group("toofew"), None);
    }

    #[test]
    fn resolves_names_to_the_users_primary_group() {
        assert_eq!(
            users().resolve(&name("netd"), None, &[]),
            Ok(Ids {
                uid: 101,
                gid: 101,
                groups: vec![]
            })
        );
        assert_eq!(
            users().resolve(&name("clusterd"), None, &[]),
            Ok(Ids {
                uid: 102,
                gid: 65534,
                groups: vec![]
            })
        );
    }

    #[test]
    fn explicit_group_and_supplementary_groups_deduplicated_in_order() {
        assert_eq!(
            users().resolve(
                &name("netd"),
                Some(&name("nogroup")),
                &[name("adm"), Account::Id(7), name("netd"), Account::Id(4)]
            ),
            Ok(Ids {
                uid: 101,
                gid: 65534,
                groups: vec![4, 7, 101]
            })
        );
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        // A bare number with no entry: the gid defaults to the same number.
        assert_eq!(
            users().resolve(&Account::Id(4000), None, &[Account::Id(4001)]),
            Ok(Ids {
                uid: 4000,
                gid: 4000,
                groups: vec![4001]
            })
        );
        // A number that has an entry: its primary group.
        assert_eq!(
            users().resolve(&Account::Id(102), None, &[]),
            Ok(Ids {
                uid: 102,
                gid: 65534,
                groups: vec![]
            })
        );
        assert_eq!(
            users().resolve(&Account::Id(102), Some(&Account::Id(9)), &[]),
            Ok(Ids {
                uid: 102,
                gid: 9,
                groups: vec![]
            })
        );
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        assert_eq!(
            users().resolve(&name("nobody"), None, &[]),
            Err(r#"unknown user "nobody" (not in /etc/passwd)"#.to_owned())
        );
        assert_eq!(
            users().resolve(&name("netd"), Some(&name("wheel")), &[]),
            Err(r#"unknown group "wheel" (not in /etc/group)"#.to_owned())
        );
        assert_eq!(
            users().resolve(&name("netd"), None, &[name("adm"), name("video")]),
            Err(r#"unknown group "video" (not in /etc/group)"#.to_owned())
        );
    }

    #[test]
    fn root_is_always_known() {
        let users = Users::parse("", "");
        assert_eq!(
            users.resolve(&name("root"), Some(&name("root")), &[]),
            Ok(Ids {
                uid: 0,
                gid: 0,
                groups: vec![]
            })
        );
        assert_eq!(
            users.resolve(&Account::Id(0), None, &[]).map(|ids| ids.gid),
            Ok(0)
        );
    }

    #[test]
    fn load_reads_the_root_directory_and_tolerates_missing_files() {
        let root = tempfile::tempdir().unwrap();
        let empty = Users::load(root.path()).unwrap();
        assert_eq!(empty, Users::parse("", ""));
        assert_eq!(
            empty.resolve(&name("netd"), None, &[]),
            Err(r#"unknown user "netd" (not in /etc/passwd)"#.to_owned())
        );

        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), PASSWD).unwrap();
        let only_passwd = Users::load(root.path()).unwrap();
        assert_eq!(only_passwd.user("netd"), Some((101, 101)));
        assert_eq!(only_passwd.group("adm"), None);

        std::fs::write(root.path().join("etc/group"), GROUP).unwrap();
        assert_eq!(Users::load(root.path()).unwrap(), users());
    }

    #[test]
    fn load_reports_unreadable_files() {
        let root = tempfile::tempdir().unwrap();
        // A directory where a file should be: reading it fails with something other than
        // NotFound.
        std::fs::create_dir_all(root.path().join("etc/passwd")).unwrap();
        let error = Users::load(root.path()).unwrap_err();
        assert!(error.to_string().contains("etc/passwd"), "{error}");
    }
}
