#!/usr/bin/env node
/**
 * Packs every publishable workspace package (packages/* and apps/*) with pnpm, exactly as
 * `pnpm publish` would: `workspace:*` and `catalog:` become real versions. Build first
 * (`pnpm build`): the tarballs carry dist/ as it is.
 *
 *   node scripts/pack-all.mjs [destination]     # default: a new folder under the system temp dir
 *
 * Prints one line per tarball. The release tests import {@link packAll} and {@link findPnpm}.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file lives in scripts/). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Environment for a package-manager child process: this one's, minus the `npm_*` / `pnpm_*`
 * variables that `npx` and `pnpm run` set for their own child. Those would leak into a nested
 * npm: `npm_config_local_prefix`, for one, makes `npm install` in a fresh folder install into
 * the workspace instead.
 *
 * @param {Record<string, string | undefined>} [extra] variables to set on top
 * @returns {Record<string, string>}
 */
export function packageManagerEnv(extra = {}) {
  /** @type {Record<string, string>} */
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || /^(npm|pnpm)_/i.test(key) || key === 'INIT_CWD') continue;
    env[key] = value;
  }
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

/**
 * The pnpm version the workspace pins in the root package.json's `packageManager` field.
 *
 * @param {string} [root]
 * @returns {string}
 */
export function pinnedPnpmVersion(root = repoRoot) {
  const field = JSON.parse(readFileSync(resolve(root, 'package.json'), 'utf8')).packageManager;
  const version = /^pnpm@(\d+\.\d+\.\d+)/.exec(String(field))?.[1];
  if (!version) {
    throw new Error(
      `package.json's packageManager should read "pnpm@<version>", found ${JSON.stringify(field)}. ` +
        'Set it to the pnpm version the workspace uses.',
    );
  }
  return version;
}

/**
 * Absolute path of a pnpm executable of the pinned version: the one on PATH when it is that
 * version (inside `pnpm test` it is), else the one `npm exec` installs into npm's cache.
 *
 * @param {string} [root]
 * @returns {string}
 */
export function findPnpm(root = repoRoot) {
  const version = pinnedPnpmVersion(root);
  const env = packageManagerEnv();
  try {
    const onPath = execFileSync('sh', ['-c', 'command -v pnpm'], { env, encoding: 'utf8' }).trim();
    const found = execFileSync(onPath, ['--version'], { env, encoding: 'utf8' }).trim();
    if (found === version) return onPath;
  } catch {
    // Not on PATH (or not runnable): fetch the pinned one below.
  }
  const fetched = execFileSync(
    'npm',
    ['exec', '--yes', `--package=pnpm@${version}`, '--', 'sh', '-c', 'command -v pnpm'],
    { env, encoding: 'utf8', cwd: root },
  ).trim();
  if (!fetched) {
    throw new Error(
      `Could not find pnpm ${version}: it is not on PATH, and \`npm exec --package=pnpm@${version}\` printed no path. ` +
        `Install it (npm i -g pnpm@${version}) or run through \`npx -y pnpm@${version}\`.`,
    );
  }
  return fetched;
}

/**
 * @typedef {object} PackedPackage
 * @property {string} name      package name, e.g. `@shardline/core`
 * @property {string} version   version in the tarball's package.json
 * @property {string} tarball   absolute path of the .tgz
 * @property {string[]} files   paths inside the tarball, relative to `package/`
 */

/**
 * Packs packages/* and apps/* into `destination` with `pnpm pack` and returns what it made.
 *
 * @param {{ destination: string, root?: string, pnpm?: string }} options
 * @returns {PackedPackage[]}
 */
export function packAll({ destination, root = repoRoot, pnpm = findPnpm(root) }) {
  mkdirSync(destination, { recursive: true });
  const output = execFileSync(
    pnpm,
    [
      '--recursive',
      '--filter',
      './packages/*',
      '--filter',
      './apps/*',
      'pack',
      '--pack-destination',
      destination,
      '--json',
    ],
    { cwd: root, env: packageManagerEnv(), encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  /** @type {{ name: string, version: string, filename: string, files: { path: string }[] }[]} */
  let packed;
  try {
    packed = JSON.parse(output);
  } catch {
    throw new Error(
      `pnpm pack --json should print a JSON array of packed packages, found: ${output.slice(0, 500)}`,
    );
  }
  return packed.map((entry) => ({
    name: entry.name,
    version: entry.version,
    tarball: resolve(destination, entry.filename),
    files: entry.files.map((file) => file.path),
  }));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const destination = process.argv[2]
    ? resolve(process.argv[2])
    : mkdtempSync(join(tmpdir(), 'shardline-packed-'));
  for (const pkg of packAll({ destination })) {
    console.log(`${pkg.name}@${pkg.version}  ${pkg.tarball}  (${pkg.files.length} files)`);
  }
}
