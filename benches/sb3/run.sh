#!/usr/bin/env bash
# Side-by-side timing of klrl and Stable-Baselines3 (see README.md here).
#   benches/sb3/run.sh            full: 6 works, seeds 0–2 (about 15 min on 2 cores)
#   benches/sb3/run.sh --quick    8192 steps per run, seed 0 (about 2 min): checks it works
# Other options go to compare.py (--seeds N, --only WORK[,WORK]).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

# The virtual environment, (re)built when requirements.txt changed.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "creating $venv (stable-baselines3, sb3-contrib, gymnasium, torch from PyPI; ~5 GB, a few minutes)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
    "$venv/bin/python" -c 'import torch, stable_baselines3, sb3_contrib, gymnasium' 
    echo "$want" > "$stamp"
fi

# klrl, release build.
(cd "$root" && cargo build --release --quiet --bin klrl)

exec "$venv/bin/python" "$here/compare.py" --root "$root" "$@"
