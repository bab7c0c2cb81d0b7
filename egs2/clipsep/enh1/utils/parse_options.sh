#!/usr/bin/env bash
# Parse "--name value" / "--name=value" options into existing shell variables of the sourcing script
# (dashes in names become underscores). Source it after setting the defaults:
#     foo=1; bar=abc; help_message="usage ..."; . utils/parse_options.sh
# Unknown options are an error; "--help" prints ${help_message} followed by every variable set before
# sourcing this file that an option may change, with its current value (the default) and the comment on its
# "name=value  # comment" line in the calling script, then exits 0.
# Positional arguments after the options are left in "$@".

_po_names=()
while read -r _po_line; do
    _po_var=${_po_line#declare -- }
    _po_var=${_po_var%%=*}
    case "${_po_var}" in [a-z]*) _po_names+=("${_po_var}");; esac
done < <(declare -p | grep '^declare -- [a-z][a-z0-9_]*=')

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            [ -n "${help_message:-}" ] && echo -e "${help_message}"
            echo "Options (default):"
            for _po_var in "${_po_names[@]}"; do
                case "${_po_var}" in help_message|_po_*) continue;; esac
                _po_doc=$(sed -n "s/^${_po_var}=[^#]*#[[:space:]]*//p" "$0" | head -n 1)
                printf '  --%-22s %-28s %s\n' "${_po_var}" "\"${!_po_var}\"" "${_po_doc}"
            done
            exit 0;;
        --*=*) _po_name=${1%%=*}; _po_value=${1#*=}; shift;;
        --*)
            [ $# -ge 2 ] || { echo "$0: error: option $1 needs a value" >&2; exit 1; }
            _po_name=$1; _po_value=$2; shift 2;;
        *) break;;
    esac
    _po_var=${_po_name#--}
    _po_var=${_po_var//-/_}
    if ! declare -p "${_po_var}" >/dev/null 2>&1 || [[ ! " ${_po_names[*]} " == *" ${_po_var} "* ]]; then
        echo "$0: error: unknown option ${_po_name} (see $0 --help)" >&2
        exit 1
    fi
    printf -v "${_po_var}" '%s' "${_po_value}"
done
unset _po_line _po_var _po_name _po_value _po_doc
