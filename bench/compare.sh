#!/usr/bin/env bash
# Measures a change against an earlier commit on this machine, now: `bash bench/compare.sh <rev> [rounds] [chains]`.
# Checks <rev> out beside this tree (a temporary git worktree sharing node_modules), then runs
# bench/hop-cost.ts for raw BullMQ, Palisade with no guards and Palisade guarded, in both trees by
# turns (rev first in odd rounds, this tree first in even ones), and prints the medians and the
# guarded ÷ raw ratio of each round. Machines here are shared: only figures taken by turns like this
# compare. Needs Redis at REDIS_URL (default redis://127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bash bench/compare.sh <rev> [rounds] [chains]}
rounds=${2:-4}
chains=${3:-2000}

base=$(mktemp -d)
cleanup() {
  git worktree remove --force "$base/tree" >/dev/null 2>&1 || true
  rm -rf "$base"
}
trap cleanup EXIT
git worktree add --detach --quiet "$base/tree" "$rev"
ln -s "$PWD/node_modules" "$base/tree/node_modules"
# The same measuring script in both trees: only the code it measures differs.
cp bench/hop-cost.ts "$base/tree/bench/hop-cost.ts"

results="$base/results.jsonl"
for round in $(seq 1 "$rounds"); do
  sides=("$rev" here)
  (( round % 2 == 0 )) && sides=(here "$rev")
  for side in "${sides[@]}"; do
    dir=$PWD
    [[ $side == here ]] || dir="$base/tree"
    for system in raw palisade guarded; do
      line=$(cd "$dir" && npx tsx bench/hop-cost.ts "$system" "$chains")
      echo "round $round, $side: $line" >&2
      printf '{"round":%d,"side":"%s","m":%s}\n' "$round" "$side" "$line" >>"$results"
    done
  done
done

node --input-type=module - "$results" "$rev" <<'JS'
import { readFileSync } from 'node:fs';
const [file, rev] = process.argv.slice(2);
const rows = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const median = (v) => { const s = [...v].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const of = (side, system) => rows.filter((r) => r.side === side && r.m.system === system);
const fmt = (n, d) => n.toFixed(d);
console.log(`\n| system | tree | chains/s | Node CPU ms/hop | Redis CPU ms/hop | guarded ÷ raw, per round |`);
console.log(`|:--|:--|--:|--:|--:|:--|`);
for (const system of ['raw', 'palisade', 'guarded']) {
  for (const side of [rev, 'here']) {
    const m = of(side, system).map((r) => r.m);
    const ratios = system === 'guarded' ? of(side, 'guarded').map((g) => g.m.chainsPerSec / of(side, 'raw').find((r) => r.round === g.round).m.chainsPerSec) : [];
    console.log(`| ${system} | ${side} | ${fmt(median(m.map((x) => x.chainsPerSec)), 0)} | ${fmt(median(m.map((x) => x.nodeCpuMsPerHop)), 3)} | ${fmt(median(m.map((x) => x.redisCpuMsPerHop)), 3)} | ${ratios.map((r) => fmt(r, 2)).join(' / ')}${ratios.length ? ` (median ${fmt(median(ratios), 2)})` : ''} |`);
  }
}
JS
