#!/usr/bin/env bash
# Install and check the host commands of ci/host-commands.tsv, by group.
#   bash ci/host-commands.sh packages GROUP...   the packages of these groups, one per line
#   bash ci/host-commands.sh install [--with-recommends] GROUP...
#                                                apt-get install those whose command or file is missing
#   bash ci/host-commands.sh check GROUP...      each command is there and comes from its package; exit 1 if not
# Needs only Debian's required packages (bash, awk, dpkg, apt).
set -euo pipefail
TABLE=$(cd "$(dirname "$0")" && pwd)/host-commands.tsv

rows() {  # command TAB package for the given groups
    awk -F '\t' -v groups=" $* " '!/^#/ && NF >= 3 && index(groups, " " $3 " ") { print $1 "\t" $2 }' "$TABLE"
}

locate() {  # the file a command or path names, or nothing
    case $1 in
        /*) [ -e "$1" ] && echo "$1" ;;
        *) command -v "$1" 2>/dev/null || true ;;
    esac
}

owner() {  # the package that ships a file ("" when none does); /bin and /usr/bin are one folder (merged /usr)
    local file=$1 real
    real=$(readlink -f "$file")
    for candidate in "$file" "$real" "${real#/usr}" "/usr$real"; do
        dpkg -S "$candidate" 2>/dev/null | awk -F ': ' 'NR == 1 { sub(/:.*/, "", $1); print $1 }' | grep . && return
    done
    return 0
}

action=${1:-}; shift || true
recommends=--no-install-recommends
if [ "${1:-}" = --with-recommends ]; then recommends=--install-recommends; shift; fi
[ $# -gt 0 ] || { echo "usage: $0 packages|install|check GROUP..." >&2; exit 2; }

case $action in
    packages)
        rows "$@" | cut -f2 | sort -u
        ;;
    install)
        missing=()
        while IFS=$'\t' read -r command package; do
            [ -n "$(locate "$command")" ] || missing+=("$package")
        done < <(rows "$@")
        if [ ${#missing[@]} -gt 0 ]; then
            mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
            echo "host-commands: installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq "$recommends" "${missing[@]}" > /dev/null
        fi
        ;;
    check)
        bad=0
        while IFS=$'\t' read -r command package; do
            file=$(locate "$command")
            if [ -z "$file" ]; then
                echo "host-commands: MISSING $command (Debian package $package; bash ci/host-commands.sh install $*)"
                bad=1
                continue
            fi
            from=$(owner "$file")
            if [ -n "$from" ] && [ "$from" != "$package" ]; then
                echo "host-commands: $command is $file from package $from, but ci/host-commands.tsv says $package"
                bad=1
            fi
        done < <(rows "$@")
        [ $bad = 0 ] && echo "host-commands: every command of group(s) $* is there"
        exit $bad
        ;;
    *)
        echo "usage: $0 packages|install|check GROUP..." >&2; exit 2
        ;;
esac
