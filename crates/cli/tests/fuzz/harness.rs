//! Running one case — in this process through `klrl_cli::run_with_args`
//! (its own thread, panics caught, a time limit), or as the real binary —
//! and tallying what the cases of a surface did.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Mutex};

use klrl_envs::Registry;

use super::CASE_LIMIT;
use crate::seeded::{copy_tree, klrl_with_limit, Finished};

/// How one run of the program ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It returned this exit status.
    Exit(i32),
    /// It panicked (in this process), or exited with 101 / printed
    /// "panicked" (the binary); the message.
    Panicked(String),
    /// It was still running after [`CASE_LIMIT`].
    Hung,
    /// The binary died from a signal (a crash: abort, stack overflow).
    Crashed,
}

/// `run_with_args` sets process-wide state (the panic hook, the compute
/// thread variables, the Ctrl-C handler): one in-process run at a time.
static IN_PROCESS: Mutex<()> = Mutex::new(());

pub fn exit_status(code: ExitCode) -> i32 {
    (0..=255u8)
        .find(|&k| ExitCode::from(k) == code)
        .map_or(-1, i32::from)
}

pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-text panic payload)".into())
}

/// `klrl ARGS` in this process: on a thread of its own with a large stack,
/// panics caught, given up on after [`CASE_LIMIT`] (the thread is left
/// behind; the test fails).
pub fn in_process<S: Into<OsString> + Clone>(args: &[S]) -> Outcome {
    let _one = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let mut argv: Vec<OsString> = vec!["klrl".into()];
    argv.extend(args.iter().cloned().map(Into::into));
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| {
                klrl_cli::run_with_args(Registry::builtin(), argv)
            }));
            let _ = tx.send(r.map_err(|p| panic_message(&*p)));
        })
        .expect("spawn a case thread");
    let outcome = match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(code)) => Outcome::Exit(exit_status(code)),
        Ok(Err(msg)) => Outcome::Panicked(msg),
        Err(_) => Outcome::Hung,
    };
    // Each run_with_args wraps the panic hook it finds in one of its own
    // (for a closed stdout); back to the default, so that thousands of runs
    // do not nest thousands of hooks.
    drop(std::panic::take_hook());
    outcome
}

/// The real binary, in `cwd`.
pub fn binary<S: AsRef<std::ffi::OsStr>>(args: &[S], cwd: &Path) -> (Outcome, Finished) {
    let f = klrl_with_limit(args, cwd, CASE_LIMIT);
    let outcome = if f.timed_out {
        Outcome::Hung
    } else if f.code == Some(101) || f.stderr.contains("panicked") {
        Outcome::Panicked(f.stderr.clone())
    } else {
        match f.code {
            Some(c) => Outcome::Exit(c),
            None => Outcome::Crashed,
        }
    };
    (outcome, f)
}

/// The cases of one surface and what went wrong with them.
#[derive(Default)]
pub struct Tally {
    /// Surface name.
    pub name: &'static str,
    /// Bad inputs run (the program must reject them).
    pub bad: usize,
    /// Damaged inputs the program accepted (still valid).
    pub accepted: usize,
    /// Of those, how many were run to the end.
    pub accepted_run: usize,
    /// Runs of the real binary among the cases.
    pub subprocess: usize,
    /// Exit statuses of the bad inputs.
    pub statuses: BTreeMap<String, usize>,
    /// Panics, hangs, crashes and unexpected statuses of any input:
    /// (class, examples).
    pub robustness: BTreeMap<String, (usize, Vec<String>)>,
    /// Bad inputs that did not exit 2, or whose message does not name the
    /// problem: (class, examples).
    pub reporting: BTreeMap<String, (usize, Vec<String>)>,
    /// Observations reported but not asserted: (class, examples).
    pub info: BTreeMap<String, (usize, Vec<String>)>,
    /// What kind of damage the current case has, prefixed to the classes of
    /// its failures (empty: one class per failure).
    pub kind: String,
    /// Where failing inputs are kept.
    pub keep: PathBuf,
    /// Wall time of the surface.
    pub seconds: f64,
}

pub fn note(map: &mut BTreeMap<String, (usize, Vec<String>)>, class: String, example: String) {
    let e = map.entry(class).or_default();
    e.0 += 1;
    if e.1.len() < examples() {
        e.1.push(example);
    }
}

/// Examples kept per class of failure (`KLRL_FUZZ_EXAMPLES`, default 4).
fn examples() -> usize {
    std::env::var("KLRL_FUZZ_EXAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
}

/// Whether a failure of `class` will be one of its examples (only those
/// keep their input).
fn is_example(map: &BTreeMap<String, (usize, Vec<String>)>, class: &str) -> bool {
    map.get(class).is_none_or(|e| e.1.len() < examples())
}

impl Tally {
    pub fn new(name: &'static str) -> Self {
        let keep = std::env::temp_dir().join(format!(
            "klrl-fuzz-failures-{}",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ));
        let _ = std::fs::remove_dir_all(&keep);
        Tally {
            name,
            keep,
            ..Default::default()
        }
    }

    /// Keep a failing input (a file or directory) for replay; its path.
    pub fn keep_input(&self, case: usize, input: &Path) -> String {
        let to = self.keep.join(format!("case-{case}"));
        let _ = std::fs::remove_dir_all(&to);
        if input.is_dir() {
            copy_tree(input, &to);
        } else if input.is_file() {
            std::fs::create_dir_all(&to).unwrap();
            let _ = std::fs::copy(input, to.join(input.file_name().unwrap()));
        }
        to.display().to_string()
    }

    /// Record how a run ended: panics, hangs and crashes are robustness
    /// failures for any input; a status other than 0, 1 or 2 too.
    pub fn outcome(&mut self, case: usize, what: &str, outcome: &Outcome, input: Option<&Path>) {
        let class = match outcome {
            Outcome::Exit(0..=2) => return,
            Outcome::Exit(c) => format!("exit status {c}"),
            Outcome::Panicked(_) => "panic".into(),
            Outcome::Hung => "hang".into(),
            Outcome::Crashed => "killed by a signal".into(),
        };
        let message = match outcome {
            Outcome::Panicked(m) => format!(": {}", first_lines(m, 6)),
            _ => String::new(),
        };
        let kept = if is_example(&self.robustness, &class) {
            self.kept(case, input)
        } else {
            String::new()
        };
        note(
            &mut self.robustness,
            class,
            format!("case {case}: {what}{message}{kept}"),
        );
    }

    /// " (input kept in DIR)" for a failing case.
    pub fn kept(&self, case: usize, input: Option<&Path>) -> String {
        input.map_or(String::new(), |p| {
            format!(" (input kept in {})", self.keep_input(case, p))
        })
    }

    /// A bad input: it must exit 2 with `message` naming one of `names`.
    pub fn bad_input(
        &mut self,
        case: usize,
        what: &str,
        outcome: &Outcome,
        message: &str,
        names: &[&str],
        input: Option<&Path>,
    ) {
        self.bad += 1;
        self.check_rejected(case, what, "", outcome, message, names, input);
    }

    /// The same bad input again, run as the real binary (`message`: its
    /// stderr).
    pub fn bad_input_binary(
        &mut self,
        case: usize,
        what: &str,
        outcome: &Outcome,
        message: &str,
        names: &[&str],
        input: Option<&Path>,
    ) {
        self.subprocess += 1;
        let what = format!("{what} (binary)");
        self.check_rejected(case, &what, "binary ", outcome, message, names, input);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_rejected(
        &mut self,
        case: usize,
        what: &str,
        by: &str,
        outcome: &Outcome,
        message: &str,
        names: &[&str],
        input: Option<&Path>,
    ) {
        let status = match outcome {
            Outcome::Exit(c) => format!("exit {c}"),
            Outcome::Panicked(_) => "panic".into(),
            Outcome::Hung => "hang".into(),
            Outcome::Crashed => "signal".into(),
        };
        *self.statuses.entry(format!("{by}{status}")).or_default() += 1;
        self.outcome(case, what, outcome, input);
        if !matches!(outcome, Outcome::Exit(_)) {
            return;
        }
        let class = if *outcome != Outcome::Exit(2) {
            format!("{status} instead of exit 2")
        } else if message.trim().is_empty() {
            "no message".into()
        } else if !names.iter().any(|n| !n.is_empty() && message.contains(n)) {
            "message names none of the inputs".into()
        } else {
            return;
        };
        let class = if self.kind.is_empty() {
            class
        } else {
            format!("{}: {class}", self.kind)
        };
        let kept = if is_example(&self.reporting, &class) {
            self.kept(case, input)
        } else {
            String::new()
        };
        note(
            &mut self.reporting,
            class,
            format!(
                "case {case}: {what}: `{}` (expected to name one of {names:?}){kept}",
                first_lines(message, 2)
            ),
        );
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} bad inputs ({}), {} damaged inputs accepted ({} run), {} runs of the binary, {:.1} s",
            self.name,
            self.bad,
            self.statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.accepted,
            self.accepted_run,
            self.subprocess,
            self.seconds
        );
        for (title, map) in [
            ("robustness", &self.robustness),
            ("reporting", &self.reporting),
            ("note", &self.info),
        ] {
            for (class, (n, examples)) in map {
                let _ = write!(s, "\n  {title}: {class}: {n} cases");
                for e in examples {
                    let _ = write!(s, "\n    {e}");
                }
            }
        }
        s
    }

    /// Print the summary, and keep it in `klrl-fuzz-summary-<surface>.txt`
    /// in the temporary directory.
    pub fn print(&self) {
        let text = self.summary();
        eprintln!("{text}");
        let _ = std::fs::write(
            self.keep.with_file_name(format!(
                "klrl-fuzz-summary-{}.txt",
                self.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            )),
            text + "\n",
        );
    }

    pub fn assert_robust(&self) {
        self.print();
        assert!(
            self.robustness.is_empty(),
            "panics, hangs or crashes:\n{}",
            self.summary()
        );
    }

    pub fn assert_reported(&self) {
        self.print();
        assert!(
            self.reporting.is_empty(),
            "bad inputs not rejected with exit status 2 and a message naming them:\n{}",
            self.summary()
        );
    }
}

pub fn first_lines(s: &str, n: usize) -> String {
    let t: Vec<&str> = s.trim().lines().take(n).collect();
    let mut t = t.join(" | ");
    if t.len() > 400 {
        let mut cut = 400;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push('…');
    }
    t
}
