#!/usr/bin/env bash
# Fails when the committed ts-proto output in packages/protocol/src/gen is not what proto/
# generates: someone edited a .proto file without regenerating, edited generated code by hand,
# or generated with another ts-proto version. It lints proto/, regenerates into the working tree
# (so that after a failure `git diff` shows the difference and committing the result fixes it),
# then compares the tree with the index: changed, deleted and new files all count.
#
# Usage (from anywhere, after `pnpm install`): scripts/check-generated.sh
set -euo pipefail
cd "$(dirname "$0")/.."

gen=packages/protocol/src/gen
buf=packages/protocol/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
  echo "check-generated: $buf is missing: run 'npx pnpm@12.4.2 install' first." >&2
  exit 2
fi

"$buf" lint
"$buf" generate

status=0
if ! git diff --quiet -- "$gen"; then
  echo "check-generated: $gen differs from what proto/ generates:" >&2
  git --no-pager diff --stat -- "$gen" >&2
  status=1
fi
untracked=$(git ls-files --others --exclude-standard -- "$gen")
if [ -n "$untracked" ]; then
  echo "check-generated: generated files that are not committed:" >&2
  echo "$untracked" | sed 's/^/  /' >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "check-generated: the tree now holds the regenerated code: review it and commit it" >&2
  echo "  (to regenerate by hand: npx pnpm@12.4.2 --filter @shardline/protocol generate)." >&2
  exit 1
fi
echo "check-generated: $gen is up to date."
