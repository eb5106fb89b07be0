//! Replies leave a batch at a time.
//!
//! Replies wait for the store's commit of what they rely on; the commit
//! thread then runs each request's deferred work, which queues its reply
//! here, and sends the lot once the batch is done ([`flush`], the store's
//! end-of-batch hook): one `sendmmsg(2)` per socket for up to `CHUNK` (64)
//! replies rather than one `sendto(2)` each. Besides the system calls, it
//! spares the commit thread from being preempted, after each reply, by the
//! client it has just woken, while the rest of the batch waits.
//!
//! A decision's log lines go out before its reply ([`log_first`]): on the
//! commit thread at once (the first reply of a batch writes the lines of
//! the whole batch), in a worker's held round once for the round, just
//! before its replies.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use smsotp_core::audit::ServerSinks;

/// The most replies handed to one `sendmmsg` call.
const CHUNK: usize = 64;

/// A reply waiting for the end of its batch.
pub struct Reply {
    pub socket: Arc<UdpSocket>,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

thread_local! {
    /// The replies this thread's batch has queued so far.
    static QUEUED: RefCell<Vec<Reply>> = const { RefCell::new(Vec::new()) };
    /// Whether [`flush`] waits for [`release`] (see [`hold`]).
    static HELD: Cell<bool> = const { Cell::new(false) };
    /// The log sinks whose lines [`release`] writes before the replies.
    static LOGS: RefCell<Vec<Arc<ServerSinks>>> = const { RefCell::new(Vec::new()) };
}

/// Makes this thread's [`flush`]es wait for [`release`]: a worker that
/// decides many requests in a round (`fibers.rs`) sends their replies
/// together, as the store's commit thread does.
pub fn hold() {
    HELD.with(|h| h.set(true));
}

/// Ends [`hold`]: writes the log lines of the replies queued meanwhile
/// (see [`log_first`]), then sends those replies.
pub fn release() {
    HELD.with(|h| h.set(false));
    let logs = LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    for sinks in &logs {
        sinks.flush();
    }
    flush();
}

/// Has the log lines gathered in `sinks` written before the reply about
/// to be queued leaves: now, or, while this thread holds its replies,
/// once for all of them at [`release`] (one write to stderr and the audit
/// file for a round rather than one per decision).
pub fn log_first(sinks: &Arc<ServerSinks>) {
    if !HELD.with(Cell::get) {
        sinks.flush();
        return;
    }
    LOGS.with(|l| {
        let mut l = l.borrow_mut();
        if !l.iter().any(|s| Arc::ptr_eq(s, sinks)) {
            l.push(sinks.clone());
        }
    });
}

/// Queues `reply` to be sent by this thread's next [`flush`].
pub fn queue(reply: Reply) {
    QUEUED.with(|q| q.borrow_mut().push(reply));
}

/// Sends what this thread has queued, in the order queued for each socket.
/// A reply the system refuses is dropped, as a lost datagram would be: the
/// client's retransmit gets it again from the duplicate cache.
pub fn flush() {
    if HELD.with(Cell::get) {
        return;
    }
    let mut replies = QUEUED.with(|q| std::mem::take(&mut *q.borrow_mut()));
    if replies.is_empty() {
        return;
    }
    // Stable: each socket's replies keep their order.
    replies.sort_by_key(|r| Arc::as_ptr(&r.socket) as usize);
    for group in replies.chunk_by(|a, b| Arc::ptr_eq(&a.socket, &b.socket)) {
        send_all(&group[0].socket, group);
    }
    // Keep the allocation for the next batch.
    replies.clear();
    QUEUED.with(|q| {
        let mut q = q.borrow_mut();
        if q.is_empty() {
            *q = replies;
        }
    });
}

fn send_all(socket: &UdpSocket, replies: &[Reply]) {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(replies.len().min(CHUNK), None);
    let mut start = 0;
    while start < replies.len() {
        let chunk = &replies[start..replies.len().min(start + CHUNK)];
        let slices: Vec<[IoSlice<'_>; 1]> =
            chunk.iter().map(|r| [IoSlice::new(&r.bytes)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = chunk
            .iter()
            .map(|r| Some(SockaddrStorage::from(r.to)))
            .collect();
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::empty(),
        )
        .map(Iterator::count);
        // Sent in part: go on after the last one sent. Interrupted by a
        // signal before any left: try again. Refused (the first of those
        // left): drop that one and go on.
        start += match sent {
            Ok(n) if n > 0 => n,
            Err(nix::errno::Errno::EINTR) => 0,
            _ => 1,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn socket() -> Arc<UdpSocket> {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Arc::new(s)
    }

    fn received(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    }

    #[test]
    fn a_held_round_writes_its_log_lines_once_and_before_its_replies() {
        use smsotp_core::audit::{AuditSink, Event, Level};
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("audit.jsonl");
        let sinks = Arc::new(ServerSinks::new(
            "t",
            false,
            None,
            false,
            Some(file.clone()),
        ));
        let lines = || {
            std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let (server, client) = (socket(), socket());
        let to = client.local_addr().unwrap();
        let decide = |user: &str| {
            let e = Event {
                event: "accept",
                user: user.into(),
                ..Event::default()
            };
            sinks.record(Level::Info, 0, &e);
            log_first(&sinks);
            queue(Reply {
                socket: server.clone(),
                to,
                bytes: user.as_bytes().to_vec(),
            });
            flush();
        };
        hold();
        decide("alice");
        decide("bob");
        // Neither the lines nor the replies left during the round.
        assert_eq!(lines(), 0, "no line written while the round is held");
        client.set_nonblocking(true).unwrap();
        assert!(client.recv_from(&mut [0u8; 8]).is_err());
        client.set_nonblocking(false).unwrap();
        release();
        // Both lines are written at release (before its replies, which a
        // test cannot tell apart from just after), and both replies sent.
        assert_eq!(received(&client).0, b"alice");
        assert_eq!(lines(), 2);
        assert_eq!(received(&client).0, b"bob");
        // Outside a held round a decision's line is written at once.
        decide("carol");
        assert_eq!(lines(), 3);
        assert_eq!(received(&client).0, b"carol");
        LOGS.with(|l| assert!(l.borrow().is_empty(), "nothing left for a later round"));
    }

    #[test]
    fn a_batch_leaves_in_order_from_its_sockets() {
        let (a, b) = (socket(), socket());
        let client = socket();
        let to = client.local_addr().unwrap();
        // More than a chunk, spread over two sockets, with a reply the
        // system refuses (port 0) in the middle.
        let n = CHUNK + 10;
        for i in 0..n {
            let from = if i % 3 == 0 { &b } else { &a };
            queue(Reply {
                socket: from.clone(),
                to,
                bytes: vec![(i % 256) as u8, 7],
            });
            if i == 5 {
                queue(Reply {
                    socket: a.clone(),
                    to: SocketAddr::from(([127, 0, 0, 1], 0)),
                    bytes: vec![0xff],
                });
            }
        }
        // Nothing leaves before the flush.
        client.set_nonblocking(true).unwrap();
        assert!(client.recv_from(&mut [0u8; 8]).is_err());
        client.set_nonblocking(false).unwrap();
        flush();
        let mut from_a = Vec::new();
        let mut from_b = Vec::new();
        for _ in 0..n {
            let (bytes, from) = received(&client);
            assert_eq!(bytes[1], 7, "only the replies queued, whole");
            if from == a.local_addr().unwrap() {
                from_a.push(bytes[0]);
            } else {
                assert_eq!(from, b.local_addr().unwrap());
                from_b.push(bytes[0]);
            }
        }
        let want = |keep: fn(usize) -> bool| -> Vec<u8> {
            (0..n).filter(|&i| keep(i)).map(|i| i as u8).collect()
        };
        assert_eq!(from_a, want(|i| i % 3 != 0));
        assert_eq!(from_b, want(|i| i % 3 == 0));
        // The queue is empty after: a second flush sends nothing.
        flush();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(client.recv_from(&mut [0u8; 8]).is_err());
    }
}
