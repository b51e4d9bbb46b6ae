//! TCP connections by state through netlink `sock_diag` (`inet_diag`), the
//! interface `ss` uses.
//!
//! Reading `/proc/net/tcp` makes the kernel walk the whole established
//! hash table again for every `read()` (on a large host, hundreds of
//! thousands of buckets each time): measured here, it was over half of the
//! agent's CPU. A netlink dump walks the table once and carries on across
//! `recv` calls. Only the state byte of each reply is read.

use std::io;
use std::time::Duration;

use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, netlink, recv, send, socket};

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const HEADER_LEN: usize = 16;
/// `inet_diag_req_v2`: family, protocol, ext, pad, states, then a 48-byte
/// socket id left zero (match everything).
const REQUEST_LEN: usize = 56;

/// A netlink socket for `sock_diag` dumps.
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

impl SockDiag {
    /// Opens the socket, with `timeout` on every receive.
    pub fn open(timeout: Duration) -> io::Result<SockDiag> {
        let fd = socket(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            Some(netlink::SOCK_DIAG),
        )?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(timeout),
        )?;
        Ok(SockDiag {
            fd,
            buf: vec![0; 64 << 10],
            seq: 0,
        })
    }

    /// Adds the TCP sockets of both address families to `counts`, indexed
    /// by state − 1 (`TCP_ESTABLISHED` = 1 → index 0).
    pub fn count_tcp(&mut self, counts: &mut [u64; 12]) -> io::Result<()> {
        for family in [AF_INET, AF_INET6] {
            self.dump(family, counts)?;
        }
        Ok(())
    }

    fn dump(&mut self, family: u8, counts: &mut [u64; 12]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        send(&self.fd, &request(family, self.seq), SendFlags::empty())?;
        loop {
            let (n, _) = recv(&self.fd, &mut self.buf[..], RecvFlags::empty())?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink closed",
                ));
            }
            if count_replies(&self.buf[..n], self.seq, counts)? {
                return Ok(());
            }
        }
    }
}

fn request(family: u8, seq: u32) -> [u8; HEADER_LEN + REQUEST_LEN] {
    let mut msg = [0u8; HEADER_LEN + REQUEST_LEN];
    msg[0..4].copy_from_slice(&((HEADER_LEN + REQUEST_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    msg[HEADER_LEN] = family;
    msg[HEADER_LEN + 1] = IPPROTO_TCP;
    // Every state.
    msg[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
    msg
}

/// Counts the `inet_diag_msg` replies in one datagram. Returns `true` at
/// the end of the dump.
fn count_replies(mut data: &[u8], seq: u32, counts: &mut [u64; 12]) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    while data.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().map_err(|_| bad("header"))?) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().map_err(|_| bad("header"))?);
        let msg_seq = u32::from_ne_bytes(data[8..12].try_into().map_err(|_| bad("header"))?);
        if len < HEADER_LEN || len > data.len() {
            return Err(bad("message length"));
        }
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let code = data
                        .get(HEADER_LEN..HEADER_LEN + 4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_ne_bytes);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                SOCK_DIAG_BY_FAMILY => {
                    // inet_diag_msg: family, then state.
                    if let Some(&state) = data.get(HEADER_LEN + 1)
                        && (1..=12).contains(&state)
                    {
                        counts[usize::from(state - 1)] += 1;
                    }
                }
                _ => {}
            }
        }
        let aligned = (len + 3) & !3;
        data = data.get(aligned..).unwrap_or(&[]);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = HEADER_LEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn replies_are_counted_by_state_until_done() {
        let mut data = Vec::new();
        for state in [1u8, 1, 10, 6] {
            let mut payload = vec![0u8; 72];
            payload[0] = AF_INET;
            payload[1] = state;
            data.extend(message(SOCK_DIAG_BY_FAMILY, 7, &payload));
        }
        // A stale reply of another dump is ignored.
        data.extend(message(SOCK_DIAG_BY_FAMILY, 6, &[AF_INET, 1]));
        let mut counts = [0u64; 12];
        assert!(!count_replies(&data, 7, &mut counts).expect("parses"));
        assert_eq!((counts[0], counts[5], counts[9]), (2, 1, 1));
        assert!(count_replies(&message(NLMSG_DONE, 7, &[0; 4]), 7, &mut counts).expect("done"));
        let err = count_replies(
            &message(NLMSG_ERROR, 7, &(-13i32).to_ne_bytes()),
            7,
            &mut counts,
        )
        .expect_err("error");
        assert_eq!(err.raw_os_error(), Some(13));
        assert!(
            count_replies(&[1, 0, 0], 7, &mut counts).is_ok(),
            "a short tail is ignored"
        );
    }

    #[test]
    fn a_real_dump_sees_a_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut diag = SockDiag::open(Duration::from_secs(2)).expect("netlink sock_diag");
        let mut counts = [0u64; 12];
        diag.count_tcp(&mut counts).expect("dump");
        assert!(counts[9] >= 1, "LISTEN: {counts:?}");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let mut after = [0u64; 12];
        diag.count_tcp(&mut after).expect("dump again");
        assert!(
            after[0] >= counts[0] + 2,
            "both ends ESTABLISHED: {counts:?} → {after:?}"
        );
    }
}
