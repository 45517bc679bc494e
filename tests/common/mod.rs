//! Helpers shared by the integration tests: run the binary, read its output.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every PNG under `dirs` (relative to the repository), sorted; at least one.
pub fn pngs(dirs: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "png") {
                out.push(path);
            }
        }
    }
    let mut out = vec![];
    for dir in dirs {
        walk(&root().join(dir), &mut out);
    }
    out.sort();
    assert!(!out.is_empty(), "no frames under {dirs:?}");
    out
}

/// The binary, run from the repository. Under `MCGATE_TEST_RUNNER` (a program and its
/// arguments, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`) it runs through that program:
/// a cross-built test under qemu-user cannot exec the cross-built binary by itself.
pub fn command() -> Command {
    let binary = env!("CARGO_BIN_EXE_mcgate");
    let runner = std::env::var("MCGATE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command.current_dir(root());
    command
}

pub fn mcgate(args: &[&str]) -> Output {
    command().args(args).output().expect("runs mcgate")
}

/// `gate models/mnist - --width 28 --height 28 --seed 1`: raw MNIST-size frames on stdin.
pub const RAW_MNIST: [&str; 9] = [
    "gate",
    "models/mnist",
    "-",
    "--width",
    "28",
    "--height",
    "28",
    "--seed",
    "1",
];

/// Starts mcgate with stdin, stdout and stderr piped, for tests that talk to it as it runs.
pub fn spawn_mcgate(args: &[&str]) -> Child {
    command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs mcgate")
}

pub fn mcgate_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs mcgate");
    // A gate that refuses before reading stdin (a bad card, say) closes it: its output is
    // what the test checks, not the write.
    match child.stdin.take().unwrap().write_all(input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

pub fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A one-line error on stderr (logs aside), no panic.
pub fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {err}");
    assert!(errors[0].contains(needle), "{needle:?} not in {err}");
}

pub fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto on `127.0.0.1:port` (Debian's; the test command installs it), stopped when
/// dropped.
pub struct Broker(Child);

impl Broker {
    pub fn start(port: u16) -> Broker {
        Broker::run(&["-p", &port.to_string()], port)
    }

    /// With the configuration file `config`, listening (at least) on `port`.
    pub fn with_config(config: &std::path::Path, port: u16) -> Broker {
        Broker::run(&["-c", config.to_str().unwrap()], port)
    }

    fn run(args: &[&str], port: u16) -> Broker {
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let program = match std::path::Path::new("/usr/sbin/mosquitto").exists() {
            true => "/usr/sbin/mosquitto",
            false => "mosquitto",
        };
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian: mosquitto; the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker(child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Broker {
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which it still is until wait().
        unsafe { libc::kill(self.0.id() as libc::pid_t, signal) };
    }
}
