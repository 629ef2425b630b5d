//! The capture file's one writer: a thread fed whole lines over a bounded queue.
//!
//! Connections hand finished lines to [`Capture::send`] and wait while the queue is full, so a
//! disk slower than the traffic slows the traffic down instead of losing records. The thread
//! merges what has queued up into one `write` of whole lines (lines from several connections
//! never interleave) and, when a write fails, cuts the file back to where it was, so no partial
//! line stays between whole ones. The first failure is reported on stderr; later records are
//! tried again and dropped while writing fails; proxying goes on either way.
//!
//! This file does not know what a record holds (see [`crate::capture`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use smol::channel::{Receiver, Sender};

use crate::error::describe;

/// Records waiting for the writer before connections have to wait. Small, because each record
/// may hold two bodies of `--capture-body-limit` bytes: 16 records at the default limit are a
/// few MiB at worst, which a router can spare, and enough to ride out a slow write.
pub const QUEUE: usize = 16;
/// Most bytes of queued records merged into one write.
const BATCH: usize = 256 * 1024;
/// Longest the writer may take to write what is queued when the proxy stops.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The capture file, its writer thread and the capture settings.
pub struct Capture {
    /// Bytes of each body kept.
    pub limit: usize,
    /// Keep Authorization, Cookie and Set-Cookie values.
    pub secrets: bool,
    /// Whole lines to the writer; bounded, so a slow disk slows traffic.
    tx: Sender<Vec<u8>>,
    /// Set (and signalled) when the writer thread has written everything and ended.
    done: Arc<(Mutex<bool>, Condvar)>,
    /// Records written to the file (for the metrics).
    written: Arc<AtomicU64>,
}

impl Capture {
    /// Opens (creates or appends to) `path` and starts the writer thread.
    pub fn open(path: &str, limit: usize, secrets: bool) -> io::Result<Capture> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        drop_partial_line(&mut file)?;
        let (tx, rx) = smol::channel::bounded(QUEUE);
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let (path, ended) = (path.to_string(), done.clone());
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                write_lines(file, &path, rx, &count);
                let (flag, signal) = &*ended;
                if let Ok(mut flag) = flag.lock() {
                    *flag = true;
                }
                signal.notify_all();
            })?;
        Ok(Capture {
            limit,
            secrets,
            tx,
            done,
            written,
        })
    }

    /// Records written to the file so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records queued and not yet taken by the writer.
    pub fn backlog(&self) -> usize {
        self.tx.len()
    }

    /// Queues one whole line (ending in `\n`); waits while the queue is full.
    pub async fn send(&self, line: Vec<u8>) {
        // Fails only after `finish`, when the process is about to exit anyway.
        let _ = self.tx.send(line).await;
    }

    /// Stops taking lines and waits (bounded) until the queued ones are written.
    pub fn finish(&self) {
        self.tx.close();
        let (flag, signal) = &*self.done;
        if let Ok(ended) = flag.lock() {
            let _ = signal.wait_timeout_while(ended, FINISH_TIMEOUT, |ended| !*ended);
        }
    }
}

/// The writer thread: appends batches of whole lines until the queue is closed and empty.
/// Counts the records written in `written`.
fn write_lines(mut file: File, path: &str, rx: Receiver<Vec<u8>>, written: &AtomicU64) {
    let mut warned = false;
    while let Ok(mut batch) = rx.recv_blocking() {
        let mut records = 1;
        // Lines that queued up meanwhile go out in the same write.
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    batch.extend_from_slice(&more);
                    records += 1;
                }
                Err(_) => break,
            }
        }
        match append(&mut file, &batch) {
            Ok(()) => {
                written.fetch_add(records, Ordering::Relaxed);
            }
            Err(e) if !warned => {
                eprintln!(
                    "smolproxy: cannot write capture file {path}: {}; records are dropped while \
                     it fails, proxying goes on",
                    describe(&e)
                );
                warned = true;
            }
            Err(_) => {}
        }
    }
}

/// Cuts a file that ends in the middle of a line (a process killed while writing) back to its
/// last whole line, so that new records are not glued onto the broken one.
fn drop_partial_line(file: &mut File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(());
    }
    // Scan backwards in blocks for the last newline; a file with none is cut to empty.
    let mut end = meta.len();
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < meta.len() {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    file.set_len(0)
}

/// Writes whole lines; on failure cuts the file back so no partial line stays in the middle.
fn append(file: &mut File, data: &[u8]) -> io::Result<()> {
    let before = file.metadata().map(|m| m.len());
    let result = file.write_all(data);
    if result.is_err() {
        if let Ok(len) = before {
            let _ = file.set_len(len);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn a_broken_last_line_is_cut_before_appending() {
        let path = std::env::temp_dir().join(format!("smolproxy-cut-{}", std::process::id()));
        for (before, after) in [
            (&b"{\"a\":1}\n{\"b\":"[..], &b"{\"a\":1}\n"[..]),
            (b"{\"a\":1}\n", b"{\"a\":1}\n"),
            (b"{\"cut", b""),
            (b"", b""),
        ] {
            std::fs::write(&path, before).unwrap();
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .unwrap();
            drop_partial_line(&mut file).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), after);
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn lines_from_many_threads_stay_whole() {
        let name = format!("smolproxy-capture-writer-{}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        let cap = Capture::open(path.to_str().unwrap(), 16, false).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let cap = &cap;
                s.spawn(move || {
                    for i in 0..100 {
                        // Long lines, so a torn write would show.
                        let line = format!("{t} {i} {}\n", "x".repeat(10_000 * usize::from(t)));
                        block_on(cap.send(line.into_bytes()));
                    }
                });
            }
        });
        cap.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text.lines().count(), 400);
        for line in text.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.nth(1).unwrap().len(), 10_000 * t, "a torn line");
        }
    }

    #[test]
    fn a_failing_disk_neither_blocks_nor_panics() {
        // /dev/full: every write fails with ENOSPC (Linux, the target platform).
        let cap = Capture::open("/dev/full", 16, false).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..(QUEUE * 4) {
                block_on(cap.send(b"{}\n".to_vec()));
            }
            cap.finish();
            let _ = done.send(());
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok(),
            "sending to a failing disk blocked (or the writer panicked)"
        );
    }
}
