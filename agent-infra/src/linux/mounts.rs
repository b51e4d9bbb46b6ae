//! Mounted filesystems from `mountinfo`, which of them to report, and their
//! use computed as `df` computes it.

use super::parse::ParseError;

const FILE: &str = "mountinfo";

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the device.
    pub device_number: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// `ext4`, `xfs`, `nfs4`, `fuse.sshfs`, ...
    pub fs_type: String,
    /// What is mounted (`/dev/vda1`, `server:/export`).
    pub source: String,
}

/// Parses a `mountinfo` file (`proc(5)`), undoing its octal escapes.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| ParseError::new(FILE, index + 1, what.to_string());
        let (before, after) = line
            .split_once(" - ")
            .ok_or_else(|| bad("no ' - ' separator"))?;
        let before: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        if before.len() < 6 || after.len() < 2 {
            return Err(bad("too few fields"));
        }
        mounts.push(Mount {
            device_number: before[2].to_string(),
            mount_point: unescape(before[4]),
            fs_type: after[0].to_string(),
            source: unescape(after[1]),
        });
    }
    Ok(mounts)
}

/// `\040` is a space, `\011` a tab, `\012` a newline, `\134` a backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            let value = digits
                .iter()
                .fold(0u16, |acc, d| acc * 8 + u16::from(d.wrapping_sub(b'0')));
            if digits.iter().all(|d| (b'0'..=b'7').contains(d))
                && let Ok(v) = u8::try_from(value)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Network and userspace filesystems: the ones whose `statfs` can hang.
pub fn is_remote(fs_type: &str) -> bool {
    fs_type.starts_with("fuse")
        || matches!(
            fs_type,
            "nfs"
                | "nfs4"
                | "cifs"
                | "smb3"
                | "smbfs"
                | "ceph"
                | "glusterfs"
                | "9p"
                | "afs"
                | "lustre"
                | "gpfs"
                | "davfs"
                | "sshfs"
                | "virtiofs"
        )
}

/// The mounts to report: not excluded by type or mount point, one per
/// device (bind mounts of one filesystem are reported once, at the shortest
/// mount point, as `df` does).
pub fn select<'a>(
    mounts: &'a [Mount],
    exclude_types: &[String],
    exclude_mounts: &[String],
) -> Vec<&'a Mount> {
    let mut chosen: Vec<&Mount> = Vec::new();
    for m in mounts {
        if exclude_types.iter().any(|t| t == &m.fs_type)
            || exclude_mounts
                .iter()
                .any(|p| crate::glob::matches(p, &m.mount_point))
        {
            continue;
        }
        match chosen
            .iter_mut()
            .find(|c| c.device_number == m.device_number && !is_remote(&m.fs_type))
        {
            Some(existing) if m.mount_point.len() < existing.mount_point.len() => *existing = m,
            Some(_) => {}
            None => chosen.push(m),
        }
    }
    chosen
}

/// Space and inodes of one filesystem, as `statvfs` gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStat {
    /// Fragment size, the unit of the block counts.
    pub fragment_size: u64,
    /// Blocks in all.
    pub blocks: u64,
    /// Free blocks (including those reserved for root).
    pub blocks_free: u64,
    /// Blocks available to unprivileged users.
    pub blocks_avail: u64,
    /// Inodes in all.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Inodes available to unprivileged users.
    pub files_avail: u64,
}

/// Use of one filesystem, as `df` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FsUsage {
    /// Size in bytes.
    pub total: u64,
    /// Used bytes (size minus free, reserved blocks counted as free).
    pub used: u64,
    /// Bytes available to unprivileged users.
    pub avail: u64,
    /// `used / (used + avail)`: what `df` prints as Use% (before rounding
    /// up), so reserved blocks do not make a full disk look less full.
    pub used_pct: f64,
    /// Inodes in use.
    pub inodes_used: u64,
    /// Inodes in all.
    pub inodes_total: u64,
    /// `inodes used / (used + available)`, as `df -i`.
    pub inodes_used_pct: f64,
}

impl FsStat {
    /// The use, computed as `df` computes it.
    pub fn usage(&self) -> FsUsage {
        let unit = self.fragment_size;
        let used_blocks = self.blocks.saturating_sub(self.blocks_free);
        let pct = |used: u64, avail: u64| {
            if used + avail == 0 {
                0.0
            } else {
                used as f64 * 100.0 / (used + avail) as f64
            }
        };
        let inodes_used = self.files.saturating_sub(self.files_free);
        FsUsage {
            total: self.blocks * unit,
            used: used_blocks * unit,
            avail: self.blocks_avail * unit,
            used_pct: pct(used_blocks, self.blocks_avail),
            inodes_used,
            inodes_total: self.files,
            inodes_used_pct: pct(inodes_used, self.files_avail),
        }
    }
}

/// `statvfs(path)`.
pub fn statvfs(path: &std::path::Path) -> std::io::Result<FsStat> {
    let s = rustix::fs::statvfs(path)?;
    Ok(FsStat {
        fragment_size: s.f_frsize,
        blocks: s.f_blocks,
        blocks_free: s.f_bfree,
        blocks_avail: s.f_bavail,
        files: s.f_files,
        files_free: s.f_ffree,
        files_avail: s.f_favail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(csv: &str) -> Vec<String> {
        csv.split(',').map(String::from).collect()
    }

    fn defaults() -> (Vec<String>, Vec<String>) {
        (
            // The defaults the agent ships with.
            list(crate::settings::FS_EXCLUDE_TYPES),
            list(crate::settings::FS_EXCLUDE_MOUNTS),
        )
    }

    #[test]
    fn a_real_mount_table_reduces_to_the_real_filesystems() {
        let mounts = parse_mountinfo(include_str!("../../tests/fixtures/vm-2cpu/mountinfo"))
            .expect("parses");
        assert!(mounts.len() > 10);
        let (types, points) = defaults();
        let chosen: Vec<&str> = select(&mounts, &types, &points)
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(chosen, ["/"]);
        let root = mounts.iter().find(|m| m.mount_point == "/").expect("root");
        assert_eq!(
            (root.fs_type.as_str(), root.source.as_str()),
            ("ext4", "/dev/vda")
        );
    }

    #[test]
    fn escapes_are_undone_and_bind_mounts_counted_once() {
        let text = "\
30 1 8:1 / / rw - ext4 /dev/sda1 rw
31 30 8:2 / /srv/my\\040data rw - xfs /dev/sda2 rw
32 30 8:2 /sub /mnt/bind rw - xfs /dev/sda2 rw
33 30 0:50 / /mnt/nfs rw - nfs4 server:/export rw
34 30 0:51 / /run/user/0 rw - tmpfs tmpfs rw
";
        let mounts = parse_mountinfo(text).expect("parses");
        assert_eq!(mounts[1].mount_point, "/srv/my data");
        let (types, points) = defaults();
        let chosen: Vec<&str> = select(&mounts, &types, &points)
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(
            chosen,
            ["/", "/mnt/bind", "/mnt/nfs"],
            "the shorter of the two xfs mount points"
        );
        assert!(is_remote("nfs4") && is_remote("fuse.sshfs") && !is_remote("ext4"));
        assert!(parse_mountinfo("garbage line\n").is_err());
    }

    #[test]
    fn use_is_computed_as_df_computes_it() {
        // 1000 blocks of 4 KiB, 300 free of which 50 are reserved for root.
        let s = FsStat {
            fragment_size: 4096,
            blocks: 1000,
            blocks_free: 300,
            blocks_avail: 250,
            files: 100,
            files_free: 40,
            files_avail: 40,
        };
        let u = s.usage();
        assert_eq!(u.total, 4_096_000);
        assert_eq!(u.used, 700 * 4096);
        assert_eq!(u.avail, 250 * 4096);
        assert!((u.used_pct - 700.0 * 100.0 / 950.0).abs() < 1e-9);
        assert_eq!(u.inodes_used, 60);
        assert!((u.inodes_used_pct - 60.0).abs() < 1e-9);
        assert_eq!(FsStat::default().usage().used_pct, 0.0);
    }
}
