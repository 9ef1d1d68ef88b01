//! Child processes a test starts: stopped when the test ends, however it ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::wait::{PATIENCE, wait_until};

/// How long a process stopped on drop gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// Runs `cmd` to completion and returns its output; panics showing the command, its status,
/// stdout and stderr unless it exited successfully.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` on its stdin (then closed) and returns its output, whatever its
/// exit status.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading all of it is not an error here.
        let _ = stdin.write_all(input);
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server the test starts.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

/// A TCP port on 127.0.0.1 that refuses connections for as long as this value lives: its
/// socket is bound but not listening, so no server (of this test or another running beside
/// it) can take the port meanwhile. Dropping a listener to "free" a port instead leaves a
/// window in which another test's server may bind it and answer.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
}

#[cfg(feature = "tokio")]
impl ClosedPort {
    /// Binds a fresh port without listening on it.
    pub fn new() -> Self {
        let bound = tokio::net::TcpSocket::new_v4().and_then(|socket| {
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
            Ok(socket)
        });
        match bound {
            Ok(socket) => Self { socket },
            Err(e) => panic!("cannot bind a port on 127.0.0.1: {e}"),
        }
    }

    /// The address whose connections are refused.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|e| panic!("a bound socket has no address: {e}"))
    }
}

#[cfg(feature = "tokio")]
impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A child process that is stopped when dropped: SIGTERM, so that servers shut down the way
/// they do in production (and nginx stops its workers), then SIGKILL if it has not exited
/// within a grace period.
#[derive(Debug)]
pub struct Running {
    what: String,
    child: Option<Child>,
}

impl Running {
    /// Spawns `cmd`; `what` names the process in every failure message.
    pub fn spawn(what: impl Into<String>, cmd: &mut Command) -> Self {
        let what = what.into();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Self {
            what,
            child: Some(child),
        }
    }

    /// The process; panics if it was already stopped with [`Running::terminate`] or
    /// [`Running::kill`].
    pub fn child(&mut self) -> &mut Child {
        match self.child.as_mut() {
            Some(c) => c,
            None => panic!("{} was already stopped", self.what),
        }
    }

    /// Its process id.
    pub fn id(&mut self) -> u32 {
        self.child().id()
    }

    /// Panics, naming the process and its exit status, if it has exited.
    pub fn assert_running(&mut self) {
        let what = self.what.clone();
        match self.child().try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!("{what} exited ({status})"),
            Err(e) => panic!("cannot tell whether {what} is running: {e}"),
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`; panics if the
    /// process exits first or nothing listens within [`PATIENCE`].
    pub fn wait_for_port(&mut self, port: u16) {
        let what = format!("{} listens on port {port}", self.what);
        wait_until(&what, PATIENCE, || {
            self.assert_running();
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Sends SIGTERM (unless it has exited already) and waits for the process to exit;
    /// returns its status and whatever it printed to stdout and stderr that was piped.
    pub fn terminate(&mut self) -> Output {
        let what = self.what.clone();
        let mut child = match self.child.take() {
            Some(c) => c,
            None => panic!("{what} was already stopped"),
        };
        // Never signal a process already waited for: its id may belong to another by now.
        if matches!(child.try_wait(), Ok(None)) {
            signal_term(&child);
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {what}: {e}"))
    }

    /// Kills the process (SIGKILL) and waits for it; returns its status.
    pub fn kill(&mut self) -> ExitStatus {
        let what = self.what.clone();
        let mut child = match self.child.take() {
            Some(c) => c,
            None => panic!("{what} was already stopped"),
        };
        if let Err(e) = child.kill() {
            panic!("cannot kill {what}: {e}");
        }
        child
            .wait()
            .unwrap_or_else(|e| panic!("cannot wait for {what}: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            signal_term(&child);
            let deadline = std::time::Instant::now() + GRACE;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// SIGTERM through kill(1): the workspace forbids `unsafe`, so no libc call.
fn signal_term(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The lines a process writes, read on a thread, so that a test can wait for the next one
/// with a deadline instead of blocking forever.
#[derive(Debug)]
pub struct Lines {
    what: String,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    /// Reads `from` (a child's stdout or stderr) line by line until it ends; `what` names it
    /// in failure messages.
    pub fn spawn(what: impl Into<String>, from: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            what: what.into(),
            rx,
        }
    }

    /// The next line; panics if none comes within [`PATIENCE`] or the output ended.
    pub fn next(&self) -> String {
        match self.rx.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{} printed no line within {PATIENCE:?}", self.what)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{} ended its output before the line waited for", self.what)
            }
        }
    }

    /// The next line that satisfies `wanted`, skipping others; panics like [`Lines::next`].
    pub fn next_matching(&self, mut wanted: impl FnMut(&str) -> bool) -> String {
        loop {
            let line = self.next();
            if wanted(&line) {
                return line;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_process_is_stopped() {
        let mut sleeper = Running::spawn("sleep", Command::new("sleep").arg("600"));
        let pid = sleeper.id();
        drop(sleeper);
        // kill -0 fails once the process is gone (and reaped).
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(!alive, "the process outlived its `Running`");
    }

    #[test]
    fn terminate_sends_sigterm_and_waits() {
        use std::os::unix::process::ExitStatusExt;
        let mut sleeper = Running::spawn("sleep", Command::new("sleep").arg("600"));
        let out = sleeper.terminate();
        assert_eq!(out.status.signal(), Some(15), "{:?}", out.status);
    }

    #[test]
    fn lines_are_read_as_they_come() {
        let mut sh = Running::spawn(
            "sh",
            Command::new("sh")
                .args(["-c", "echo one; echo two; echo three"])
                .stdout(Stdio::piped()),
        );
        let Some(stdout) = sh.child().stdout.take() else {
            panic!("stdout was piped")
        };
        let lines = Lines::spawn("sh", stdout);
        assert_eq!(lines.next(), "one");
        assert_eq!(lines.next_matching(|l| l.starts_with("th")), "three");
    }

    #[test]
    #[should_panic(expected = "false exited")]
    fn waiting_for_a_port_fails_when_the_process_exits() {
        let mut f = Running::spawn("false", &mut Command::new("false"));
        f.wait_for_port(free_port());
    }

    #[test]
    fn input_reaches_stdin() {
        let out = run_with_input(Command::new("tr").args(["a-z", "A-Z"]), b"abc");
        assert_eq!(out.stdout, b"ABC");
    }

    #[test]
    #[should_panic(expected = "failed (exit status: 3)")]
    fn run_ok_names_a_failure() {
        run_ok(Command::new("sh").args(["-c", "exit 3"]));
    }
}
