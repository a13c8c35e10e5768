//! A run's newest checkpoint damaged — its safetensors files (values,
//! shapes, dtypes, tensors, headers), state.json (fields), config.toml,
//! bytes, missing files, bogus checkpoint directories — then read by
//! `train --resume` and `eval`.

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use klrl_envs::Registry;

use super::cases;
use super::configs::damage_config;
use super::harness::{binary, in_process, Outcome, Tally};
use super::runs::{interrupted_run, TINY_PPO, TINY_TRPO};
use super::SUBPROCESS_EVERY;
use crate::seeded::{copy_tree, scratch_dir, Rng};

/// One tensor of a safetensors file: name, dtype (`F32`, `F64`, …), shape,
/// bytes.
pub type Tensor = (String, String, Vec<usize>, Vec<u8>);

pub fn st_read(bytes: &[u8]) -> Option<Vec<Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let mut v: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Some(v)
}

/// A safetensors file of `tensors`, written by hand so that it may say
/// anything (a dtype or shape the bytes do not fit).
pub fn st_write(tensors: &[Tensor]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut off = 0;
    for (n, d, s, b) in tensors {
        header.insert(
            n.clone(),
            serde_json::json!({"dtype": d, "shape": s, "data_offsets": [off, off + b.len()]}),
        );
        off += b.len();
    }
    st_with_header(&serde_json::to_vec(&header).unwrap(), tensors)
}

pub fn st_with_header(header: &[u8], tensors: &[Tensor]) -> Vec<u8> {
    let mut h = header.to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for t in tensors {
        out.extend(&t.3);
    }
    out
}

pub fn element_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" | "I32" | "U32" => Some(4),
        "F64" | "I64" | "U64" => Some(8),
        _ => None,
    }
}

/// A safetensors file with one tensor's value, shape, dtype, name or
/// presence changed, or its header damaged.
pub fn damage_safetensors(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let Some(mut ts) = st_read(bytes) else {
        return rng.bytes(64);
    };
    if ts.is_empty() {
        return st_write(&ts);
    }
    let i = rng.below(ts.len());
    match rng.below(10) {
        0..=2 => {
            // A value no parameter or statistic may have.
            let (_, d, _, b) = &mut ts[i];
            if let (Some(size), false) = (element_size(d), b.is_empty()) {
                let k = rng.below(b.len() / size) * size;
                let v: f64 = *rng.pick(&[
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    1e300,
                    -1e300,
                    -0.0,
                    5e-324,
                    f64::MAX,
                    -1.0,
                ]);
                if size == 4 {
                    b[k..k + 4].copy_from_slice(&(v as f32).to_le_bytes());
                } else {
                    b[k..k + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        3 | 4 => {
            // Another shape, the bytes to match.
            let (_, d, s, b) = &mut ts[i];
            let size = element_size(d).unwrap_or(1);
            let n = b.len() / size;
            match rng.below(6) {
                0 if n > 0 => {
                    b.truncate((n - 1) * size);
                    *s = vec![n - 1];
                }
                1 => {
                    b.extend(vec![0; size]);
                    *s = vec![n + 1];
                }
                2 if s.len() == 2 => s.reverse(),
                3 => *s = vec![n],
                4 => s.insert(0, 1),
                _ => {
                    b.clear();
                    *s = vec![0];
                }
            }
        }
        5 => {
            // Another dtype: the same bytes relabelled, or converted.
            let (_, d, s, b) = &mut ts[i];
            let new = match (d.as_str(), rng.below(2)) {
                ("F32", 0) => "I32".to_string(),
                ("F64", 0) => "U64".to_string(),
                ("F32", _) => {
                    *b = b
                        .chunks_exact(4)
                        .flat_map(|c| {
                            f64::from(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                        })
                        .collect();
                    "F64".to_string()
                }
                ("F64", _) => {
                    *b = b
                        .chunks_exact(8)
                        .flat_map(|c| {
                            (f64::from_le_bytes(c.try_into().unwrap()) as f32).to_le_bytes()
                        })
                        .collect();
                    "F32".to_string()
                }
                _ => "BOOL".to_string(),
            };
            *d = new;
            if d == "BOOL" {
                *s = vec![b.len()];
            }
        }
        6 => {
            ts.remove(i);
        }
        7 => {
            let extra = (
                format!("{}x", ts[i].0),
                ts[i].1.clone(),
                ts[i].2.clone(),
                ts[i].3.clone(),
            );
            if rng.chance(0.5) {
                ts[i].0.push_str("_renamed");
            } else {
                ts.push(extra);
            }
        }
        8 => {
            // A header that promises what the file does not hold.
            let header: &[u8] = match rng.below(5) {
                0 => b"{",
                1 => b"[]",
                2 => b"null",
                3 => br#"{"x":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4]}}"#,
                _ => br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
            };
            return st_with_header(header, &ts);
        }
        _ => {
            // A header length that is not the header's.
            let mut b = bytes.to_vec();
            let len: u64 = *rng.pick(&[u64::MAX, 0, b.len() as u64 + 1000, 1 << 40, 7]);
            b[..8].copy_from_slice(&len.to_le_bytes());
            return b;
        }
    }
    st_write(&ts)
}

/// state.json with one field removed, of the wrong type, or out of range.
pub fn damage_state_json(rng: &mut Rng, text: &str) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
        return rng.bytes(64);
    };
    fn leaves(v: &serde_json::Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| {
                let mut p = path.clone();
                p.push(k.clone());
                out.push(p.clone());
                leaves(x, p, out);
            }),
            serde_json::Value::Array(a) => a.iter().enumerate().take(4).for_each(|(i, x)| {
                let mut p = path.clone();
                p.push(i.to_string());
                out.push(p.clone());
                leaves(x, p, out);
            }),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    leaves(&v, Vec::new(), &mut paths);
    if rng.chance(0.5) {
        // The fields the loader checks, with values that do not fit.
        let (key, value) = rng
            .pick(&[
                ("format", serde_json::json!(2)),
                ("env", serde_json::json!("Acrobot-v1")),
                ("env", serde_json::json!("Nope-v0")),
                ("algo", serde_json::json!("trpo")),
                ("algo", serde_json::json!("ppo")),
                ("algo", serde_json::json!("sac")),
                ("obs_dim", serde_json::json!(5)),
                ("policy_params", serde_json::json!(59)),
                ("value_params", serde_json::json!(0)),
                ("n_envs", serde_json::json!(3)),
                ("n_envs", serde_json::json!(0)),
                ("updates", serde_json::json!(u64::MAX)),
                ("updates", serde_json::json!(0)),
                ("env_steps", serde_json::json!(u64::MAX)),
                ("env_steps", serde_json::json!(769)),
                ("episodes", serde_json::json!(u64::MAX)),
                ("tb_segments", serde_json::json!(u32::MAX)),
                ("tb_segments", serde_json::json!(4_294_967_296u64)),
                ("collector_primed", serde_json::json!(false)),
                ("env_snapshot", serde_json::Value::Null),
                (
                    "rng",
                    serde_json::json!({"seed": [1, 2, 3], "stream": 0, "word_pos": [0, 0]}),
                ),
            ])
            .clone();
        v[key] = value;
    } else if !paths.is_empty() {
        let path = rng.pick(&paths).clone();
        let (last, parent) = path.split_last().unwrap();
        let mut p = &mut v;
        for k in parent {
            p = match p {
                serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                other => &mut other[k.as_str()],
            };
        }
        let replacement = rng
            .pick(&[
                serde_json::Value::Null,
                serde_json::json!(-1),
                serde_json::json!(1.5),
                serde_json::json!("x"),
                serde_json::json!(true),
                serde_json::json!([]),
                serde_json::json!({}),
                serde_json::json!(u64::MAX),
                serde_json::json!(1e300),
                serde_json::json!(i64::MIN),
            ])
            .clone();
        match p {
            serde_json::Value::Object(m) if rng.chance(0.3) => {
                m.remove(last);
            }
            serde_json::Value::Array(a) => {
                let k: usize = last.parse().unwrap();
                match rng.below(3) {
                    0 => {
                        a.remove(k);
                    }
                    1 => a.push(serde_json::json!(0)),
                    _ => a[k] = replacement,
                }
            }
            other => other[last.as_str()] = replacement,
        }
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Bytes damaged without regard to the format.
pub fn damage_bytes(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let n = b.len();
    match rng.below(6) {
        0 => b.truncate(rng.below(n + 1)),
        1 if n > 0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let at = rng.below(n + 1);
            let len = 1 + rng.below(64);
            let junk = rng.bytes(len);
            let end = (at + junk.len()).min(n);
            b.splice(at..end, junk);
        }
        3 => {
            let len = 1 + rng.below(64);
            b.extend(rng.bytes(len));
        }
        4 => b.clear(),
        _ => b = [bytes, bytes].concat(),
    }
    b
}

/// Damage the newest checkpoint of `run` (or the checkpoints directory);
/// returns what was done.
pub fn damage_checkpoint(rng: &mut Rng, run: &Path) -> String {
    let ckpts = run.join("checkpoints");
    let newest = ckpts.join("update-00000005");
    const FILES: [&str; 5] = [
        "state.json",
        "policy.safetensors",
        "value.safetensors",
        "state.safetensors",
        "config.toml",
    ];
    let file = *rng.pick(&FILES);
    let path = newest.join(file);
    let bytes = std::fs::read(&path).unwrap();
    match rng.below(20) {
        0..=4 => {
            std::fs::write(&path, damage_bytes(rng, &bytes)).unwrap();
            format!("{file}: bytes")
        }
        5..=10 if file.ends_with(".safetensors") => {
            std::fs::write(&path, damage_safetensors(rng, &bytes)).unwrap();
            format!("{file}: tensors")
        }
        5..=10 if file == "config.toml" => {
            std::fs::write(&path, damage_config(rng, &String::from_utf8_lossy(&bytes))).unwrap();
            format!("{file}: config")
        }
        5..=12 => {
            let path = newest.join("state.json");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, damage_state_json(rng, &text)).unwrap();
            "state.json: fields".into()
        }
        13 | 14 => {
            std::fs::remove_file(&path).unwrap();
            if rng.chance(0.3) {
                std::fs::create_dir(&path).unwrap();
            }
            format!("{file}: missing")
        }
        15 => {
            for f in FILES {
                std::fs::remove_file(newest.join(f)).unwrap();
            }
            "every file missing".into()
        }
        16 => {
            // A newer "checkpoint" that is not one.
            let bogus = ckpts.join(*rng.pick(&[
                "update-99999999",
                "update-00000006",
                "update-18446744073709551615",
            ]));
            if rng.chance(0.5) {
                std::fs::write(&bogus, b"not a directory").unwrap();
            } else {
                std::fs::create_dir(&bogus).unwrap();
                if rng.chance(0.5) {
                    std::fs::copy(newest.join("state.json"), bogus.join("state.json")).unwrap();
                }
            }
            format!("bogus {}", bogus.file_name().unwrap().to_string_lossy())
        }
        17 => {
            std::fs::remove_dir_all(&ckpts).unwrap();
            std::fs::write(&ckpts, b"not a directory").unwrap();
            "checkpoints/ is a file".into()
        }
        18 => {
            // The newest checkpoint's files from the previous one: a
            // consistent but older state under a newer name.
            for f in FILES {
                std::fs::copy(ckpts.join("update-00000004").join(f), newest.join(f)).unwrap();
            }
            "files of update 4 under update 5".into()
        }
        _ => {
            // Files of the other checkpoint of the same run mixed in.
            std::fs::copy(ckpts.join("update-00000004").join(file), &path).unwrap();
            format!("{file} from update 4")
        }
    }
}

pub fn fuzz() -> Tally {
    let start = Instant::now();
    let mut t = Tally::new("checkpoints");
    let registry = Registry::builtin();
    let work = scratch_dir("fuzz-checkpoint");
    let bases = [
        interrupted_run(&work, "ppo", TINY_PPO),
        interrupted_run(&work, "trpo", TINY_TRPO),
    ];
    let mut rng = Rng::new(0x6b6c_726c_0005);
    for case in 0..cases(1500) {
        let base = rng.pick(&bases).clone();
        let run = work.join(format!("case-{case}"));
        copy_tree(&base, &run);
        let damage = damage_checkpoint(&mut rng, &run);
        let ckpt = run.join("checkpoints/update-00000005");
        let resume = rng.chance(0.5);
        t.kind = format!(
            "{} after {damage}",
            if resume { "train --resume" } else { "eval" }
        );
        // A copy as damaged, kept if the case fails and run by the binary:
        // a failed resume may write a checkpoint (of the state it had
        // loaded) before it exits.
        let pristine = work.join(format!("case-{case}-as-damaged"));
        copy_tree(&run, &pristine);
        let (args, what): (Vec<OsString>, String) = if resume {
            (
                vec!["train".into(), "--resume".into(), run.clone().into()],
                format!("train --resume, {damage}"),
            )
        } else {
            let target = if rng.chance(0.7) {
                run.clone()
            } else {
                ckpt.clone()
            };
            (
                vec![
                    "eval".into(),
                    target.into(),
                    "--episodes".into(),
                    "1".into(),
                    "--deterministic".into(),
                ],
                format!("eval, {damage}"),
            )
        };
        let what = format!(
            "{what} (case-{case}, {})",
            base.file_name().unwrap().to_string_lossy()
        );
        let o = in_process(&args);
        t.outcome(case, &what, &o, Some(&pristine));
        let on_copy: Vec<OsString> = args
            .iter()
            .map(|a| {
                a.to_string_lossy()
                    .replace(&format!("case-{case}"), &format!("case-{case}-as-damaged"))
                    .into()
            })
            .collect();
        if o == Outcome::Exit(0) {
            t.accepted += 1;
            t.accepted_run += 1;
        } else {
            let mut message = if resume {
                klrl_runner::Run::resume(&run, &registry).err()
            } else {
                klrl_runner::eval::evaluate(Path::new(&args[1]), 1, true, None, &registry).err()
            }
            .map(|e| e.to_string());
            let sampled = case % SUBPROCESS_EVERY == 1;
            if sampled || message.is_none() {
                // Failed while training, after the checkpoint loaded: the
                // binary on the copy says why.
                let (o, f) = binary(&on_copy, &work);
                t.bad_input_binary(
                    case,
                    &what,
                    &o,
                    &f.stderr,
                    &[&pristine.display().to_string()],
                    Some(&pristine),
                );
                message.get_or_insert(f.stderr);
            }
            // The checkpoint, or the run or checkpoint directory given.
            t.bad_input(
                case,
                &what,
                &o,
                &message.unwrap_or_default(),
                &[&run.display().to_string()],
                Some(&pristine),
            );
        }
        let _ = std::fs::remove_dir_all(&run);
        let _ = std::fs::remove_dir_all(&pristine);
    }
    let _ = std::fs::remove_dir_all(&work);
    t.seconds = start.elapsed().as_secs_f64();
    t
}
