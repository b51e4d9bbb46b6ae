//! Windows: the few system facts agent-core needs that Rust's standard
//! library does not give (the computer's name, the OS version, the uptime,
//! the boot counter) and the installer's registry values, read through
//! the Win32 API; and the paths agents use there.
//!
//! Invariants: the only `unsafe` of agent-core lives here, each block with
//! the reason it is sound; nothing here writes to the system; every
//! function answers something (empty, 0, `None`) rather than failing.

#![allow(unsafe_code)]

use std::path::PathBuf;

use windows_sys::Win32::Foundation::ERROR_SUCCESS;
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY, REG_DWORD, REG_SZ, RRF_RT_REG_DWORD,
    RegCloseKey, RegEnumValueW, RegGetValueW, RegOpenKeyExW,
};
use windows_sys::Win32::System::SystemInformation::{
    ComputerNameDnsHostname, GetComputerNameExW, GetTickCount64, OSVERSIONINFOW,
};

/// The registry key (under `HKEY_LOCAL_MACHINE`) where the MSI writes the
/// values given as its properties for `product`: `SOFTWARE\Sightline\Infra`.
pub fn installer_key(product: &str) -> String {
    let mut name = product.to_string();
    if let Some(first) = name.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    format!(r"SOFTWARE\Sightline\{name}")
}

/// `C:\ProgramData\Sightline`: where an agent's config file and data
/// folder are on Windows (the known folder for machine-wide program data,
/// asked of the shell: a service's environment need not name it).
pub fn program_data() -> PathBuf {
    known_program_data()
        .or_else(|| std::env::var_os("ProgramData").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("Sightline")
}

fn known_program_data() -> Option<PathBuf> {
    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{FOLDERID_ProgramData, SHGetKnownFolderPath};
    let mut path: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: the folder id is a valid GUID; `path` receives a string the
    // shell allocated, freed below with CoTaskMemFree whatever the result.
    let status =
        unsafe { SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, std::ptr::null_mut(), &mut path) };
    if path.is_null() {
        return None;
    }
    let text = (status == 0).then(|| {
        let mut len = 0;
        // SAFETY: on success `path` is a NUL-terminated UTF-16 string; the
        // loop stops at its NUL and reads nothing beyond it.
        while unsafe { *path.add(len) } != 0 {
            len += 1;
        }
        // SAFETY: the `len` units before the NUL were just read.
        String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(path, len) })
    });
    // SAFETY: `path` came from SHGetKnownFolderPath and is freed once.
    unsafe { CoTaskMemFree(path.cast()) };
    text.map(PathBuf::from)
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The computer's DNS host name (what `hostname` prints).
pub fn hostname() -> String {
    let mut buf = [0u16; 256];
    let mut len = buf.len() as u32;
    // SAFETY: `buf` is writable for `len` UTF-16 units, and the call
    // writes at most that many (it fails instead, setting `len`).
    let ok = unsafe { GetComputerNameExW(ComputerNameDnsHostname, buf.as_mut_ptr(), &mut len) };
    if ok == 0 {
        return std::env::var("COMPUTERNAME").unwrap_or_default();
    }
    String::from_utf16_lossy(&buf[..(len as usize).min(buf.len())])
}

/// `windows 10.0.19045`: the version the kernel reports (not the one a
/// program without a manifest is told).
pub fn os() -> String {
    let mut info = OSVERSIONINFOW {
        dwOSVersionInfoSize: std::mem::size_of::<OSVERSIONINFOW>() as u32,
        ..Default::default()
    };
    // SAFETY: `info` is a properly sized, initialised OSVERSIONINFOW whose
    // size field is set, as RtlGetVersion requires.
    let status = unsafe { windows_sys::Wdk::System::SystemServices::RtlGetVersion(&mut info) };
    if status != 0 {
        return "windows".to_string();
    }
    format!(
        "windows {}.{}.{}",
        info.dwMajorVersion, info.dwMinorVersion, info.dwBuildNumber
    )
}

/// Milliseconds since the host booted.
pub fn uptime_ms() -> u64 {
    // SAFETY: no arguments, no preconditions.
    unsafe { GetTickCount64() }
}

/// The kernel's count of boots (`BootId` of the prefetcher's parameters,
/// Windows 8 and later), which changes with every boot and never with
/// the clock; `None` where the system does not keep it.
pub fn boot_count() -> Option<u32> {
    let key = wide(
        r"SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management\PrefetchParameters",
    );
    let name = wide("BootId");
    let mut value = 0u32;
    let mut size = std::mem::size_of::<u32>() as u32;
    // SAFETY: both names are NUL-terminated UTF-16; `value` is writable
    // for `size` bytes, and RRF_RT_REG_DWORD makes the call refuse any
    // value that is not 4 bytes.
    let status = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            name.as_ptr(),
            RRF_RT_REG_DWORD,
            std::ptr::null_mut(),
            (&raw mut value).cast(),
            &mut size,
        )
    };
    (status == ERROR_SUCCESS).then_some(value)
}

/// Every string (and number) value of `HKLM\<key>`, name and text: the
/// installer's layer of the config. Empty when the key does not exist.
pub fn registry_values(key: &str) -> Vec<(String, String)> {
    let key_name = wide(key);
    let mut hkey: HKEY = std::ptr::null_mut();
    // SAFETY: `key_name` is NUL-terminated UTF-16; `hkey` receives the
    // handle, closed below.
    let status = unsafe {
        RegOpenKeyExW(
            HKEY_LOCAL_MACHINE,
            key_name.as_ptr(),
            0,
            KEY_READ | KEY_WOW64_64KEY,
            &mut hkey,
        )
    };
    if status != ERROR_SUCCESS {
        return Vec::new();
    }
    let mut out = Vec::new();
    for index in 0..1024u32 {
        let mut name = [0u16; 256];
        let mut name_len = name.len() as u32;
        let mut data = vec![0u8; 4096];
        let mut data_len = data.len() as u32;
        let mut kind = 0u32;
        // SAFETY: `hkey` is open; `name` is writable for `name_len` UTF-16
        // units and `data` for `data_len` bytes; the call writes no more
        // (it answers ERROR_MORE_DATA instead).
        let status = unsafe {
            RegEnumValueW(
                hkey,
                index,
                name.as_mut_ptr(),
                &mut name_len,
                std::ptr::null(),
                &mut kind,
                data.as_mut_ptr(),
                &mut data_len,
            )
        };
        if status != ERROR_SUCCESS {
            // ERROR_NO_MORE_ITEMS, or a value too large for a config key.
            if status == windows_sys::Win32::Foundation::ERROR_MORE_DATA {
                continue;
            }
            break;
        }
        let name = String::from_utf16_lossy(&name[..(name_len as usize).min(name.len())]);
        data.truncate(data_len as usize);
        let text = match kind {
            REG_SZ => {
                let units: Vec<u16> = data
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                String::from_utf16_lossy(&units)
            }
            REG_DWORD if data.len() == 4 => {
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]).to_string()
            }
            _ => continue,
        };
        out.push((name, text));
    }
    // SAFETY: `hkey` was opened above and is closed once.
    unsafe { RegCloseKey(hkey) };
    out
}

/// The owner (a string SID) and the DACL of the file or folder at `path`
/// (`None` inside: a NULL DACL); `None` when they cannot be read (the
/// path does not exist, say).
pub fn file_security(path: &std::path::Path) -> Option<(String, Option<Vec<crate::acl::Ace>>)> {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{GetNamedSecurityInfoW, SE_FILE_OBJECT};
    use windows_sys::Win32::Security::{
        ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSID,
    };
    let name = wide(&path.to_string_lossy());
    let mut owner: PSID = std::ptr::null_mut();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut descriptor = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated UTF-16; owner and DACL point into
    // the descriptor the call allocates, freed below with LocalFree after
    // the last use of either.
    let status = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    if status != ERROR_SUCCESS {
        return None;
    }
    let owner_sid = sid_string(owner);
    let aces = (!dacl.is_null()).then(|| {
        use windows_sys::Win32::Security::{ACL_SIZE_INFORMATION, AclSizeInformation, GetAce};
        let mut size = ACL_SIZE_INFORMATION::default();
        // SAFETY: `dacl` is a valid ACL in the descriptor; `size` is
        // writable for the size passed.
        let ok = unsafe {
            windows_sys::Win32::Security::GetAclInformation(
                dacl,
                (&raw mut size).cast(),
                std::mem::size_of::<ACL_SIZE_INFORMATION>() as u32,
                AclSizeInformation,
            )
        };
        let count = if ok == 0 { 0 } else { size.AceCount };
        let mut aces = Vec::new();
        for index in 0..count {
            let mut ace: *mut core::ffi::c_void = std::ptr::null_mut();
            // SAFETY: `index` < the ACL's count; `ace` receives a pointer
            // into the ACL.
            if unsafe { GetAce(dacl, index, &mut ace) } == 0 || ace.is_null() {
                continue;
            }
            // SAFETY: every ACE starts with an ACE_HEADER.
            let header = unsafe { *ace.cast::<ACE_HEADER>() };
            // Allowed (0) and denied (1) entries share one layout: header,
            // mask, then the SID.
            if header.AceType > 1 {
                // Object or callback entries: count an allow kind as open.
                aces.push(crate::acl::Ace {
                    allow: matches!(header.AceType, 5 | 9 | 11),
                    inherit_only: header.AceFlags & 0x8 != 0,
                    mask: u32::MAX,
                    sid: "unknown".to_string(),
                });
                continue;
            }
            let entry = ace.cast::<windows_sys::Win32::Security::ACCESS_ALLOWED_ACE>();
            // SAFETY: an allowed or denied ACE is an ACCESS_ALLOWED_ACE
            // in layout; its SID starts at `SidStart`, inside the ACE.
            let (mask, sid) = unsafe {
                (
                    (*entry).Mask,
                    sid_string((&raw mut (*entry).SidStart).cast()),
                )
            };
            aces.push(crate::acl::Ace {
                allow: header.AceType == 0,
                inherit_only: header.AceFlags & 0x8 != 0,
                mask,
                sid,
            });
        }
        aces
    });
    // SAFETY: `descriptor` came from GetNamedSecurityInfoW and is freed
    // once, after the last use of `owner` and `dacl`.
    unsafe { LocalFree(descriptor) };
    Some((owner_sid, aces))
}

/// `S-1-5-18` for a SID; empty when it cannot be converted.
fn sid_string(sid: windows_sys::Win32::Security::PSID) -> String {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
    if sid.is_null() {
        return String::new();
    }
    let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID; `text` receives a string the call
    // allocates, freed below with LocalFree.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: `text` is NUL-terminated UTF-16; the loop stops at its NUL.
    while unsafe { *text.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` units before the NUL were just read.
    let out = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) });
    // SAFETY: `text` came from ConvertSidToStringSidW and is freed once.
    unsafe { LocalFree(text.cast()) };
    out
}

/// The string SID of the account this process runs as (`S-1-5-18` for a
/// service running as LocalSystem); empty when it cannot be read.
pub fn process_user() -> String {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser};
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo handle of the current process needs no closing;
    // `token` receives a handle closed below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return String::new();
    }
    // TOKEN_USER and the SID it points to, aligned for TOKEN_USER.
    let mut buf = [0u64; 64];
    let mut len = 0u32;
    // SAFETY: `token` is open with TOKEN_QUERY; `buf` is writable for the
    // size passed, and the call writes no more.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            std::mem::size_of_val(&buf) as u32,
            &mut len,
        )
    };
    // SAFETY: on success `buf` starts with a TOKEN_USER whose SID points
    // into `buf`, alive for the conversion.
    let out = if ok == 0 {
        String::new()
    } else {
        sid_string(unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid })
    };
    // SAFETY: `token` was opened above and is closed once.
    unsafe { CloseHandle(token) };
    out
}
