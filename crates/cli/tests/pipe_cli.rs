//! A reader that closes `klrl`'s standard output early (`klrl envs | head
//! -1`) ends the program quietly with status 141, never with a panic.

use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    for args in [
        &["envs"][..],
        &["kl", "discrete", "--p", "0.5,0.5", "--q", "0.25,0.75"],
    ] {
        // The read end is closed before klrl starts: its first write fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_klrl"))
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}
