"""Killing exactly a command's processes, by a marker variable in their environment (Docker and E2B).

Stdlib only: the E2B provider uses it without the docker SDK installed.
"""

from __future__ import annotations

# Every exec carries this variable with a fresh value, so a timeout can find and kill exactly the
# command's processes — including children that left its process group — and nothing else.
EXEC_MARKER = "SANDBOX_LIFECYCLE_EXEC"
# bash, run as the sandbox user inside the sandbox, stopping then killing the exec's processes: those whose
# environment holds the marker, and any child of one already stopped (which catches a child that cleared
# its environment, while its parent is held). SIGSTOP first, round after round until a round finds no
# new process: a stopped process cannot fork, so the set stops growing even for a command that re-forks
# itself faster than a scan-and-kill loop can follow; then SIGKILL them all at once. Only builtins run in
# the loops (no fork per process), so a command that used up the pids limit does not starve the killer.
# Rounds and seconds are bounded; `$1` is a pid to spare (the wrapper running it, or none).
REAP_FUNCTION = r"""
reap() {
  local m="SANDBOX_LIFECYCLE_EXEC=$SANDBOX_LIFECYCLE_EXEC" spare="$1" d p v hit grew round f
  local -A held=()
  local until=$((SECONDS + 10))
  for ((round = 0; round < 200 && SECONDS <= until; round++)); do
    grew=0
    for d in /proc/[0-9]*; do
      p=${d#/proc/}
      [[ $p == "$spare" || $p == "$BASHPID" || -n ${held[$p]} ]] && continue
      hit=0
      { while IFS= read -r -d '' v; do [[ $v == "$m" ]] && { hit=1; break; }; done <"$d/environ"
      } 2>/dev/null
      if ((!hit)) && { IFS= read -r v < "$d/stat"; } 2>/dev/null; then
        read -ra f <<< "${v##*) }"
        [[ -n ${f[1]} && -n ${held[${f[1]}]} ]] && hit=1
      fi
      if ((hit)) && kill -STOP "$p" 2>/dev/null; then held[$p]=1; grew=1; fi
    done
    ((grew)) || break
  done
  ((${#held[@]})) && kill -KILL "${!held[@]}" 2>/dev/null
  return 0
}
"""
# Kills the processes carrying the marker given as $1 (run from a call that carries none).
KILL_MARKED_SCRIPT = REAP_FUNCTION + 'SANDBOX_LIFECYCLE_EXEC="$1" reap ""\n'
