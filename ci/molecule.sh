#!/usr/bin/env bash
# Run the Molecule scenarios under molecule/ with rootful podman.
#   bash ci/molecule.sh                 every scenario (fleet last, alone)
#   bash ci/molecule.sh redis common    only these
# Env: MOLECULE_JOBS     scenarios run at once (default 3; fleet always runs alone)
#      MOLECULE_TIMEOUT  seconds one scenario may take (default 2400), then it is stopped and destroyed
#      MOLECULE_KEEP=1   keep containers after a run (destroy=never) to debug
# Needs: ci/podman-setup.sh and ci/base-image.sh run before.
# Logs: .run/molecule/<scenario>.log; the last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

VENV=$REPO/.venv-molecule
REQ=$REPO/ci/requirements-molecule.txt
stamp=$(sha256sum "$REQ" | cut -c1-16)
if [ ! -x "$VENV/bin/molecule" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "== molecule venv ($VENV)"
    py=$(command -v python3)
    "$py" -m venv "$VENV" || exit 1
    "$VENV/bin/pip" install -q --upgrade pip || exit 1
    "$VENV/bin/pip" install -q -r "$REQ" || exit 1
    echo "$stamp" > "$VENV/.stamp"
fi
export PATH="$VENV/bin:$PATH"
export NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 PY_COLORS=0
export MOLECULE_IMAGE=${MOLECULE_IMAGE:-localhost/soniquebay-debian12:latest}
podman image exists "$MOLECULE_IMAGE" || { echo "no image $MOLECULE_IMAGE: run ci/base-image.sh" >&2; exit 1; }
echo "== $(molecule --version 2>/dev/null | head -1), $(podman --version)"

if [ $# -gt 0 ]; then
    scenarios=("$@")
else
    # The longest first, so that the short ones fill the gaps; the fleet last, alone.
    scenarios=()
    for s in supervisor worker_app postgresql redis common; do
        [ -f "molecule/$s/molecule.yml" ] && scenarios+=("$s")
    done
    for d in molecule/*/molecule.yml; do
        s=$(basename "$(dirname "$d")")
        [[ " ${scenarios[*]} fleet " == *" $s "* ]] || scenarios+=("$s")
    done
    [ -f molecule/fleet/molecule.yml ] && scenarios+=(fleet)
fi
JOBS=${MOLECULE_JOBS:-3}
LOGS=$REPO/.run/molecule
mkdir -p "$LOGS"
destroy=always; [ "${MOLECULE_KEEP:-0}" = 1 ] && destroy=never

declare -A pid_of=() start_of=() result=() took=()
run_one() {  # in the background: one scenario, its own log
    local s=$1
    timeout --kill-after=30 "${MOLECULE_TIMEOUT:-2400}" \
        molecule test -s "$s" --destroy "$destroy" --no-command-borders > "$LOGS/$s.log" 2>&1
}
reap() {  # wait for any one running scenario to end
    local p s
    while :; do
        for s in "${!pid_of[@]}"; do
            p=${pid_of[$s]}
            if ! kill -0 "$p" 2>/dev/null; then
                wait "$p"; local rc=$?
                took[$s]=$(( $(date +%s) - start_of[$s] ))
                if [ $rc = 0 ]; then
                    result[$s]=passed
                else
                    result[$s]="FAILED (rc $rc)"
                    [ $rc = 124 ] && result[$s]="FAILED (timeout)"
                    # molecule destroys on failure, but not when it was stopped by the timeout
                    [ "$destroy" = never ] || molecule destroy -s "$s" > /dev/null 2>&1 || true
                fi
                printf '== %-12s %s in %d s\n' "$s" "${result[$s]}" "${took[$s]}"
                unset "pid_of[$s]"
                return
            fi
        done
        sleep 2
    done
}
on_signal() {
    echo "== interrupted: stopping scenarios and destroying their containers" >&2
    for s in "${!pid_of[@]}"; do kill "${pid_of[$s]}" 2>/dev/null; done
    for s in "${!pid_of[@]}"; do molecule destroy -s "$s" > /dev/null 2>&1; done
    exit 130
}
trap on_signal INT TERM

t0=$(date +%s)
for s in "${scenarios[@]}"; do
    [ -f "molecule/$s/molecule.yml" ] || { echo "== no scenario molecule/$s" >&2; result[$s]="FAILED (missing)"; continue; }
    if [ "$s" = fleet ]; then   # the fleet needs the whole machine
        while [ ${#pid_of[@]} -gt 0 ]; do reap; done
    fi
    while [ ${#pid_of[@]} -ge "$JOBS" ]; do reap; done
    echo "== $s: started (log $LOGS/$s.log)"
    start_of[$s]=$(date +%s)
    run_one "$s" &
    pid_of[$s]=$!
    [ "$s" = fleet ] && while [ ${#pid_of[@]} -gt 0 ]; do reap; done
done
while [ ${#pid_of[@]} -gt 0 ]; do reap; done

passed=0; failed=0
echo "== molecule summary ($(( $(date +%s) - t0 )) s)"
for s in "${scenarios[@]}"; do
    printf '   %-12s %-16s %s s\n' "$s" "${result[$s]}" "${took[$s]:--}"
    if [ "${result[$s]}" = passed ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "---- last lines of $LOGS/$s.log"
        tail -25 "$LOGS/$s.log" 2>/dev/null | sed 's/^/   | /'
    fi
done
# Last, so that it survives when only the end of the output is kept: the task that failed and why.
for s in "${scenarios[@]}"; do
    [ "${result[$s]}" = passed ] && continue
    echo "---- $s: failed tasks"
    grep -A40 -F 'TASK [The evidence]' "$LOGS/$s.log" 2>/dev/null | cut -c1-400 | head -60 | sed 's/^/   | /'
    grep -B3 -A8 -E '^(fatal|failed):|FAILED!' "$LOGS/$s.log" 2>/dev/null | grep -v 'RETRYING' | cut -c1-600 | tail -60 \
        | sed 's/^/   | /'
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
