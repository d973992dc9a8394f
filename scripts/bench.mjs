#!/usr/bin/env node
// Runs every benchmark in the workspace (packages/*/bench/*.bench.mjs, apps/*/bench/*.bench.mjs)
// one after another, each in its own process so one's memory and JIT state cannot skew the next.
// `pnpm bench <filter>` runs only the files whose path contains <filter>.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const filter = process.argv[2] ?? '';
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
  const run = spawnSync(process.execPath, ['--expose-gc', file], { stdio: 'inherit' });
  if (run.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
