//! `klrl`: train, evaluate and compare KL-constrained policy optimisation runs,
//! list and check environments, and compute KL divergences from the command
//! line. The program is the library `klrl_cli` run with the built-in
//! environments; a program of your own can run it with its own (see
//! `klrl_cli::run`).

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: candle allocates a fresh buffer for
/// every tensor op, and glibc keeps giving freed memory back to the OS and
/// faulting it in again. `klrl bench` PPO-zoo (seed 0, 3 interleaved runs):
/// 2.72–2.78 s CPU with mimalloc, 3.0–3.1 s user plus up to 0.5 s system
/// with glibc, 3.05 s with glibc's trim/top-pad/mmap thresholds raised.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    klrl_cli::run(klrl_envs::Registry::builtin())
}
