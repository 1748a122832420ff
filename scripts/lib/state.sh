# shellcheck shell=bash
# Where the services of scripts/hub and scripts/slurm-cluster keep their state, and the
# checks every start runs before trusting it. Sourced by both scripts, which define
# die() (print one line, exit non-zero).
#
# Why: a service running as root must not reuse a folder another local user could have
# created first (their cookie secret signs anyone's login, their munge key forges any
# SLURM identity), nor kill the process a planted PID file names, nor append to a log
# that is a symlink to another file. So state lives under a folder only root controls,
# and a start refuses - with one line saying what to fix - when the state folder, a
# folder above it, a secret or a log in it is owned by someone else, or writable
# (secrets: readable) by group or others.

#: Parent of each service's default state folder (hub/, slurm/); created 0755 by root.
MDLMA_STATE_ROOT=/var/lib/mdlma

_state_owner_name() { getent passwd "$1" | cut -d: -f1 | grep . || echo "uid $1"; }

# state_check_dir DIR VARIABLE: DIR (if it exists) belongs to this user and is writable by
# nobody else; every folder above it belongs to root or this user and is not writable by
# others (unless sticky, like /var/tmp: there only an entry's owner may rename it).
# VARIABLE names the setting that chose DIR, for the message.
state_check_dir() {
  local dir=$1 variable=$2 me path owner mode
  me=$(id -u)
  case "$dir" in
    /*) ;;
    *) die "$variable=$dir: expected an absolute path" ;;
  esac
  path=$dir
  while :; do
    if [ -L "$path" ]; then
      die "$path is a symbolic link, which its owner or whoever can write its folder may re-point; set $variable to a path without links ($(readlink -f -- "$dir"))"
    fi
    if [ -e "$path" ]; then
      read -r owner mode < <(stat -c '%u %a' -- "$path")
      if [ "$path" = "$dir" ]; then
        [ -d "$path" ] || die "state folder $path is not a folder; remove it or set $variable"
        [ "$owner" = "$me" ] ||
          die "state folder $path belongs to $(_state_owner_name "$owner"), not $(id -un): another user may have planted it; remove it (rm -rf -- $path) or set $variable to a folder of $(id -un)"
        if (( 8#$mode & 8#022 )); then
          die "state folder $path is writable by group or others (mode $mode); run: chmod go-w -- $path"
        fi
      else
        [ "$owner" = 0 ] || [ "$owner" = "$me" ] ||
          die "$path (above the state folder $dir) belongs to $(_state_owner_name "$owner"), who could swap the state folder; set $variable to a folder under one only root controls"
        if (( 8#$mode & 8#022 )) && ! (( 8#$mode & 8#1000 )); then
          die "$path (above the state folder $dir) is writable by group or others without the sticky bit (mode $mode), so they could swap the state folder; run: chmod go-w -- $path, or set $variable"
        fi
      fi
    fi
    [ "$path" = / ] && break
    path=$(dirname -- "$path")
  done
}

# state_check_entry KIND PATH...: each existing PATH is no symlink, belongs to this user and is
# not writable by group or others. KIND: secret (not readable by them either), file or dir.
state_check_entry() {
  local kind=$1 path owner mode me
  shift
  me=$(id -u)
  for path in "$@"; do
    if [ -L "$path" ]; then
      die "$path is a symbolic link; remove it (a service running as $(id -un) would write through it)"
    fi
    [ -e "$path" ] || continue
    read -r owner mode < <(stat -c '%u %a' -- "$path")
    [ "$owner" = "$me" ] ||
      die "$path belongs to $(_state_owner_name "$owner"), not $(id -un): another user may have planted it; remove it (rm -rf -- $path)"
    case "$kind" in
      dir) [ -d "$path" ] || die "$path is not a folder; remove it" ;;
      *) [ -f "$path" ] || die "$path is not a plain file; remove it" ;;
    esac
    if [ "$kind" = secret ] && (( 8#$mode & 8#077 )); then
      die "secret $path is accessible to group or others (mode $mode); run: chmod 600 -- $path"
    elif (( 8#$mode & 8#022 )); then
      die "$path is writable by group or others (mode $mode); run: chmod go-w -- $path"
    fi
  done
  return 0
}

# state_proc_is PID NAMES ENVLINE [ARGTEXT]: PID is a live process running one of the
# programs NAMES (space-separated base names of its executable, or - for a script - of
# its interpreter's first argument) that was started for this state: its environment
# holds the line ENVLINE, or one of its arguments contains ARGTEXT. A PID file is only
# trusted through this: the number in it may name any process by now.
state_proc_is() {
  local pid=$1 names=" $2 " envline=$3 argtext=${4:-} exe arg found=0
  local -a args
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  for arg in "$exe" "${args[@]:0:2}"; do
    case "$names" in *" ${arg##*/} "*) found=1 ;; esac
  done
  [ $found = 1 ] || return 1
  if [ -n "$argtext" ]; then
    for arg in "${args[@]}"; do
      case "$arg" in *"$argtext"*) return 0 ;; esac
    done
  fi
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "$envline"
}

# state_pid PIDFILE NAMES ENVLINE [ARGTEXT]: print the PID in PIDFILE if state_proc_is
# accepts it, else fail.
state_pid() {
  local file=$1 pid
  shift
  [ -s "$file" ] && [ ! -L "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  state_proc_is "$pid" "$@" || return 1
  echo "$pid"
}
