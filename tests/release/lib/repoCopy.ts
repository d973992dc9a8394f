/**
 * A copy of the working tree to release from, so `changeset version` (which rewrites versions,
 * writes CHANGELOGs and deletes the changesets) and `changeset publish` never touch the real
 * checkout, and no git tag or commit is made anywhere.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { privateWorkspacePackages, repoRoot, workspacePackages } from './workspace.js';

/**
 * Copies every file git tracks or would track (untracked but not ignored) into `dest`, plus
 * each package's built dist/, and links what pnpm needs to publish from there: the root
 * node_modules (the changesets CLI and its changelog module) and, in each package, its
 * `@shardline/*` dependencies, private ones included, as pnpm install would (pnpm reads their
 * versions from there to replace `workspace:*`). Returns `dest`.
 */
export function copyWorkingTree(dest: string): string {
  const listed = execFileSync(
    'git',
    ['ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    {
      cwd: repoRoot,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  for (const file of listed.split('\0')) {
    // Deleted in the working tree but still in the index: the copy mirrors the working tree.
    if (!file || !existsSync(join(repoRoot, file))) continue;
    mkdirSync(dirname(join(dest, file)), { recursive: true });
    cpSync(join(repoRoot, file), join(dest, file), { verbatimSymlinks: true });
  }
  const packages = workspacePackages();
  for (const pkg of packages) {
    const dist = join(repoRoot, pkg.dir, 'dist');
    if (!existsSync(dist)) {
      throw new Error(`${pkg.dir}/dist is missing: build the workspace first (pnpm build).`);
    }
    cpSync(dist, join(dest, pkg.dir, 'dist'), { recursive: true });
  }
  symlinkSync(join(repoRoot, 'node_modules'), join(dest, 'node_modules'), 'dir');
  // A published package may name a private one too (a dev dependency on the test helpers):
  // pnpm pack fails on a `workspace:*` it cannot find installed.
  const dirs = new Map(
    [...packages, ...privateWorkspacePackages()].map((pkg) => [pkg.manifest.name, pkg.dir]),
  );
  for (const pkg of packages) {
    const { dependencies, devDependencies, optionalDependencies, peerDependencies } = pkg.manifest;
    const names = Object.keys({
      ...dependencies,
      ...devDependencies,
      ...optionalDependencies,
      ...peerDependencies,
    });
    for (const name of names.filter((dep) => dirs.has(dep))) {
      const link = join(dest, pkg.dir, 'node_modules', name);
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(relative(dirname(link), join(dest, dirs.get(name)!)), link, 'dir');
    }
  }
  return dest;
}
