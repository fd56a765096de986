# bash completion for kugetsu. Installed as share/bash-completion/completions/kugetsu.
#
# The commands and their options come from the kugetsu being completed (`kugetsu --help`,
# `kugetsu COMMAND --help`), so they never go stale; task ids come from `kugetsu status
# --json` of the HOME the command line names (--home, else KUGETSU_HOME). Nothing here
# creates a HOME: status refuses one that does not exist.

_kugetsu_commands() {
    "$1" --help 2>/dev/null | sed -n '/^Subcommands:/,/^$/{s/^  \([a-z][a-z-]*\) .*/\1/p}'
}

_kugetsu_options() {
    "$1" "$2" --help 2>/dev/null | sed -n '/^Options:/,/^$/{s/^  \([-a-z,]*\).*/\1/p}' | tr ',' '\n' | grep -- '^-'
}

_kugetsu_ids() {
    local home_args=()
    [ -n "$2" ] && home_args=(--home "$2")
    "$1" "${home_args[@]}" status --json 2>/dev/null | grep -o '"tasks":\[.*' | grep -o '"id":"[^"]*"' | sed 's/"id":"\(.*\)"/\1/'
}

_kugetsu() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local prog=${COMP_WORDS[0]} cmd="" home="" i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [ "$w" = --home ]; then home=${COMP_WORDS[i+1]}; ((i++)); continue; fi
        case $w in --home=*) home=${w#--home=}; continue ;; -*) continue ;; esac
        cmd=$w
        break
    done
    # After `--`, the agent's command: file names and commands.
    for ((; i < COMP_CWORD; i++)); do
        if [ "${COMP_WORDS[i]}" = -- ]; then
            mapfile -t COMPREPLY < <(compgen -c -f -- "$cur")
            return
        fi
    done
    if [ "$prev" = --home ] || [ "$prev" = --worktree ]; then
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        return
    fi
    if [ -z "$cmd" ]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "--home --help --version" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$(_kugetsu_commands "$prog")" -- "$cur")
        fi
        return
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_kugetsu_options "$prog" "$cmd")" -- "$cur")
        return
    fi
    if [ "$prev" = --after ]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_kugetsu_ids "$prog" "$home")" -- "$cur")
        return
    fi
    case $cmd in
        wait | cancel | logs | restart | remove | status)
            mapfile -t COMPREPLY < <(compgen -W "$(_kugetsu_ids "$prog" "$home")" -- "$cur") ;;
        config)
            [ "$prev" = config ] && mapfile -t COMPREPLY < <(compgen -W "cap max-attempts kill-grace group" -- "$cur") ;;
        start)
            [ "$prev" = --role ] && mapfile -t COMPREPLY < <(compgen -W "dev pm" -- "$cur") ;;
    esac
}
complete -F _kugetsu kugetsu
