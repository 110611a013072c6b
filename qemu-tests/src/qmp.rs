//! A minimal QMP (QEMU Machine Protocol) client: JSON lines over a unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Error, Result};

/// How long a command may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected QMP session, past capability negotiation.
#[derive(Debug)]
pub struct Qmp {
    vm: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`, retrying until `timeout` while QEMU starts.
    pub fn connect(vm: &str, path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    tracing::trace!("QMP {} not ready: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(qmp_error(vm, "connect", format!("{}: {e}", path.display())));
                }
            }
        };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| qmp_error(vm, "connect", e.to_string()))?;
        let writer = stream
            .try_clone()
            .map_err(|e| qmp_error(vm, "connect", e.to_string()))?;
        let mut qmp = Qmp {
            vm: vm.to_string(),
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error(
                vm,
                "greeting",
                format!("unexpected greeting {greeting}"),
            ));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self, command: &str) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| qmp_error(&self.vm, command, format!("reading the reply: {e}")))?;
        if n == 0 {
            return Err(qmp_error(
                &self.vm,
                command,
                "QEMU closed the QMP socket".into(),
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| qmp_error(&self.vm, command, format!("bad JSON {line:?}: {e}")))
    }

    /// Runs one command and returns its `return` value; QMP errors become [`Error::Qmp`].
    /// Asynchronous events that arrive meanwhile are kept (see [`Qmp::events`]).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut text = request.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| qmp_error(&self.vm, command, format!("sending: {e}")))?;
        loop {
            let message = self.read_message(command)?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let class = error
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or("Error");
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
                return Err(qmp_error(&self.vm, command, format!("{class}: {desc}")));
            }
            if message.get("event").is_some() {
                self.events.push(message);
            }
        }
    }

    /// The asynchronous events (`SHUTDOWN`, `DEVICE_DELETED`, ...) seen so far.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// Freezes the guest's vCPUs (QEMU keeps running).
    pub fn stop(&mut self) -> Result<()> {
        self.execute("stop", None).map(drop)
    }

    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", None).map(drop)
    }

    /// Sets the link state QEMU reports to the guest for a NIC or netdev.
    pub fn set_link(&mut self, name: &str, up: bool) -> Result<()> {
        self.execute("set_link", Some(json!({ "name": name, "up": up })))
            .map(drop)
    }

    /// Adds a backend, e.g. `{"type": "tap", "id": "hn1", "ifname": "tap3", "script": "no", ...}`.
    pub fn netdev_add(&mut self, arguments: Value) -> Result<()> {
        self.execute("netdev_add", Some(arguments)).map(drop)
    }

    /// Hot-plugs a device, e.g. `{"driver": "e1000e", "id": "hp1", "netdev": "hn1"}`.
    pub fn device_add(&mut self, arguments: Value) -> Result<()> {
        self.execute("device_add", Some(arguments)).map(drop)
    }

    /// Asks the guest to release a device (completion is the `DEVICE_DELETED` event).
    pub fn device_del(&mut self, id: &str) -> Result<()> {
        self.execute("device_del", Some(json!({ "id": id })))
            .map(drop)
    }

    /// Presses keys together, e.g. `["ctrl", "alt", "delete"]` (QKeyCode names).
    pub fn send_key(&mut self, keys: &[&str]) -> Result<()> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.execute("send-key", Some(json!({ "keys": keys })))
            .map(drop)
    }

    /// `query-status`'s `status` (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String> {
        let value = self.execute("query-status", None)?;
        Ok(value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}

fn qmp_error(vm: &str, command: &str, message: String) -> Error {
    Error::Qmp {
        vm: vm.to_string(),
        command: command.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU that greets, accepts capabilities, sends an event, then answers one command.
    #[test]
    fn negotiates_then_runs_commands_and_keeps_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let fake = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writeln!(
                writer,
                r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#
            )
            .unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writeln!(writer, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(
                line.contains("send-key") && line.contains("delete"),
                "{line}"
            );
            writeln!(writer, r#"{{"event": "RESET", "data": {{}}}}"#).unwrap();
            writeln!(writer, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            reader.read_line(&mut line).unwrap();
            writeln!(
                writer,
                r#"{{"error": {{"class": "GenericError", "desc": "no such device"}}}}"#
            )
            .unwrap();
        });
        let mut qmp = Qmp::connect("t", &path, Duration::from_secs(5)).unwrap();
        qmp.send_key(&["ctrl", "alt", "delete"]).unwrap();
        assert_eq!(qmp.events().len(), 1);
        let err = qmp.device_del("nope").unwrap_err().to_string();
        assert!(err.contains("GenericError: no such device"), "{err}");
        fake.join().unwrap();
    }
}
