//! `hangfs MOUNTPOINT`: a FUSE filesystem with one empty directory, for the
//! hung-mount test. It answers every request until the test stops it with
//! SIGSTOP; from then on the kernel waits for it forever, exactly as it
//! waits for an NFS server that went away. Mounting needs root (fuser mounts
//! with mount(2) directly, no libfuse or fusermount).
//!
//! Prints `ready` on stdout once mounted; unmounts when killed with
//! SIGTERM, or is unmounted by the test.

use std::ffi::OsStr;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, MountOption, ReplyAttr, ReplyEntry,
    ReplyStatfs, Request,
};

const ROOT: FileAttr = FileAttr {
    ino: INodeNo::ROOT,
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::Directory,
    perm: 0o755,
    nlink: 2,
    uid: 0,
    gid: 0,
    rdev: 0,
    flags: 0,
    blksize: 4096,
};

struct HangFs;

impl Filesystem for HangFs {
    fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::ENOENT);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            reply.attr(&Duration::from_secs(1), &ROOT);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 1000 blocks of 4 KiB, a quarter used.
        reply.statfs(1000, 750, 750, 100, 90, 4096, 255, 4096);
    }
}

fn main() -> std::io::Result<()> {
    let mountpoint = std::env::args_os()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: hangfs MOUNTPOINT"))?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("hangfs".into()),
        MountOption::Subtype("hangfs".into()),
    ];
    let _session = fuser::spawn_mount(HangFs, &mountpoint, &config)?;
    println!("ready");
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
