//! A local HTTP server on 127.0.0.1 for download tests (never the internet), and fixture
//! bytes. Shared by `snn-data`'s download tests and the `snn data` CLI tests of the root
//! crate, each of which uses part of it.
//!
//! The server serves fixture bytes, answers `Range: bytes=N-` with 206 (or ignores it, in
//! one mode), redirects `/moved/<name>` to `/<name>`, can drop the first file transfer
//! half-way through the body, records every request, and stops by itself: when its test
//! drops it, after 64 connections, or after 30 seconds, whichever comes first.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};

// ---------------------------------------------------------------------------------------
// The local server.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Honours `Range: bytes=N-`.
    Normal,
    /// Like `Normal`, but the first response stops half-way through its body and the
    /// connection is closed.
    DropFirstHalfway,
    /// Ignores `Range` and always sends the whole file with 200.
    IgnoreRange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

pub struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub const MAX_CONNECTIONS: usize = 64;
pub const SERVER_LIFETIME: Duration = Duration::from_secs(30);

impl Server {
    pub fn start(files: &[(&str, &[u8])], mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(name, bytes)| (format!("/{name}"), bytes.to_vec()))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            thread::spawn(move || {
                let deadline = Instant::now() + SERVER_LIFETIME;
                let mut served = 0;
                let mut dropped = false;
                while served < MAX_CONNECTIONS
                    && Instant::now() < deadline
                    && !stop.load(Ordering::Relaxed)
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            served += 1;
                            // A broken connection is the client's business; keep serving.
                            let _ = serve(stream, &files, mode, &mut dropped, &seen);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Server {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn serve(
    mut stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    mode: Mode,
    dropped: &mut bool,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    let range = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("range")
            .then(|| v.trim().to_string())
    });
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });

    if let Some(target) = path.strip_prefix("/moved") {
        write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let Some(body) = files.get(&path) else {
        let msg = b"not here";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        stream.write_all(msg)?;
        return Ok(());
    };
    let len = body.len();
    let start = range
        .as_deref()
        .filter(|_| mode != Mode::IgnoreRange)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, extra, from) = match start {
        Some(s) if s >= len => {
            write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(s) => (
            "206 Partial Content",
            format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
            s,
        ),
        None => ("200 OK", String::new(), 0),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: \
         bytes\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        len - from
    )?;
    let body = &body[from..];
    if mode == Mode::DropFirstHalfway && !*dropped {
        *dropped = true;
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
        // Give the client time to read what was sent before the connection goes.
        thread::sleep(Duration::from_millis(100));
        stream.shutdown(Shutdown::Both)?;
        return Ok(());
    }
    stream.write_all(body)?;
    stream.flush()
}

// ---------------------------------------------------------------------------------------
// Fixtures.

/// Deterministic bytes that compress poorly, like a real archive.
pub fn fixture(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    SplitMix64::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}
