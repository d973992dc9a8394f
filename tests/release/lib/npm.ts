/**
 * Installing what the workspace published the way its users will: with npm, into a fresh
 * folder outside the workspace, or globally into a throwaway prefix.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RunResult, runOk } from './processes.js';

/** Flags every install here uses: no audit or funding requests, warnings and errors only. */
const QUIET = ['--no-audit', '--no-fund', '--no-update-notifier', '--loglevel=warn'];

/** Options of {@link npmInstall}. */
export interface InstallOptions {
  /** Registry for the `@shardline` scope; everything else comes from the default registry. */
  shardlineRegistry: string;
  /** Install globally into this prefix (`npm i -g --prefix`), as a user installs a CLI. */
  globalPrefix?: string;
  /** Deadline for the whole install. Default 5 minutes (a cold npm cache on a slow link). */
  timeoutMs?: number;
  env?: Record<string, string>;
}

/** Writes a minimal package.json for an ESM consumer project in `dir`. */
export function createProject(dir: string, name: string): void {
  writeFileSync(
    join(dir, 'package.json'),
    `${JSON.stringify({ name, version: '0.0.0', private: true, type: 'module' }, null, 2)}\n`,
  );
}

/**
 * `npm install <specs>` in `dir` (or globally into `globalPrefix`). Tarball paths and registry
 * specs both work. Rejects with npm's output when it fails or outlives its deadline; optional
 * dependencies whose install scripts fail (the native TensorFlow packages without internet)
 * are skipped by npm, as for a user.
 */
export function npmInstall(
  dir: string,
  specs: readonly string[],
  options: InstallOptions,
): Promise<RunResult> {
  const args = [
    'install',
    ...QUIET,
    `--@shardline:registry=${options.shardlineRegistry}`,
    ...(options.globalPrefix ? ['--global', '--prefix', options.globalPrefix] : []),
    ...specs,
  ];
  return runOk('npm', args, {
    cwd: dir,
    timeoutMs: options.timeoutMs ?? 300_000,
    ...(options.env ? { env: options.env } : {}),
  });
}
