//! The Win32 and native calls the Windows sensors make, each wrapped in a
//! safe function answering plain Rust values. Counters are raw (bytes,
//! 100 ns units, counts): rates are the sensors' business.
//!
//! Invariant: the server agent's only `unsafe` code is in this file, each
//! block with the reason it is sound; every handle opened here is closed
//! here (by [`Handle`]'s drop).

#![allow(unsafe_code)]

use std::io;

use windows_sys::Wdk::System::SystemInformation::{
    NtQuerySystemInformation, SYSTEM_INFORMATION_CLASS, SystemProcessorPerformanceInformation,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_SUCCESS, FILETIME, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::NetworkManagement::IpHelper::{FreeMibTable, GetIfTable2, MIB_IF_TABLE2};
use windows_sys::Win32::Security::{GetTokenInformation, LookupAccountSidW, TOKEN_USER, TokenUser};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, GetDiskFreeSpaceExW, GetDriveTypeW,
    GetLogicalDrives, GetVolumeInformationW, OPEN_EXISTING,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl::{DISK_PERFORMANCE, IOCTL_DISK_PERFORMANCE};
use windows_sys::Win32::System::ProcessStatus::{
    K32GetPerformanceInfo, K32GetProcessMemoryInfo, PERFORMANCE_INFORMATION,
    PROCESS_MEMORY_COUNTERS,
};
use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
    QueryFullProcessImageNameW,
};
use windows_sys::Win32::System::WindowsProgramming::DRIVE_FIXED;

use crate::interface::IfCounters;

/// `SystemPageFileInformation`: not named by windows-sys.
const SYSTEM_PAGE_FILE_INFORMATION: SYSTEM_INFORMATION_CLASS = 18;
/// `TOKEN_QUERY`.
const TOKEN_QUERY: u32 = 0x0008;

/// A kernel handle, closed when dropped.
#[derive(Debug)]
pub struct Handle(HANDLE);

// SAFETY: a kernel handle is a process-wide value, usable from any thread.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by this module and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

fn from_wide(units: &[u16]) -> String {
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

fn filetime(t: FILETIME) -> u64 {
    (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime)
}

/// One logical processor's times since boot, in 100 ns units.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreTimes {
    /// Idle.
    pub idle: u64,
    /// In kernel mode, idle included (as the kernel counts it).
    pub kernel: u64,
    /// In user mode.
    pub user: u64,
    /// Running deferred procedure calls (part of kernel).
    pub dpc: u64,
    /// Servicing hardware interrupts (part of kernel).
    pub interrupt: u64,
    /// Interrupts serviced (a count).
    pub interrupts: u64,
}

/// `SYSTEM_PROCESSOR_PERFORMANCE_INFORMATION` with its fields named.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProcessorPerformance {
    idle: i64,
    kernel: i64,
    user: i64,
    dpc: i64,
    interrupt: i64,
    interrupts: u32,
}

/// Every logical processor's times (of the calling thread's processor
/// group: up to 64).
pub fn core_times() -> io::Result<Vec<CoreTimes>> {
    let mut buf = vec![ProcessorPerformance::default(); 64];
    let mut returned = 0u32;
    let size = std::mem::size_of_val(buf.as_slice()) as u32;
    // SAFETY: `buf` is writable for `size` bytes, and the call writes at
    // most that many, saying how many in `returned`.
    let status = unsafe {
        NtQuerySystemInformation(
            SystemProcessorPerformanceInformation,
            buf.as_mut_ptr().cast(),
            size,
            &mut returned,
        )
    };
    if status != 0 {
        return Err(io::Error::other(format!(
            "NtQuerySystemInformation(processor performance): status {status:#x}"
        )));
    }
    let count = returned as usize / std::mem::size_of::<ProcessorPerformance>();
    Ok(buf[..count.min(buf.len())]
        .iter()
        .map(|p| CoreTimes {
            idle: p.idle.max(0) as u64,
            kernel: p.kernel.max(0) as u64,
            user: p.user.max(0) as u64,
            dpc: p.dpc.max(0) as u64,
            interrupt: p.interrupt.max(0) as u64,
            interrupts: u64::from(p.interrupts),
        })
        .collect())
}

/// Physical memory and the commit charge, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Physical memory.
    pub total: u64,
    /// Available: free, zeroed and standby (cache that can be reused).
    pub available: u64,
    /// Committed memory (RAM and paging files together).
    pub commit_total: u64,
    /// The most that can be committed without growing a paging file.
    pub commit_limit: u64,
    /// The system's file cache.
    pub cache: u64,
    /// Processes, threads and handles in the system.
    pub processes: u32,
    /// Threads in the system.
    pub threads: u32,
    /// Handles open in the system.
    pub handles: u32,
}

/// The memory counters (`GlobalMemoryStatusEx`, `GetPerformanceInfo`).
pub fn memory() -> io::Result<Memory> {
    let mut status = MEMORYSTATUSEX {
        dwLength: std::mem::size_of::<MEMORYSTATUSEX>() as u32,
        ..Default::default()
    };
    // SAFETY: `status` is initialised with its length set, as required.
    if unsafe { GlobalMemoryStatusEx(&mut status) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut perf = PERFORMANCE_INFORMATION {
        cb: std::mem::size_of::<PERFORMANCE_INFORMATION>() as u32,
        ..Default::default()
    };
    // SAFETY: `perf` is writable for the size passed.
    let perf_ok = unsafe { K32GetPerformanceInfo(&mut perf, perf.cb) } != 0;
    let page = perf.PageSize as u64;
    Ok(Memory {
        total: status.ullTotalPhys,
        available: status.ullAvailPhys,
        commit_total: if perf_ok {
            perf.CommitTotal as u64 * page
        } else {
            status.ullTotalPageFile - status.ullAvailPageFile
        },
        commit_limit: if perf_ok {
            perf.CommitLimit as u64 * page
        } else {
            status.ullTotalPageFile
        },
        cache: if perf_ok {
            perf.SystemCache as u64 * page
        } else {
            0
        },
        processes: perf.ProcessCount,
        threads: perf.ThreadCount,
        handles: perf.HandleCount,
    })
}

/// One paging file: its size and use, in bytes.
#[derive(Debug, Clone, Default)]
pub struct PageFile {
    /// Its path, as the kernel names it (`\??\C:\pagefile.sys`).
    pub name: String,
    /// Its current size.
    pub total: u64,
    /// What is in use.
    pub used: u64,
}

/// Every paging file (`SystemPageFileInformation`). Sizes come in pages
/// of 4 KiB on x64.
pub fn page_files() -> io::Result<Vec<PageFile>> {
    let mut buf = vec![0u64; 1024];
    let mut returned = 0u32;
    let size = std::mem::size_of_val(buf.as_slice()) as u32;
    // SAFETY: `buf` (8-byte aligned) is writable for `size` bytes; the
    // call writes at most that many.
    let status = unsafe {
        NtQuerySystemInformation(
            SYSTEM_PAGE_FILE_INFORMATION,
            buf.as_mut_ptr().cast(),
            size,
            &mut returned,
        )
    };
    if status != 0 {
        return Err(io::Error::other(format!(
            "NtQuerySystemInformation(page files): status {status:#x}"
        )));
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
    let bytes = &bytes[..(returned as usize).min(bytes.len())];
    let mut out = Vec::new();
    let mut at = 0usize;
    // SYSTEM_PAGEFILE_INFORMATION: next offset (u32), total size (u32),
    // total in use (u32), peak (u32), then the name (UNICODE_STRING),
    // whose text points into this same buffer.
    while at + 16 <= bytes.len() {
        let u32_at = |o: usize| {
            bytes
                .get(at + o..at + o + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let next = u32_at(0) as usize;
        let name_len = bytes
            .get(at + 16..at + 18)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]])) as usize;
        let pointer = bytes.get(at + 24..at + 32).map_or(0, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        });
        let base = buf.as_ptr() as u64;
        let name = match pointer.checked_sub(base) {
            Some(offset) if (offset as usize) + name_len <= bytes.len() => {
                let raw = &bytes[offset as usize..offset as usize + name_len];
                let units: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            _ => String::new(),
        };
        out.push(PageFile {
            name,
            total: u64::from(u32_at(4)) * 4096,
            used: u64::from(u32_at(8)) * 4096,
        });
        if next == 0 {
            break;
        }
        at += next;
    }
    Ok(out)
}

/// The roots of the fixed drives: `C:\`, `D:\`.
pub fn fixed_drives() -> Vec<String> {
    // SAFETY: no arguments.
    let mask = unsafe { GetLogicalDrives() };
    (0..26u8)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("{}:\\", char::from(b'A' + i)))
        .filter(|root| {
            let w = wide(root);
            // SAFETY: `w` is a NUL-terminated UTF-16 string.
            unsafe { GetDriveTypeW(w.as_ptr()) == DRIVE_FIXED }
        })
        .collect()
}

/// A drive's size and free space, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriveSpace {
    /// Size.
    pub total: u64,
    /// Free to this process's user (quotas applied).
    pub available: u64,
    /// Free in all.
    pub free: u64,
}

/// Size and free space of the drive at `root` (`C:\`).
pub fn drive_space(root: &str) -> io::Result<DriveSpace> {
    let w = wide(root);
    let mut space = DriveSpace::default();
    // SAFETY: `w` is NUL-terminated; the three outputs are writable u64s.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            w.as_ptr(),
            &mut space.available,
            &mut space.total,
            &mut space.free,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(space)
}

/// The filesystem of the drive at `root`: `NTFS`, `ReFS` (empty if unknown).
pub fn filesystem(root: &str) -> String {
    let w = wide(root);
    let mut name = [0u16; 64];
    // SAFETY: `w` is NUL-terminated; `name` is writable for its length;
    // the other outputs are not asked for (null).
    let ok = unsafe {
        GetVolumeInformationW(
            w.as_ptr(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            name.as_mut_ptr(),
            name.len() as u32,
        )
    };
    if ok == 0 {
        return String::new();
    }
    from_wide(&name)
}

/// A physical disk's counters since boot (`IOCTL_DISK_PERFORMANCE`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskCounters {
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Time spent reading, 100 ns units.
    pub read_time: u64,
    /// Time spent writing, 100 ns units.
    pub write_time: u64,
    /// Time with nothing in flight, 100 ns units.
    pub idle_time: u64,
    /// When the counters were read, 100 ns units.
    pub query_time: u64,
    /// Requests in flight now.
    pub queue_depth: u32,
}

/// `\\.\PhysicalDrive<n>`, opened for queries only (no read access, so
/// no administrator right needed).
pub fn open_physical_disk(n: u32) -> io::Result<Handle> {
    let path = wide(&format!(r"\\.\PhysicalDrive{n}"));
    // SAFETY: `path` is NUL-terminated; desired access 0 asks for no data
    // access; no security attributes, no template.
    let handle = unsafe {
        CreateFileW(
            path.as_ptr(),
            0,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            std::ptr::null(),
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE || handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(Handle(handle))
}

/// The counters of an open physical disk.
pub fn disk_counters(disk: &Handle) -> io::Result<DiskCounters> {
    let mut perf = DISK_PERFORMANCE::default();
    let mut returned = 0u32;
    // SAFETY: `disk` is an open handle; `perf` is writable for the size
    // passed; no input buffer; synchronous (no OVERLAPPED).
    let ok = unsafe {
        DeviceIoControl(
            disk.0,
            IOCTL_DISK_PERFORMANCE,
            std::ptr::null(),
            0,
            (&raw mut perf).cast(),
            std::mem::size_of::<DISK_PERFORMANCE>() as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let u = |v: i64| v.max(0) as u64;
    Ok(DiskCounters {
        bytes_read: u(perf.BytesRead),
        bytes_written: u(perf.BytesWritten),
        reads: u64::from(perf.ReadCount),
        writes: u64::from(perf.WriteCount),
        read_time: u(perf.ReadTime),
        write_time: u(perf.WriteTime),
        idle_time: u(perf.IdleTime),
        query_time: u(perf.QueryTime),
        queue_depth: perf.QueueDepth,
    })
}

/// One network interface's counters since it came up.
#[derive(Debug, Clone, Default)]
pub struct Interface {
    /// Its name as `ipconfig` shows it (`Ethernet`, `Wi-Fi`).
    pub alias: String,
    /// Its IANA type (6 Ethernet, 24 loopback, 71 Wi-Fi, 131 tunnel).
    pub kind: u32,
    /// Whether it is up.
    pub up: bool,
    /// A hardware interface (not a software one).
    pub hardware: bool,
    /// A filter interface: a lightweight filter's copy of another
    /// interface's counters.
    pub filter: bool,
    /// Its counters.
    pub counters: IfCounters,
}

/// Every network interface (`GetIfTable2`).
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut table: *mut MIB_IF_TABLE2 = std::ptr::null_mut();
    // SAFETY: `table` receives a pointer to a table the system allocated,
    // freed below with FreeMibTable.
    let status = unsafe { GetIfTable2(&mut table) };
    if status != ERROR_SUCCESS || table.is_null() {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    // SAFETY: on success `table` points at a MIB_IF_TABLE2 whose `Table`
    // holds `NumEntries` rows.
    let rows = unsafe {
        std::slice::from_raw_parts(
            (&raw const (*table).Table)
                .cast::<windows_sys::Win32::NetworkManagement::IpHelper::MIB_IF_ROW2>(),
            (*table).NumEntries as usize,
        )
    };
    let out = rows
        .iter()
        .map(|r| {
            let flags = r.InterfaceAndOperStatusFlags._bitfield;
            Interface {
                alias: from_wide(&r.Alias),
                kind: r.Type,
                // IfOperStatusUp.
                up: r.OperStatus == 1,
                hardware: flags & 0x01 != 0,
                filter: flags & 0x02 != 0,
                counters: IfCounters {
                    rx_bytes: r.InOctets,
                    tx_bytes: r.OutOctets,
                    rx_packets: r.InUcastPkts.saturating_add(r.InNUcastPkts),
                    tx_packets: r.OutUcastPkts.saturating_add(r.OutNUcastPkts),
                    rx_errors: r.InErrors,
                    tx_errors: r.OutErrors,
                    rx_drops: r.InDiscards,
                    tx_drops: r.OutDiscards,
                },
            }
        })
        .collect();
    // SAFETY: `table` came from GetIfTable2 and is freed once; `rows` is
    // not used after this.
    unsafe { FreeMibTable(table.cast()) };
    Ok(out)
}

/// One process as the process list shows it.
#[derive(Debug, Clone, Default)]
pub struct ProcessEntry {
    /// Process id.
    pub pid: u32,
    /// Its executable's file name (`svchost.exe`).
    pub name: String,
    /// Its threads.
    pub threads: u32,
}

/// Every process (`CreateToolhelp32Snapshot`).
pub fn processes() -> io::Result<Vec<ProcessEntry>> {
    // SAFETY: a snapshot of every process; no process id needed.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snapshot == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    let snapshot = Handle(snapshot);
    let mut entry = PROCESSENTRY32W {
        dwSize: std::mem::size_of::<PROCESSENTRY32W>() as u32,
        ..Default::default()
    };
    let mut out = Vec::new();
    // SAFETY: `snapshot` is open; `entry` is initialised with its size set.
    let mut more = unsafe { Process32FirstW(snapshot.0, &mut entry) } != 0;
    while more {
        out.push(ProcessEntry {
            pid: entry.th32ProcessID,
            name: from_wide(&entry.szExeFile),
            threads: entry.cntThreads,
        });
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot.0, &mut entry) } != 0;
    }
    Ok(out)
}

/// A process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCounters {
    /// When it started (100 ns units since 1601): with the pid, who it is.
    pub created: u64,
    /// CPU time in kernel and user mode, 100 ns units.
    pub cpu_time: u64,
    /// Its working set (resident memory), bytes.
    pub working_set: u64,
}

fn open_process(pid: u32) -> Option<Handle> {
    // SAFETY: opening with query rights only; a null answer means refused.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    (!handle.is_null()).then_some(Handle(handle))
}

/// The counters of process `pid`; `None` when it is gone or refuses
/// (the System process and protected ones do).
pub fn process_counters(pid: u32) -> Option<ProcessCounters> {
    let process = open_process(pid)?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: `process` is open with query rights; the four outputs are
    // writable FILETIMEs.
    let ok =
        unsafe { GetProcessTimes(process.0, &mut created, &mut exited, &mut kernel, &mut user) };
    if ok == 0 {
        return None;
    }
    let mut memory = PROCESS_MEMORY_COUNTERS {
        cb: std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32,
        ..Default::default()
    };
    // SAFETY: `process` is open; `memory` is writable for the size passed.
    let memory_ok = unsafe { K32GetProcessMemoryInfo(process.0, &mut memory, memory.cb) } != 0;
    Some(ProcessCounters {
        created: filetime(created),
        cpu_time: filetime(kernel).saturating_add(filetime(user)),
        working_set: if memory_ok {
            memory.WorkingSetSize as u64
        } else {
            0
        },
    })
}

/// The full path of process `pid`'s executable.
pub fn process_image(pid: u32) -> Option<String> {
    let process = open_process(pid)?;
    let mut buf = [0u16; 1024];
    let mut len = buf.len() as u32;
    // SAFETY: `process` is open; `buf` is writable for `len` units.
    let ok = unsafe { QueryFullProcessImageNameW(process.0, 0, buf.as_mut_ptr(), &mut len) };
    (ok != 0).then(|| String::from_utf16_lossy(&buf[..(len as usize).min(buf.len())]))
}

/// The account process `pid` runs as: `DOMAIN\user`, `NT AUTHORITY\SYSTEM`.
pub fn process_user(pid: u32) -> Option<String> {
    let process = open_process(pid)?;
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is open; `token` receives a handle closed below.
    if unsafe { OpenProcessToken(process.0, TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let token = Handle(token);
    let mut buf = vec![0u64; 64];
    let mut len = 0u32;
    let size = std::mem::size_of_val(buf.as_slice()) as u32;
    // SAFETY: `token` is open with TOKEN_QUERY; `buf` (8-byte aligned) is
    // writable for `size` bytes.
    let ok =
        unsafe { GetTokenInformation(token.0, TokenUser, buf.as_mut_ptr().cast(), size, &mut len) };
    if ok == 0 {
        return None;
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID
    // points into the same buffer, alive for this function.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut kind = 0;
    // SAFETY: `sid` is valid (above); both outputs are writable for the
    // lengths passed.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return None;
    }
    let (name, domain) = (from_wide(&name), from_wide(&domain));
    Some(if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    })
}
