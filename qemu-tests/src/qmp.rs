//! A minimal QMP client: one command at a time, events recorded with host
//! timestamps (a reboot test can check that the guest, not the host, reset).

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An asynchronous QMP event (`RESET`, `SHUTDOWN`, `POWERDOWN`, `STOP`, ...).
#[derive(Clone, Debug)]
pub struct QmpEvent {
    /// Which qemu process of the VM sent it (see `Line::spawn`).
    pub spawn: u32,
    /// Seconds since the qemu that sent it was spawned.
    pub t: f64,
    pub name: String,
    pub data: Value,
}

pub(crate) struct Qmp {
    writer: UnixStream,
    responses: Receiver<Value>,
    reader: Option<JoinHandle<()>>,
    next_id: u64,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

impl Qmp {
    /// Connects to a server socket that qemu creates shortly after spawn.
    /// `alive` is polled so that a qemu that died at startup fails fast.
    pub(crate) fn connect(
        path: &Path,
        spawn: u32,
        spawned: Instant,
        events: Arc<Mutex<Vec<QmpEvent>>>,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    alive()?;
                    if Instant::now() > deadline {
                        return Err(e)
                            .with_context(|| format!("connecting to QMP at {}", path.display()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream
            .set_read_timeout(Some(timeout))
            .context("QMP socket timeout")?;
        let mut reader = BufReader::new(stream.try_clone().context("cloning the QMP socket")?);
        let mut greeting = String::new();
        reader
            .read_line(&mut greeting)
            .context("reading the QMP greeting")?;
        let g: Value = serde_json::from_str(&greeting)
            .with_context(|| format!("QMP greeting is not JSON: {greeting:?}"))?;
        if g.get("QMP").is_none() {
            bail!("unexpected QMP greeting: {greeting}");
        }
        // Commands wait through the channel with their own timeouts; the
        // reader thread must block for as long as qemu lives.
        stream
            .set_read_timeout(None)
            .context("QMP socket timeout")?;
        let (tx, rx) = channel();
        let handle = std::thread::Builder::new()
            .name("qmp-reader".into())
            .spawn(move || {
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if let Some(name) = v.get("event").and_then(Value::as_str) {
                        let ev = QmpEvent {
                            spawn,
                            t: spawned.elapsed().as_secs_f64(),
                            name: name.to_string(),
                            data: v.get("data").cloned().unwrap_or(Value::Null),
                        };
                        events.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
                    } else if tx.send(v).is_err() {
                        break;
                    }
                }
            })
            .context("spawning the QMP reader thread")?;
        let mut qmp = Qmp {
            writer: stream,
            responses: rx,
            reader: Some(handle),
            next_id: 1,
        };
        qmp.execute("qmp_capabilities", None)
            .context("QMP capabilities negotiation")?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value.
    pub(crate) fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": cmd, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .with_context(|| format!("sending QMP {cmd}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.responses.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("QMP {cmd}: no reply in {COMMAND_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // qemu closes the socket as it exits; after `quit` that
                    // may happen before the reply is read.
                    if cmd == "quit" {
                        return Ok(Value::Null);
                    }
                    bail!("QMP {cmd}: qemu closed the connection");
                }
            };
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(anyhow!("QMP {cmd} failed: {err}"));
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }
}

impl Qmp {
    /// After qemu exited: lets the reader drain what qemu sent before it
    /// closed the socket (a final `SHUTDOWN` event, say), then closes.
    pub(crate) fn close_after_exit(mut self) {
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Unblocks the reader thread even if qemu is still alive.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}
