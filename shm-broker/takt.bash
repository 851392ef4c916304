# bash completion for takt: the commands come from takt itself (its command
# table, `takt __complete WORD...`), topics from the domain's broker.
_takt()
{
	local cur=${COMP_WORDS[COMP_CWORD]} words=() i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-d | --domain) ((i++)) ;;
		-*) ;;
		*) words+=("${COMP_WORDS[i]}") ;;
		esac
	done
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "--domain --json --help --version --count --duration --rate --window --hex --type --interval --once" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -W "$(takt __complete "${words[@]}" 2>/dev/null)" -- "$cur"))
}
complete -F _takt takt
