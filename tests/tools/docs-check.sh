#!/usr/bin/env bash
# The docs check (tests/all.sh runs it; docs/development.md describes it):
#
#  (a) every relative link in README.md, CHANGELOG.md, docs/*.md, charts/warmpool/README.md and
#      tests/cluster/README.md points at an existing file, and a `#anchor` into a Markdown file
#      at one of its headings (GitHub's slugs) or `<a id="...">`s;
#  (b) every fenced code block marked runnable runs:
#        ```sh docs-check     runs with `bash -euo pipefail` from the repository's root, with
#                             `warmpool` on the PATH as $WARMPOOL_BIN; it must exit 0
#        ```yaml docs-check   is a configuration file: `warmpool render --config FILE` must take it
#
# The binary is $WARMPOOL_BIN (default target/debug/warmpool: `cargo build --bin warmpool`).
# Mark only blocks that are cheap and need no cluster. Exits 1 naming every failure.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n ${WARMPOOL_BIN:-} ]]; then
  bin=$(realpath -m -- "$WARMPOOL_BIN")
else
  bin=$repo/target/debug/warmpool
fi
cd "$repo"
export LC_ALL=C.UTF-8

if [[ ! -x $bin ]]; then
  echo "docs-check: no warmpool binary at $bin (cargo build --bin warmpool, or set WARMPOOL_BIN)" >&2
  exit 1
fi

files=(README.md CHANGELOG.md docs/*.md charts/warmpool/README.md tests/cluster/README.md)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin" "$work/blocks"
ln -s "$bin" "$work/bin/warmpool"

failures=0
fail() {
  printf 'docs-check: %s\n' "$*" >&2
  failures=$((failures + 1))
}

# Lines outside fenced code blocks, as "LINE<TAB>TEXT"; a fence closes only with a run of the
# same character at least as long as the one that opened it.
prose() {
  awk '
    {
      if (match($0, /^ *(```+|~~~+)/)) {
        run = substr($0, RSTART, RLENGTH); sub(/^ +/, "", run)
        if (!open) { open = run; next }
        rest = substr($0, RSTART + RLENGTH)
        if (substr(run, 1, 1) == substr(open, 1, 1) && length(run) >= length(open) && rest ~ /^ *$/) {
          open = ""; next
        }
      }
      if (!open) print NR "\t" $0
    }' "$1"
}

# The anchors of a Markdown file, one a line: GitHub's heading slugs (lower case, anything but
# letters, digits, `_`, `-` and spaces dropped, spaces to `-`, repeats numbered) and HTML ids.
anchors() {
  prose "$1" | cut -f2- | grep -E '^#{1,6} ' | sed -E 's/^#+ +//; s/ +#+ *$//' |
    sed -E 's/\[([^]]*)\]\([^)]*\)/\1/g; s/.*/\L&/; s/[^[:alnum:]_ -]//g; s/ /-/g' |
    awk '{ n = seen[$0]++; print (n ? $0 "-" n : $0) }'
  grep -oE '<a (id|name)="[^"]+"' "$1" | sed -E 's/.*="([^"]+)"/\1/' || true
}

# (a) links
links=0
for file in "${files[@]}"; do
  dir=$(dirname "$file")
  while IFS=$'\t' read -r line target; do
    case $target in
      [a-zA-Z]*:*) continue ;; # http:, https:, mailto:
    esac
    links=$((links + 1))
    path=${target%%#*}
    anchor=
    [[ $target == *"#"* ]] && anchor=${target#*#}
    if [[ -z $path ]]; then
      resolved=$file
    else
      resolved=$dir/$path
    fi
    if [[ ! -e $resolved ]]; then
      fail "$file:$line: link to $target: no such file ($resolved)"
      continue
    fi
    if [[ -n $anchor && $resolved == *.md ]] && ! anchors "$resolved" | grep -qxF -- "$anchor"; then
      fail "$file:$line: link to $target: no heading or id \"$anchor\" in $resolved"
    fi
  done < <(prose "$file" | awk -F'\t' '{
      text = $0; sub(/^[0-9]+\t/, "", text)
      gsub(/`[^`]*`/, "", text)              # code spans are not links
      while (match(text, /\]\([^) ]+/)) {
        print $1 "\t" substr(text, RSTART + 2, RLENGTH - 2)
        text = substr(text, RSTART + RLENGTH)
      }
    }')
done

# (b) the blocks marked runnable: each into its own file, with an index "N<TAB>FILE:LINE<TAB>LANG".
awk -v out="$work/blocks" '
  FNR == 1 { open = ""; marked = 0 }
  !open && match($0, /^ *(```+|~~~+)/) {
    run = substr($0, RSTART, RLENGTH); sub(/^ +/, "", run)
    info = substr($0, RSTART + RLENGTH)
    open = run; n = split(info, words, /[ \t]+/); marked = 0; lang = ""
    for (i = 1; i <= n; i++) {
      if (words[i] == "docs-check") marked = 1
      else if (lang == "" && words[i] != "") lang = words[i]
    }
    if (marked) {
      count++
      block = sprintf("%s/%04d.%s", out, count, lang)
      print count "\t" FILENAME ":" FNR "\t" lang > (out "/index")
      printf "" > block
    }
    next
  }
  open && match($0, /^ *(```+|~~~+) *$/) {
    run = $0; gsub(/ /, "", run)
    if (substr(run, 1, 1) == substr(open, 1, 1) && length(run) >= length(open)) {
      if (marked) close(block)
      open = ""; marked = 0; next
    }
  }
  open && marked { print > block }
' "${files[@]}"

blocks=0
if [[ -f $work/blocks/index ]]; then
  while IFS=$'\t' read -r n where lang; do
    blocks=$((blocks + 1))
    block=$(printf '%s/blocks/%04d.%s' "$work" "$n" "$lang")
    case $lang in
      sh | bash)
        if ! out=$(env -u WARMPOOL_CONFIG -u POD_NAMESPACE -u WARMPOOL_NAMESPACE \
          PATH="$work/bin:$PATH" timeout 120 bash -euo pipefail "$block" 2>&1); then
          fail "$where: the block failed:"
          sed 's/^/    /' "$block" >&2
          echo "  its output:" >&2
          printf '%s\n' "$out" | tail -20 | sed 's/^/    /' >&2
        fi
        ;;
      yaml)
        if ! out=$(env -u WARMPOOL_CONFIG "$bin" render --config "$block" 2>&1 >/dev/null); then
          fail "$where: not a valid configuration: $out"
        fi
        ;;
      *)
        fail "$where: docs-check on a \`$lang\` block: only sh and yaml blocks can be checked"
        ;;
    esac
  done <"$work/blocks/index"
fi

if ((failures > 0)); then
  echo "docs-check: $failures problem(s) ($links relative links in ${#files[@]} files, $blocks marked blocks)" >&2
  exit 1
fi
echo "docs-check: $links relative links in ${#files[@]} files resolve; $blocks marked blocks ran ($bin)"
