#!/usr/bin/env bash
# Peak memory of `klrl train` against run length (issue 11: "memory flat in
# run length: peak RSS of a 1M-step run within 10 % of a 100k-step run").
#
#   benches/memory.sh                  the three configs below, 100k and 1M steps
#   benches/memory.sh CONFIG...        other configs
#   STEPS="20000 200000" benches/memory.sh   other lengths (the first is the base)
#
# Each run is a whole `klrl train CONFIG --set train.total_steps=N --out TMP`
# (release build; run directory, metrics.csv, TensorBoard, checkpoints and the
# final evaluation as usual), measured by GNU time's maximum resident set size
# (`/usr/bin/time -f %M`; Debian/Ubuntu: `apt-get install time`). Prints a
# markdown table: max RSS per length and the growth of the longest over the
# first. About 6 minutes on the 2-core machine (most of it the 1M-step runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ ! -x /usr/bin/time ]; then
    echo "benches/memory.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2
    exit 2
fi
if [ "$#" -gt 0 ]; then
    configs=("$@")
else
    configs=(configs/cartpole-ppo-clip.toml configs/cartpole-trpo.toml configs/pendulum-ppo-kl-adaptive.toml)
fi
read -r -a steps <<< "${STEPS:-100000 1000000}"

cargo build --release --quiet --bin klrl
klrl="$root/target/release/klrl"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "klrl $(git rev-parse --short=12 HEAD), $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
head="| config |"
rule="|---|"
for s in "${steps[@]}"; do
    head="$head max RSS, $s steps (MiB) | wall s |"
    rule="$rule---|---|"
done
echo "$head growth |"
echo "$rule---|"
for c in "${configs[@]}"; do
    row="| $c |"
    first="" last=""
    for s in "${steps[@]}"; do
        "/usr/bin/time" -f '%M %e' -o "$tmp/time" \
            "$klrl" train "$c" --set "train.total_steps=$s" --out "$tmp/run" > "$tmp/log" 2>&1 \
            || { echo "klrl train $c (train.total_steps=$s) failed:" >&2; tail -5 "$tmp/log" >&2; exit 1; }
        rm -rf "$tmp/run"
        read -r kib wall < <(tail -1 "$tmp/time")
        mib=$(awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }')
        row="$row $mib | $wall |"
        first="${first:-$kib}"
        last="$kib"
    done
    growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%+.1f %%", 100 * (b - a) / a }')
    echo "$row $growth |"
done
