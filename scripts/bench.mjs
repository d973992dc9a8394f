#!/usr/bin/env node
// Runs every benchmark in the workspace (packages/*/bench/*.bench.mjs, apps/*/bench/*.bench.mjs)
// one after another, each in its own process so one's memory and JIT state cannot skew the next.
// `pnpm bench <filter>` runs only the files whose path contains <filter>; arguments after the
// filter go to each of them (`pnpm bench imageFolder --sizes 400,1600,6400`).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const [filter = '', ...passed] = process.argv.slice(2);
const files = ['packages', 'apps']
  .flatMap((group) =>
    readdirSync(group).flatMap((name) => {
      const dir = join(group, name, 'bench');
      return existsSync(dir)
        ? readdirSync(dir)
            .filter((f) => f.endsWith('.bench.mjs'))
            .map((f) => join(dir, f))
        : [];
    }),
  )
  .filter((f) => f.includes(filter));

if (files.length === 0) {
  console.error(
    `bench: no benchmark matches "${filter}". Files are named <package>/bench/*.bench.mjs.`,
  );
  process.exit(1);
}
let failed = 0;
for (const file of files) {
  console.log(`\n=== ${file}`);
  const run = spawnSync(process.execPath, ['--expose-gc', file, ...passed], { stdio: 'inherit' });
  if (run.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
