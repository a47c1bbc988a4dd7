#!/usr/bin/env bash
# Drive `make libero90` on a GPU host where one command may run only minutes (a session's limit) but a
# process in its own session (setsid) runs on.
#
#   source <bundle prefix>/env.sh                      # after tools/install_bundle.sh
#   bash tools/libero90_host.sh start N=20 STEPS=6000   # copy the repo to $WORK, start the preset there
#   bash tools/libero90_host.sh wait 540                # up to 540 s: the stage reached, the log's tail
#   bash tools/libero90_host.sh pack "$OUT"             # metrics, dvc.lock, params, report, log -> one tarball,
#                                                       # and the DVC experiments as a git bundle
#   bash tools/libero90_host.sh export "$OUT" libero90  # the trained policy as checkpoints/libero90 (bf16 EMA,
#                                                       # <= 64 MiB) in 15 MiB parts: a call brings back <= 16 MiB
#                                                       # a file; `cat libero90.tar.part-* | tar -x` rejoins it
#
# Why a copy: the preset rewrites params.yaml, dvc.lock and metrics/ while it runs; a session tool that
# syncs the repository before each command would overwrite them under the running pipeline. $WORK (default
# /root/libero90) is outside that tree. `start` again after the process died resumes: every stage resumes
# (collect/eval cache each episode, train restarts from models/train_state.pt; DVC skips finished stages).
# TARGET= runs another make target the same way, e.g. TARGET=experts-host WORK=/root/experts (the expert's
# tables beside the preset); `pack` names its tarball after $WORK.
set -euo pipefail
cmd=${1:?usage: libero90_host.sh start [make vars] | status | wait SECONDS | pack DIR}
shift || true
WORK=${WORK:-/root/libero90}
STATE=$WORK/.host  # log, pid, exit code, python shim: ignored by git in the copy
LOG=$STATE/libero90.log

running() { [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }

status() {
  if running; then echo "state: running (pid $(cat "$STATE/pid"))"
  elif [ -f "$STATE/rc" ]; then echo "state: finished, exit $(cat "$STATE/rc")"
  else echo "state: not running"; fi
  [ -f "$LOG" ] || return 0
  grep -o "Running stage '[a-z]*'" "$LOG" | tail -1 || true
  for m in "$WORK"/metrics/{collect,extract,scale,windows,train,eval}.json; do
    [ -f "$m" ] && python - "$m" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  {sys.argv[1].rsplit('/', 1)[1]}: stage_wall_s={d.get('stage_wall_s')}")
EOF
  done
  tr '\r' '\n' <"$LOG" | grep -v "robosuite WARNING\|^$" | tail -n "${TAIL:-8}" | cut -c1-240
}

case "$cmd" in
  start)
    command -v dvc >/dev/null || { echo "dvc not found: source the bundle's env.sh first" >&2; exit 2; }
    if running; then echo "already running"; status; exit 0; fi
    if [ ! -d "$WORK" ]; then
      mkdir -p "$(dirname "$WORK")"
      mkdir -p "$WORK"  # the repository without carried bundle parts or local data
      tar --exclude='./.dev-*' --exclude=./data --exclude=./.bundle --exclude=./.venv --exclude=./dist -cf - . | tar -C "$WORK" -xf -
      if [ ! -d "$WORK/.git" ]; then  # a copy without history: DVC experiments need a git repository
        (cd "$WORK" && git init -q && git add -A && git -c user.name=libero-dp -c user.email=libero-dp@localhost \
          commit -qm "snapshot for the libero90 preset")
      fi
    fi
    mkdir -p "$STATE" && rm -f "$STATE/rc"
    grep -qx ".host/" "$WORK/.git/info/exclude" 2>/dev/null || echo ".host/" >>"$WORK/.git/info/exclude"
    cd "$WORK"
    export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"  # this copy's libero_dp first
    if ! command -v python >/dev/null; then  # dvc.yaml runs `python stages/...`; some hosts have only python3
      mkdir -p "$STATE/bin" && ln -sf "${LIBERO_DP_PYTHON:-$(command -v python3)}" "$STATE/bin/python"
      export PATH="$STATE/bin:$PATH"
    fi
    export GIT_AUTHOR_NAME=libero-dp GIT_AUTHOR_EMAIL=libero-dp@localhost
    export GIT_COMMITTER_NAME=libero-dp GIT_COMMITTER_EMAIL=libero-dp@localhost
    [ -f "$STATE/start" ] || date +%s.%N >"$STATE/start"  # first start: the preset's wall time counts from here
    setsid bash -c "make ${TARGET:-libero90} $* >>'$LOG' 2>&1; echo \$? >'$STATE/rc'" </dev/null >/dev/null 2>&1 &
    echo $! >"$STATE/pid"
    echo "started in $WORK: make ${TARGET:-libero90} $*"
    ;;
  status) status ;;
  wait)
    end=$((SECONDS + ${1:-540}))
    while running && [ $SECONDS -lt $end ]; do sleep 10; done
    status
    ;;
  pack)
    out=${1:?pack DIR}
    cd "$WORK"
    files=(params.yaml dvc.lock metrics reports/summary.md reports/index.html mlflow.db .host)  # mlflow.db: the runs
    # as MLflow logged them (MLFLOW_TRACKING_URI=sqlite:///<that file> make compare reads them at home)
    tar -czf "$out/$(basename "$WORK")_results.tgz" --ignore-failed-read "${files[@]}" 2>/dev/null || true
    # the DVC experiments (params, dvc.lock, metrics per run) as a git bundle on top of the copy's HEAD: at home
    # `git fetch <bundle> 'refs/exps/*:refs/exps/*'` and `dvc exp show` lists the host's runs beside the others
    mapfile -t exps < <(git for-each-ref --format='%(refname)' refs/exps | grep -v '^refs/exps/exec/' || true)
    if [ ${#exps[@]} -gt 0 ]; then
      git bundle create "$out/$(basename "$WORK")_exps.bundle" "${exps[@]}" ^HEAD || echo "no experiment beyond HEAD"
    fi
    ls -la "$out"
    ;;
  export)
    out=${1:?export DIR [NAME]}
    name=${2:-libero90}
    cd "$WORK"
    "$(command -v python || command -v python3)" tools/checkpoint.py export --models models --stats data/scaled/stats.json --out "checkpoints/$name"
    tar -cf - -C checkpoints "$name" | split -b 15M -d - "$out/$name.tar.part-"
    ls -la "$out"
    ;;
  *) echo "unknown command $cmd: start | status | wait SECONDS | pack DIR | export DIR [NAME]" >&2; exit 2 ;;
esac
