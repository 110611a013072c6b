//! Mount planning: which filesystems each stage mounts, which are already there, and in which
//! order to unmount at shutdown. Pure; `sys::mount_all` carries the plans out.

use nix::mount::MsFlags;

/// One filesystem to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
}

const fn m(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: &'static str,
) -> Mount {
    Mount {
        source,
        target,
        fstype,
        flags,
        data,
    }
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The API filesystems every stage needs, in order (each target's parent comes first).
pub fn api_filesystems() -> Vec<Mount> {
    vec![
        m("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""),
        m("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, ""),
        m(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            "mode=0755",
        ),
        m(
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            "mode=0755",
        ),
    ]
}

/// What the root stage adds on top of the API filesystems.
pub fn root_stage_filesystems() -> Vec<Mount> {
    let mut all = api_filesystems();
    all.extend([
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
            "gid=5,mode=0620,ptmxmode=0666",
        ),
        m(
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            "mode=1777",
        ),
        // favordynmods: moving a process into a cgroup (every service start) no longer waits
        // for an RCU grace period, at a small cost to every fork and exit. Under emulation a
        // service start took 40-100 ms with the default and 25-50 ms with it.
        m(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            NOSUID_NODEV_NOEXEC,
            "nsdelegate,favordynmods",
        ),
        m(
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            "mode=1777",
        ),
    ]);
    all
}

/// Mount options a kernel may not know yet (cgroup2's `favordynmods` came with Linux 6.0): a
/// mount refused with EINVAL is tried again without them.
pub const OPTIONAL_OPTIONS: &[&str] = &["favordynmods"];

/// `data` without the [`OPTIONAL_OPTIONS`], if it had any.
pub fn without_optional_options(data: &str) -> Option<String> {
    let kept: Vec<&str> = data
        .split(',')
        .filter(|o| !OPTIONAL_OPTIONS.contains(o))
        .collect();
    (kept.len() != data.split(',').count()).then(|| kept.join(","))
}

/// One line of `/proc/self/mountinfo`, the parts PID 1 needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    pub target: String,
    pub fstype: String,
}

/// Parses `/proc/self/mountinfo`. Lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let parent = fields.next()?.parse().ok()?;
            let _devno = fields.next()?;
            let _root = fields.next()?;
            let target = unescape(fields.next()?);
            // Optional fields end at "-", then fstype.
            let fstype = fields.skip_while(|f| *f != "-").nth(1)?.to_string();
            Some(MountInfo {
                id,
                parent,
                target,
                fstype,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of `plan` whose target is not yet a mount point.
pub fn missing<'a>(plan: &'a [Mount], mounted: &[MountInfo]) -> Vec<&'a Mount> {
    plan.iter()
        .filter(|m| !mounted.iter().any(|i| i.target == m.target))
        .collect()
}

/// Targets to unmount at shutdown, children before parents (reverse mount order), leaving out
/// `/` and the API filesystems PID 1 itself still needs until the very end.
pub fn unmount_order(mounted: &[MountInfo]) -> Vec<String> {
    const KEEP: [&str; 4] = ["/", "/proc", "/sys", "/dev"];
    let mut targets: Vec<&MountInfo> = mounted
        .iter()
        .filter(|m| !KEEP.contains(&m.target.as_str()))
        .collect();
    // Deeper paths first; among equals, later mounts (higher ids) first.
    targets.sort_by(|a, b| {
        let depth = |m: &MountInfo| m.target.matches('/').count();
        depth(b).cmp(&depth(a)).then(b.id.cmp(&a.id))
    });
    targets.into_iter().map(|m| m.target.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 7:0 / / ro,relatime - erofs /dev/loop0 ro,user_xattr
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
25 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1024k,mode=755
26 22 0:23 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
27 25 0:24 / /dev/pts rw - devpts devpts rw,gid=5,mode=620
28 24 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
29 26 0:26 / /run/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn optional_options_can_be_left_out() {
        assert_eq!(
            without_optional_options("nsdelegate,favordynmods").as_deref(),
            Some("nsdelegate")
        );
        assert_eq!(
            without_optional_options("favordynmods").as_deref(),
            Some("")
        );
        assert_eq!(without_optional_options("mode=0755"), None);
        assert_eq!(without_optional_options(""), None);
        let cgroup = root_stage_filesystems()
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
            .unwrap();
        assert_eq!(cgroup.data, "nsdelegate,favordynmods");
    }

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 8);
        assert_eq!(
            m[0],
            MountInfo {
                id: 22,
                parent: 1,
                target: "/".into(),
                fstype: "erofs".into()
            }
        );
        assert_eq!(m[1].fstype, "proc");
        assert_eq!(m[7].target, "/run/with space");
        assert!(parse_mountinfo("garbage\n\n1 2").is_empty());
    }

    #[test]
    fn plans_only_what_is_missing() {
        let mounted = parse_mountinfo(MOUNTINFO);
        let plan = root_stage_filesystems();
        let missing: Vec<&str> = missing(&plan, &mounted).iter().map(|m| m.target).collect();
        assert_eq!(missing, vec!["/dev/shm", "/tmp"]);
        let all: Vec<&str> = missing_all(&plan).iter().map(|m| m.target).collect();
        assert_eq!(all.len(), 8);
    }

    fn missing_all(plan: &[Mount]) -> Vec<&Mount> {
        missing(plan, &[])
    }

    #[test]
    fn parents_are_mounted_before_children() {
        let plan = root_stage_filesystems();
        for (i, mount) in plan.iter().enumerate() {
            for (j, other) in plan.iter().enumerate() {
                let is_ancestor =
                    std::path::Path::new(mount.target).starts_with(other.target) && i != j;
                assert!(
                    !is_ancestor || j < i,
                    "{} is mounted before {}",
                    mount.target,
                    other.target
                );
            }
        }
    }

    #[test]
    fn unmounts_children_first_and_keeps_api_filesystems() {
        let order = unmount_order(&parse_mountinfo(MOUNTINFO));
        assert_eq!(
            order,
            vec!["/sys/fs/cgroup", "/run/with space", "/dev/pts", "/run"]
        );
    }
}
