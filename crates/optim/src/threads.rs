//! How many compute threads a run uses (`train.threads`): a count (1 by
//! default), or `"auto"`.
//!
//! The trainer's parallelism is two-way: PPO and vanilla PG compute the
//! value network's gradient beside the policy's and step Adam in two
//! halves; TRPO and NPG fit the critic beside the Fisher products and line
//! search. A third thread would only poll for work
//! ([`crate::keep_warm`]), so `"auto"` is the machine's cores, at most 2.
//! Results are bit-identical for any count (`tests/threads.rs`), so the
//! choice changes speed only.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Most compute threads a config may ask for (`train.threads`).
pub const MAX_THREADS: usize = 1024;

/// Most threads `"auto"` takes: the trainer's two-way parallelism.
pub const AUTO_MAX: usize = 2;

/// `train.threads`: TOML `"auto"` or a count (e.g. `threads = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The machine's cores, at most [`AUTO_MAX`].
    Auto,
    /// Exactly this many (1 ..= [`MAX_THREADS`], checked by
    /// [`crate::ExperimentConfig::validate`]).
    Count(usize),
}

impl Threads {
    /// The thread count for a run that has `cores` cores to itself:
    /// `Count(n)` → n, `Auto` → `cores` clamped to `1 ..= AUTO_MAX`.
    pub fn resolve(self, cores: usize) -> usize {
        match self {
            Threads::Count(n) => n,
            Threads::Auto => cores.clamp(1, AUTO_MAX),
        }
    }

    /// [`Threads::resolve`] with this machine's cores
    /// (`std::thread::available_parallelism`, 1 if unknown).
    pub fn resolve_here(self) -> usize {
        self.resolve(available_cores())
    }
}

/// The cores this process may use (`std::thread::available_parallelism`:
/// the affinity mask and cgroup quota count), 1 if unknown.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threads::Auto => f.write_str("\"auto\""),
            Threads::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Threads {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Threads::Auto => s.serialize_str("auto"),
            Threads::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Threads;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a thread count (an integer) or \"auto\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threads, E> {
                // Out-of-range counts (0, too many) are kept and refused by
                // `validate`, which names the field; negatives cannot be a
                // count at all.
                usize::try_from(v)
                    .map(Threads::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Threads, E> {
                usize::try_from(v)
                    .map(Threads::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Threads, E> {
                match v {
                    "auto" => Ok(Threads::Auto),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct T {
        threads: Threads,
    }

    fn parse(s: &str) -> std::result::Result<Threads, String> {
        toml::from_str::<T>(s)
            .map(|t| t.threads)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_auto_and_counts_and_refuses_the_rest() {
        assert_eq!(parse("threads = \"auto\""), Ok(Threads::Auto));
        assert_eq!(parse("threads = 1"), Ok(Threads::Count(1)));
        assert_eq!(parse("threads = 3"), Ok(Threads::Count(3)));
        // kept for `validate` to refuse with the field's name
        assert_eq!(parse("threads = 0"), Ok(Threads::Count(0)));
        for bad in [
            "threads = -1",
            "threads = \"two\"",
            "threads = 1.5",
            "threads = true",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.contains("a thread count (an integer) or \"auto\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn round_trips_through_toml() {
        for t in [Threads::Auto, Threads::Count(1), Threads::Count(7)] {
            let s = toml::to_string(&T { threads: t }).expect("serialise");
            assert_eq!(
                toml::from_str::<T>(&s).expect("parse"),
                T { threads: t },
                "{s}"
            );
        }
        assert_eq!(
            toml::to_string(&T {
                threads: Threads::Auto
            })
            .expect("serialise"),
            "threads = \"auto\"\n"
        );
    }

    #[test]
    fn auto_takes_the_cores_up_to_two_and_counts_are_kept() {
        assert_eq!(Threads::Auto.resolve(0), 1);
        assert_eq!(Threads::Auto.resolve(1), 1);
        assert_eq!(Threads::Auto.resolve(2), 2);
        assert_eq!(Threads::Auto.resolve(64), 2);
        assert_eq!(Threads::Count(1).resolve(64), 1);
        assert_eq!(Threads::Count(5).resolve(2), 5);
        let here = Threads::Auto.resolve_here();
        assert!((1..=AUTO_MAX).contains(&here) && here <= available_cores());
    }
}
