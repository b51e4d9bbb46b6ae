//! Who may change what a Windows service trusts: the decision whether a
//! path's owner and DACL leave it writable by someone other than SYSTEM
//! and the Administrators (`sightline-infra service` refuses to start on
//! such a config file or data folder, which would let a user redirect the
//! license or make SYSTEM write where they choose). Pure data in, a
//! verdict out, so it is tested on every platform; the Win32 reading is
//! in `windows.rs`.
//!
//! Invariant: it never answers "safe" for what it cannot read: a missing
//! DACL (everyone has every right) is open.

/// One access-control entry, as read from a DACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    /// An allow entry (`ACCESS_ALLOWED_ACE_TYPE`); deny entries only take
    /// rights away, so they never make a path open.
    pub allow: bool,
    /// `INHERIT_ONLY_ACE`: applies to children only, not to this path.
    pub inherit_only: bool,
    /// The access mask.
    pub mask: u32,
    /// The trustee, as a string SID (`S-1-5-18`).
    pub sid: String,
}

/// SIDs trusted with writing: LocalSystem, the Administrators group, and
/// TrustedInstaller (which owns system folders).
const TRUSTED: [&str; 3] = [
    "S-1-5-18",
    "S-1-5-32-544",
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
];

/// Rights that let a trustee change a file's content, add files or
/// folders to a folder, delete, or change the ACL or owner.
pub const WRITE_RIGHTS: u32 = 0x0000_0002 // FILE_WRITE_DATA / FILE_ADD_FILE
    | 0x0000_0004 // FILE_APPEND_DATA / FILE_ADD_SUBDIRECTORY
    | 0x0000_0040 // FILE_DELETE_CHILD
    | 0x0001_0000 // DELETE
    | 0x0004_0000 // WRITE_DAC
    | 0x0008_0000 // WRITE_OWNER
    | 0x1000_0000 // GENERIC_ALL
    | 0x4000_0000; // GENERIC_WRITE

/// Why a path is open to non-admins, or `None` when only SYSTEM, the
/// Administrators and `me` (the account the service runs as: SYSTEM on
/// Windows, the wine user under wine) may write it. `dacl` is `None` for
/// a NULL DACL.
pub fn open_to_non_admins(owner: &str, dacl: Option<&[Ace]>, me: &str) -> Option<String> {
    let trusted = |sid: &str| TRUSTED.contains(&sid) || (!me.is_empty() && sid == me);
    if !trusted(owner) {
        return Some(format!("owned by {owner}"));
    }
    let Some(dacl) = dacl else {
        return Some("no DACL (everyone may write)".to_string());
    };
    dacl.iter()
        .find(|ace| {
            ace.allow && !ace.inherit_only && ace.mask & WRITE_RIGHTS != 0 && !trusted(&ace.sid)
        })
        .map(|ace| format!("{} may write (mask {:#x})", ace.sid, ace.mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ace(sid: &str, mask: u32) -> Ace {
        Ace {
            allow: true,
            inherit_only: false,
            mask,
            sid: sid.to_string(),
        }
    }

    const SYSTEM: &str = "S-1-5-18";
    const ADMINS: &str = "S-1-5-32-544";
    const USERS: &str = "S-1-5-32-545";
    const READ_EXECUTE: u32 = 0x0012_00A9;

    #[test]
    fn the_msi_locked_folder_is_trusted() {
        let dacl = [ace(SYSTEM, 0x1F_01FF), ace(ADMINS, 0x1000_0000)];
        assert_eq!(open_to_non_admins(ADMINS, Some(&dacl), ""), None);
        assert_eq!(open_to_non_admins(SYSTEM, Some(&dacl), ""), None);
    }

    #[test]
    fn users_reading_is_fine_but_writing_is_not() {
        let read = [ace(SYSTEM, 0x1F_01FF), ace(USERS, READ_EXECUTE)];
        assert_eq!(open_to_non_admins(ADMINS, Some(&read), ""), None);
        // ProgramData's own ACL: Users may create files (FILE_WRITE_DATA)
        // and folders (FILE_APPEND_DATA) there.
        for mask in [0x2, 0x4, 0x4000_0000, 0x0004_0000] {
            let write = [ace(SYSTEM, 0x1F_01FF), ace(USERS, READ_EXECUTE | mask)];
            let why = open_to_non_admins(ADMINS, Some(&write), "");
            assert!(
                why.as_deref().is_some_and(|w| w.contains(USERS)),
                "{mask:#x}: {why:?}"
            );
        }
    }

    #[test]
    fn a_file_a_user_owns_or_without_dacl_is_open() {
        let dacl = [ace(SYSTEM, 0x1F_01FF)];
        let user = "S-1-5-21-1-2-3-1001";
        assert!(open_to_non_admins(user, Some(&dacl), "").is_some_and(|w| w.contains(user)));
        assert!(open_to_non_admins(SYSTEM, None, "").is_some());
        // The service's own account (wine's user) is trusted, another not.
        let mine = [ace(SYSTEM, 0x1F_01FF), ace(user, 0x1F_01FF)];
        assert_eq!(open_to_non_admins(user, Some(&mine), user), None);
        assert!(open_to_non_admins(user, Some(&mine), "S-1-5-21-9").is_some());
    }

    #[test]
    fn deny_and_inherit_only_entries_do_not_open_a_path() {
        let mut creator = ace("S-1-3-0", 0x1000_0000);
        creator.inherit_only = true;
        let mut deny = ace(USERS, 0x1000_0000);
        deny.allow = false;
        assert_eq!(
            open_to_non_admins(SYSTEM, Some(&[ace(SYSTEM, 0x1F_01FF), creator, deny]), ""),
            None
        );
    }
}
