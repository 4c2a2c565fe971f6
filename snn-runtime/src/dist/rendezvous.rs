//! How the processes of a run find each other: rank 0 listens on `MASTER_ADDR:MASTER_PORT`,
//! every other rank connects and says who it is, and rank 0 answers each with the same
//! bytes (NCCL's unique id). Only this small exchange goes over TCP; the training traffic
//! goes over NCCL.
//!
//! On the wire (little-endian): a joining rank sends `SNN-RDV1`, its rank and the world
//! size (`u32` each); rank 0 answers `SNN-RDV1`, a status byte (0: welcome; 1: refused,
//! followed by why) and the payload's length (`u32`) and bytes.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use super::{DistError, World};

const MAGIC: &[u8; 8] = b"SNN-RDV1";
/// The largest payload accepted (NCCL's id is 128 bytes).
const MAX_PAYLOAD: u32 = 1 << 16;

/// Rank 0: waits until every other rank has joined (or `timeout` passes), then sends each
/// `payload` and returns it. Other ranks: joins rank 0 (retrying while it is not yet
/// listening) and returns what it sends.
pub fn exchange(world: &World, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, DistError> {
    if world.size == 1 {
        return Ok(payload.to_vec());
    }
    if world.rank == 0 {
        let listener = listen(world)?;
        serve(&listener, world, payload, timeout)?;
        Ok(payload.to_vec())
    } else {
        join(world, timeout)
    }
}

/// A TCP port free on this machine now (the system's choice), for a rendezvous of local
/// processes.
pub fn free_port() -> Result<u16, DistError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DistError::Rendezvous(format!("finding a free port on this machine: {e}")))
}

/// Rank 0's listening socket on its master address and port.
pub fn listen(world: &World) -> Result<TcpListener, DistError> {
    let addr = resolve(world)?;
    // Listen on every interface at the port: the master address names this host to the
    // others, which may reach it by another interface than the one it resolves to here.
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => ([0, 0, 0, 0], addr.port()).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, addr.port()).into(),
    };
    TcpListener::bind(any).map_err(|e| {
        let hint = if e.kind() == ErrorKind::AddrInUse {
            ": another run (or program) uses it; choose another MASTER_PORT"
        } else {
            ""
        };
        DistError::Rendezvous(format!(
            "rank 0 cannot listen on port {}: {e}{hint}",
            world.master_port
        ))
    })
}

/// Rank 0's side on an open `listener`: admits ranks `1..size` once each, then sends every
/// one of them `payload`.
pub fn serve(
    listener: &TcpListener,
    world: &World,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), DistError> {
    let deadline = Instant::now() + timeout;
    let io = |doing: &str| {
        let doing = doing.to_string();
        move |e: std::io::Error| DistError::Rendezvous(format!("rank 0, {doing}: {e}"))
    };
    listener.set_nonblocking(true).map_err(io("listening"))?;
    let mut joined: BTreeMap<usize, TcpStream> = BTreeMap::new();
    while joined.len() + 1 < world.size {
        let (mut stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = (1..world.size)
                        .filter(|r| !joined.contains_key(r))
                        .map(|r| r.to_string())
                        .collect();
                    return Err(DistError::Rendezvous(format!(
                        "rank 0 waited {timeout:?} on port {} and rank(s) {} never joined: check that every process started, with the same MASTER_ADDR ({}) and MASTER_PORT",
                        world.master_port,
                        missing.join(", "),
                        world.master_addr
                    )));
                }
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(io("accepting a rank")(e)),
        };
        stream
            .set_nonblocking(false)
            .map_err(io("accepting a rank"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("accepting a rank"))?;
        let Some((rank, size)) = read_hello(&mut stream) else {
            // Not one of ours (a port scanner, a stray connection): ignore it.
            continue;
        };
        let refusal = if size != world.size {
            Some(format!(
                "rank {rank} (from {peer}) counts {size} processes, rank 0 counts {}: start every process with the same world size",
                world.size
            ))
        } else if rank == 0 || rank >= world.size {
            Some(format!(
                "a process at {peer} says it is rank {rank}; ranks 1..{} may join rank 0",
                world.size
            ))
        } else if joined.contains_key(&rank) {
            Some(format!(
                "rank {rank} joined twice (again from {peer}): give every process its own rank"
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            // Tell the refused process why, then fail the whole run: it is misconfigured.
            let _ = reply(&mut stream, Err(&why));
            return Err(DistError::Rendezvous(why));
        }
        joined.insert(rank, stream);
    }
    for (rank, stream) in &mut joined {
        reply(stream, Ok(payload))
            .map_err(|e| DistError::Rendezvous(format!("rank 0, answering rank {rank}: {e}")))?;
    }
    Ok(())
}

/// A rank other than 0: connects to rank 0 until it answers or `timeout` passes.
fn join(world: &World, timeout: Duration) -> Result<Vec<u8>, DistError> {
    let addr = resolve(world)?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(DistError::Rendezvous(format!(
                    "rank {} could not reach rank 0 at {addr} within {timeout:?} ({e}): is rank 0 running, and MASTER_ADDR its host?",
                    world.rank
                )));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    let io = |e: std::io::Error| {
        DistError::Rendezvous(format!(
            "rank {} talking to rank 0 at {addr}: {e}",
            world.rank
        ))
    };
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(left.max(Duration::from_secs(1))))
        .map_err(io)?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&u32_of(world.rank)?.to_le_bytes());
    hello.extend_from_slice(&u32_of(world.size)?.to_le_bytes());
    stream.write_all(&hello).map_err(io)?;
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).map_err(io)?;
    if &head[..8] != MAGIC {
        return Err(DistError::Rendezvous(format!(
            "rank {}: {addr} answered, but not as an snn rank 0 (another program on MASTER_PORT?)",
            world.rank
        )));
    }
    let body = read_block(&mut stream).map_err(io)?;
    if head[8] != 0 {
        return Err(DistError::Rendezvous(format!(
            "rank 0 refused rank {}: {}",
            world.rank,
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(body)
}

fn resolve(world: &World) -> Result<SocketAddr, DistError> {
    (world.master_addr.as_str(), world.master_port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            DistError::Rendezvous(format!(
                "MASTER_ADDR `{}` does not resolve to an address: set it to rank 0's host name or IP",
                world.master_addr
            ))
        })
}

fn u32_of(n: usize) -> Result<u32, DistError> {
    u32::try_from(n).map_err(|_| DistError::Rendezvous(format!("{n} does not fit the rendezvous")))
}

/// A joining rank's `(rank, size)`, or `None` for anything else.
fn read_hello(stream: &mut TcpStream) -> Option<(usize, usize)> {
    let mut b = [0u8; 16];
    stream.read_exact(&mut b).ok()?;
    if &b[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    Some((word(8), word(12)))
}

/// Rank 0's answer: the payload, or why the rank is refused.
fn reply(stream: &mut TcpStream, answer: Result<&[u8], &str>) -> std::io::Result<()> {
    let (status, body) = match answer {
        Ok(p) => (0u8, p),
        Err(why) => (1u8, why.as_bytes()),
    };
    let mut msg = MAGIC.to_vec();
    msg.push(status);
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    stream.write_all(&msg)?;
    stream.flush()
}

/// A length-prefixed block of at most [`MAX_PAYLOAD`] bytes.
fn read_block(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("an answer of {len} bytes is too long"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn free_port() -> u16 {
        super::free_port().unwrap()
    }

    fn world(rank: usize, size: usize, port: u16) -> World {
        World::local(rank, size, port)
    }

    /// `ranks` in threads, each with `size_of(rank)` as its world size.
    fn run(
        ranks: impl Iterator<Item = usize>,
        size_of: impl Fn(usize) -> usize,
        timeout: Duration,
    ) -> Vec<Result<Vec<u8>, DistError>> {
        let port = free_port();
        let id: Vec<u8> = (0..128).map(|i| (i * 7 % 251) as u8).collect();
        let handles: Vec<_> = ranks
            .map(|r| {
                let (w, id) = (world(r, size_of(r), port), id.clone());
                thread::spawn(move || {
                    let payload = if r == 0 { id } else { vec![] };
                    exchange(&w, &payload, timeout)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn every_rank_gets_rank_zeros_bytes_whoever_starts_first() {
        // Non-zero ranks first: they retry until rank 0 listens.
        let got = run([3, 1, 2, 0].into_iter(), |_| 4, Duration::from_secs(20));
        let id: Vec<u8> = (0..128).map(|i| (i * 7 % 251) as u8).collect();
        for r in got {
            assert_eq!(r.unwrap(), id);
        }
    }

    #[test]
    fn a_missing_rank_is_named_after_the_timeout() {
        let got = run([0, 1].into_iter(), |_| 3, Duration::from_millis(500));
        let err = got[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("rank(s) 2 never joined"), "{err}");
    }

    #[test]
    fn a_rank_with_another_world_size_is_refused_with_the_reason() {
        let got = run(
            [0, 1].into_iter(),
            |r| if r == 0 { 2 } else { 3 },
            Duration::from_secs(10),
        );
        let err0 = got[0].as_ref().unwrap_err().to_string();
        assert!(
            err0.contains("counts 3 processes, rank 0 counts 2"),
            "{err0}"
        );
        let err1 = got[1].as_ref().unwrap_err().to_string();
        assert!(err1.contains("rank 0 refused rank 1"), "{err1}");
    }

    #[test]
    fn a_busy_port_and_an_absent_rank_zero_are_clear_errors() {
        let busy = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let err = exchange(&world(0, 2, port), &[1], Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("choose another MASTER_PORT"), "{err}");
        let err = exchange(&world(1, 2, free_port()), &[], Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("could not reach rank 0"), "{err}");
        let mut w = world(1, 2, 1);
        w.master_addr = "no-such-host.invalid".into();
        let err = exchange(&w, &[], Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not resolve"), "{err}");
    }

    #[test]
    fn a_stranger_on_the_port_is_ignored() {
        let port = free_port();
        let w0 = world(0, 2, port);
        let server = thread::spawn(move || exchange(&w0, b"id", Duration::from_secs(20)));
        // A connection that says nothing snn understands, then the real rank 1.
        let stranger = loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                break s;
            }
            thread::sleep(Duration::from_millis(20));
        };
        drop(stranger);
        let got = exchange(&world(1, 2, port), &[], Duration::from_secs(20)).unwrap();
        assert_eq!(got, b"id");
        assert_eq!(server.join().unwrap().unwrap(), b"id");
    }
}
