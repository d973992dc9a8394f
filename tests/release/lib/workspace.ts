/**
 * The workspace as the release tests see it: which packages exist, what kind they are, and a
 * build step that makes sure dist/ is current before anything is packed.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { findPnpm, repoRoot } from '../../../scripts/pack-all.mjs';
import { runOk } from './processes.js';

export { repoRoot };

/** The fields of a package.json the release tests read. */
export interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  description?: string;
  license?: string;
  repository?: { type?: string; url?: string; directory?: string };
  type?: string;
  engines?: Record<string, string>;
  sideEffects?: boolean | string[];
  bin?: Record<string, string>;
  exports?: Record<string, string | Record<string, string>>;
  files?: string[];
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  publishConfig?: Record<string, string>;
}

/** One workspace package. */
export interface WorkspacePackage {
  /** `library` under packages/, `app` (a CLI) under apps/. */
  kind: 'library' | 'app';
  /** Path from the repository root, e.g. `packages/core`. */
  dir: string;
  manifest: Manifest;
}

/** Every package under packages/ and apps/, libraries first, each group by folder name. */
export function workspacePackages(root = repoRoot): WorkspacePackage[] {
  return (['packages', 'apps'] as const).flatMap((group) =>
    readdirSync(join(root, group), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name)
      .sort()
      .map((name) => ({
        kind: group === 'packages' ? ('library' as const) : ('app' as const),
        dir: `${group}/${name}`,
        manifest: JSON.parse(
          readFileSync(join(root, group, name, 'package.json'), 'utf8'),
        ) as Manifest,
      })),
  );
}

/** A private workspace package under tests/: its folder from the repository root, its manifest. */
export interface PrivatePackage {
  dir: string;
  manifest: Manifest;
}

/**
 * The private workspace packages under tests/ (tests/api, tests/support), by folder name. They
 * are never published, so no release check applies to them; but pnpm still replaces a
 * `workspace:*` range that names one (the apps' dev dependency on @shardline/test-support) when
 * it packs, so a release copy must link them too.
 */
export function privateWorkspacePackages(root = repoRoot): PrivatePackage[] {
  return readdirSync(join(root, 'tests'), { withFileTypes: true })
    .filter(
      (entry) => entry.isDirectory() && existsSync(join(root, 'tests', entry.name, 'package.json')),
    )
    .map((entry) => entry.name)
    .sort()
    .map((name) => ({
      dir: `tests/${name}`,
      manifest: JSON.parse(
        readFileSync(join(root, 'tests', name, 'package.json'), 'utf8'),
      ) as Manifest,
    }));
}

/**
 * PATH with the pinned pnpm's folder first: turbo and changesets run `pnpm` from PATH, which
 * has it inside `npx pnpm test` but not in a plain shell.
 */
export function pathWithPnpm(): string {
  return [dirname(findPnpm()), process.env.PATH].filter(Boolean).join(delimiter);
}

/**
 * Builds every package (`pnpm build`: turbo, a cache hit when `pnpm test` built already), so
 * the tarballs never carry a stale dist/.
 */
export async function buildWorkspace(): Promise<void> {
  await runOk(findPnpm(), ['run', 'build', '--output-logs=errors-only'], {
    cwd: repoRoot,
    timeoutMs: 300_000,
    env: { PATH: pathWithPnpm() },
  });
}
