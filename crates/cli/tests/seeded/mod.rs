//! What the fuzz and kill-point tests share: a seeded random generator (so
//! every run of the tests draws the same cases and a failure can be
//! replayed), and the `klrl` binary run with a time limit. Each test file
//! uses some of these (hence `dead_code` allowed: every test file is its own
//! crate).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast and good enough to
/// pick test cases; the tests need reproducibility, not cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// How a process run with a time limit ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (`None`: ended by a signal, or killed at the time limit).
    pub code: Option<i32>,
    /// Whether it was killed at the time limit.
    pub timed_out: bool,
    /// Standard output, as text.
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Wait for `child` (spawned with piped stdout and stderr) for at most
/// `limit`, then SIGKILL it.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Finished {
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for klrl") {
            break s;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for klrl");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let text = |h: JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap()).to_string();
    Finished {
        code: status.code(),
        timed_out,
        stdout: text(out),
        stderr: text(err),
    }
}

/// Run the `klrl` binary with `args` in `cwd` (one compute thread), killed
/// after `limit`.
pub fn klrl_with_limit<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    cwd: &Path,
    limit: Duration,
) -> Finished {
    let child = Command::new(env!("CARGO_BIN_EXE_klrl"))
        .args(args)
        .current_dir(cwd)
        .env("RAYON_NUM_THREADS", "1")
        .env("CANDLE_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start klrl");
    wait_with_limit(child, limit)
}

/// Copy the directory tree `from` to `to` (created).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh, empty directory for many short runs: in memory (`/dev/shm`)
/// where there is one, since every checkpoint fsyncs its files and on a disk
/// that costs far more than the run itself; else under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let leaf = format!("klrl-cli-{name}-{}-{nanos}", std::process::id());
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::create_dir(shm.join(&leaf)).is_ok() {
        return shm.join(leaf);
    }
    let d = std::env::temp_dir().join(leaf);
    std::fs::create_dir_all(&d).unwrap();
    d
}
