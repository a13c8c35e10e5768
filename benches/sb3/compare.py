"""Side-by-side timing of klrl and Stable-Baselines3 on the same work, in one
sitting on one machine. Run through run.sh (which builds klrl and the venv).

For each work (a klrl config and its SB3 equivalent in sb3_run.WORKS):
  1. `klrl bench CONFIG --seed-start S --seeds 1 --eval-episodes E --json`
     --set train.threads=T per seed, the whole process timed from outside; for
     Pendulum E = 10, the deterministic evaluation after training (untimed
     inside the process: not in `wall_s`), else 0;
  2. `python sb3_run.py WORK --seed S --threads T` per seed (T torch threads), the whole
     process timed from outside, model.learn() and train() timed inside; it
     evaluates Pendulum the same way.
Writes a markdown table (results.md, or results-quick.md with --quick) and
the raw numbers (results.json / results-quick.json) next to this file.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# (work key in sb3_run.WORKS, label, kind); kind "run" compares whole runs,
# "update" compares the update phase per update.
WORK_LIST = [
    ("ppo-cartpole-zoo", "PPO CartPole-v1, zoo (8 envs × 32, 20 epochs, batch 256)", "run"),
    ("trpo-cartpole-zoo", "TRPO CartPole-v1, zoo (2 envs × 512, 20 critic updates)", "run"),
    ("ppo-cartpole-sb3-default", "PPO CartPole-v1, SB3 defaults (1 env × 2048, 10 epochs of 64)", "run"),
    ("ppo-pendulum-zoo-gsde", "PPO Pendulum-v1, zoo with gSDE (4 envs × 1024, 10 epochs of 64)", "run"),
    ("trpo-pendulum-zoo-gsde", "TRPO Pendulum-v1, zoo with gSDE (2 envs × 1024, 15 critic updates)", "run"),
    ("ppo-pendulum-256", "PPO Pendulum-v1, 256-256 nets, 1 env × 2048, 10 epochs of 64: update phase **per update**", "update"),
]
QUICK_STEPS = 8192  # divisible by every work's batch: same steps on both sides
EVAL_EPISODES = 10  # the deterministic evaluation after training (Pendulum runs), both sides


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def header_info(root, klrl):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=root)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "crates", "src", "Cargo.toml",
                            "Cargo.lock"], cwd=root).returncode != 0
    versions = {p: metadata.version(p) for p in
                ["stable-baselines3", "sb3-contrib", "gymnasium", "torch", "numpy"]}
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return dict(
        date=sh(["date", "-u"]), cpu=cpu, cores=os.cpu_count(),
        mem_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        klrl_commit=commit + (" (crates/ differ from the commit)" if dirty else ""),
        klrl_binary=os.path.relpath(klrl, root),
        rustc=sh(["rustc", "-V"]), python=platform.python_version(), versions=versions,
        loadavg_start=load,
    )


def klrl_env():
    env = dict(os.environ)
    for k in ("RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"):  # klrl's own threading (train.threads)
        env.pop(k, None)
    return env


def sb3_env(threads):
    env = dict(os.environ)
    # and torch.set_num_threads(threads) inside
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_klrl_bench(klrl, root, config, seed, steps, eval_episodes, threads):
    """One seed in one process (as SB3's), its record from `--json` with the
    process time added; `eval` holds the evaluation when eval_episodes > 0."""
    cmd = [klrl, "bench", config, "--seed-start", str(seed), "--seeds", "1",
           "--eval-episodes", str(eval_episodes), "--json",
           "--set", f"train.threads={threads}"]
    if steps:
        cmd += ["--set", f"train.total_steps={steps}"]
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True, env=klrl_env())
    process_s = time.perf_counter() - t
    (r,) = json.loads(out.stdout)
    r["process_s"] = process_s
    r["cmd"] = " ".join(cmd[1:])
    return r


def run_sb3(work, seed, steps, eval_episodes, threads):
    cmd = [sys.executable, os.path.join(HERE, "sb3_run.py"), work, "--seed", str(seed),
           "--eval-episodes", str(eval_episodes), "--threads", str(threads)]
    if steps:
        cmd += ["--steps", str(steps)]
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=sb3_env(threads))
    process_s = time.perf_counter() - t
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_s"] = process_s
    return r


def rng(values, fmt="{:.2f}"):
    """'mean [min, max]' (or the one value)."""
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    m = sum(v) / len(v)
    if len(v) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} [{fmt.format(min(v))}, {fmt.format(max(v))}]"


def ratio(a, b):
    a = [x for x in a if x is not None]
    b = [x for x in b if x is not None]
    if not a or not b:
        return "–"
    return f"{(sum(b) / len(b)) / (sum(a) / len(a)):.1f}×"


def k(n):
    return f"{n / 1000:.1f}k"


def outcome_cell(runs, evals=None):
    """Learning outcome: steps to the threshold (CartPole) or the
    deterministic evaluation (Pendulum), with the final rolling-20 return."""
    n = len(runs)
    last = rng([r["final"] for r in runs], "{:.0f}")
    if runs[0]["threshold"] is not None:
        st = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        if not st:
            return f"475 not reached (0/{n}); last-20 {last}"
        return f"475 at {rng(st, '{:.0f}')} steps ({len(st)}/{n}); last-20 {last}"
    if evals:
        ev = rng([e["mean_return"] for e in evals if e], "{:.0f}")
        return f"eval {ev}; last-20 {last}"
    return f"last-20 {last}"


def build_tables(info, rows, seeds, quick):
    h = []
    title = "klrl vs Stable-Baselines3, side by side" + (" (QUICK: short runs, not a result)" if quick else "")
    h.append(f"## {title}\n")
    v = info["versions"]
    h.append(f"- date: {info['date']}")
    h.append(f"- machine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB; "
             f"load average at start {info['loadavg_start']}, at end {info['loadavg_end']}")
    h.append(f"- klrl {info['klrl_commit']} (`{info['klrl_binary']}`, release), {info['rustc']}, "
             f"train.threads = {info['threads']}")
    h.append(f"- Python {info['python']}, stable-baselines3 {v['stable-baselines3']}, "
             f"sb3-contrib {v['sb3-contrib']}, gymnasium {v['gymnasium']}, torch {v['torch']} "
             f"(CPU, {info['threads']} thread(s)), numpy {v['numpy']}")
    h.append(f"- seeds {', '.join(map(str, range(seeds)))}; whole run took {info['total_s']:.0f} s; "
             "`benches/sb3/run.sh" + (" --quick" if quick else "") + "`")
    h.append("")
    h.append("Times in seconds, mean [min, max] over the seeds. klrl s: `klrl bench`'s wall time "
             "(building the environments and networks, then training). SB3 s: `model.learn()`. "
             "Process: the whole process from outside, one process per seed (SB3: with Python, "
             "torch and SB3 imports; klrl: `klrl bench --seed-start S --seeds 1`; both with "
             "the evaluation where there is one). "
             "Ratio: SB3 / klrl. The 256-256 row compares the update phase per update instead (klrl: `update_s / updates` from `klrl bench --json`; SB3: the mean time of `train()`), its process columns the whole runs. Outcome: CartPole, the steps until the rolling mean of the last 20 "
             "training episodes first reaches 475 (checked after each update, both sides); "
             "Pendulum, the mean return of a deterministic evaluation over 10 episodes after "
             "training (klrl: `klrl bench --eval-episodes 10`, outside its wall time); last-20: the "
             "rolling mean of the last 20 training episodes at the end.\n")
    h.append("| work | steps klrl / SB3 | klrl s | SB3 s | ratio | klrl process s | SB3 process s | "
             "ratio | klrl outcome | SB3 outcome |")
    h.append("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        kr, sr = row["klrl"], row["sb3"]
        steps = f"{k(kr[0]['steps'])} / {k(sr[0]['steps'])}"
        if row["kind"] == "update":
            ka = [r["update_s"] / r["updates"] for r in kr]
            sa = [r["train_per_update_s"] for r in sr]
        else:
            ka = [r["wall_s"] for r in kr]
            sa = [r["learn_s"] for r in sr]
        kp = [r["process_s"] for r in kr]
        sp = [r["process_s"] for r in sr]
        kout = [dict(final=r["final_return_mean"], threshold=r["threshold"],
                     steps_to_threshold=r["steps_to_threshold"]) for r in kr]
        sout = [dict(final=r["final_return_mean"], threshold=r["threshold"],
                     steps_to_threshold=r["steps_to_threshold"]) for r in sr]
        kev = [r.get("eval") for r in kr] if any(r.get("eval") for r in kr) else None
        sev = [r.get("eval") for r in sr] if any("eval" in r for r in sr) else None
        h.append(f"| {row['label']} | {steps} | {rng(ka, '{:.3f}' if row['kind'] == 'update' else '{:.2f}')} "
                 f"| {rng(sa, '{:.3f}' if row['kind'] == 'update' else '{:.2f}')} | {ratio(ka, sa)} "
                 f"| {rng(kp)} | {rng(sp)} | {ratio(kp, sp)} "
                 f"| {outcome_cell(kout, kev)} | {outcome_cell(sout, sev)} |")
    h.append("")
    h.append("### Per seed\n")
    h.append("| work | seed | klrl s | klrl rollout / update s | klrl to 475 steps (s) | SB3 learn s "
             "| SB3 setup s | SB3 train() s | SB3 to 475 steps (s) | SB3 process s | klrl eval | SB3 eval |")
    h.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for kr, sr in zip(row["klrl"], row["sb3"]):
            def reach(r):
                if r["steps_to_threshold"] is None:
                    return "–"
                return f"{r['steps_to_threshold']} ({r['time_to_threshold_s']:.2f})"

            def ev(e):
                return f"{e['mean_return']:.0f} ± {e['std_return']:.0f}" if e else "–"

            h.append(f"| {row['work']} | {kr['seed']} | {kr['wall_s']:.2f} | {kr['rollout_s']:.2f} / "
                     f"{kr['update_s']:.2f} | {reach(kr)} | {sr['learn_s']:.2f} | {sr['setup_s']:.2f} "
                     f"| {sr['train_s']:.2f} | {reach(sr)} | {sr['process_s']:.2f} "
                     f"| {ev(kr.get('eval'))} | {ev(sr.get('eval'))} |")
    h.append("")
    return "\n".join(h)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True, help="the klrl repository root")
    p.add_argument("--klrl", default=None, help="the klrl binary (default ROOT/target/release/klrl)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per run, seed 0 only")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3, quick 1)")
    p.add_argument("--only", default=None, help="comma-separated work keys (default all)")
    p.add_argument("--threads", type=int, default=2,
                   help="compute threads of each side: klrl's train.threads and SB3's torch "
                        "threads (default 2, both cores of the reference machine)")
    a = p.parse_args()
    root = os.path.abspath(a.root)
    klrl = os.path.abspath(a.klrl or os.path.join(root, "target", "release", "klrl"))
    seeds = a.seeds or (1 if a.quick else 3)
    steps = QUICK_STEPS if a.quick else None
    works = WORK_LIST if not a.only else [w for w in WORK_LIST if w[0] in a.only.split(",")]

    from sb3_run import WORKS

    t0 = time.perf_counter()
    info = header_info(root, klrl)
    info["threads"] = a.threads
    rows = []
    for work, label, kind in works:
        config = WORKS[work]["klrl"]
        # SB3 evaluates the Pendulum runs (sb3_run.py); klrl the same ones.
        eval_episodes = EVAL_EPISODES if WORKS[work]["env"] == "Pendulum-v1" and kind == "run" else 0
        row = dict(work=work, label=label, kind=kind, config=config, klrl=[], sb3=[])
        for s in range(seeds):
            print(f"[{time.perf_counter() - t0:6.0f} s] {work}: klrl bench {config} --seed-start {s}",
                  file=sys.stderr, flush=True)
            row["klrl"].append(run_klrl_bench(klrl, root, config, s, steps, eval_episodes,
                                              a.threads))
        for s in range(seeds):
            print(f"[{time.perf_counter() - t0:6.0f} s] {work}: SB3 seed {s}", file=sys.stderr, flush=True)
            row["sb3"].append(run_sb3(work, s, steps, eval_episodes, a.threads))
        rows.append(row)
    with open("/proc/loadavg") as f:
        info["loadavg_end"] = " ".join(f.read().split()[:3])
    info["total_s"] = time.perf_counter() - t0
    table = build_tables(info, rows, seeds, a.quick)
    stem = "results-quick" if a.quick else "results"
    with open(os.path.join(HERE, stem + ".md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(HERE, stem + ".json"), "w") as f:
        json.dump(dict(info=info, rows=rows), f, indent=1)
    print(table)
    print(f"\nwritten: benches/sb3/{stem}.md, benches/sb3/{stem}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
