// Types of pack-all.mjs, for the TypeScript tests that import it (tests/release).

/** The repository root. */
export declare const repoRoot: string;

/**
 * This process's environment minus the `npm_*` / `pnpm_*` variables that npx and pnpm set for
 * their children, plus `extra`.
 */
export declare function packageManagerEnv(
  extra?: Record<string, string | undefined>,
): Record<string, string>;

/** The pnpm version the root package.json's `packageManager` field pins. */
export declare function pinnedPnpmVersion(root?: string): string;

/** Absolute path of a pnpm executable of the pinned version. */
export declare function findPnpm(root?: string): string;

/** One tarball made by {@link packAll}. */
export interface PackedPackage {
  /** Package name, e.g. `@shardline/core`. */
  name: string;
  /** Version in the tarball's package.json. */
  version: string;
  /** Absolute path of the .tgz. */
  tarball: string;
  /** Paths inside the tarball, relative to `package/`. */
  files: string[];
}

/** Packs packages/* and apps/* into `destination` with `pnpm pack`. */
export declare function packAll(options: {
  destination: string;
  root?: string;
  pnpm?: string;
}): PackedPackage[];
