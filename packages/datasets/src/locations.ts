/**
 * Where a dataset's files are looked for, in order: an explicit directory, SHARDLINE_DATA_DIR,
 * the user cache (XDG), then system-wide directories such as the one Debian's dataset packages
 * install into. Downloads go to the user cache.
 */
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import type { DatasetDescriptor } from './descriptors.js';

/** Environment variable naming a directory with dataset files (or per-dataset subdirectories). */
export const DATA_DIR_ENV = 'SHARDLINE_DATA_DIR';

/** Where a location came from. */
export type LocationKind = 'dataDir' | 'env' | 'cache' | 'system';

/** One directory that may hold a dataset's files. */
export interface SearchLocation {
  readonly kind: LocationKind;
  /** Absolute path. */
  readonly dir: string;
  /** How a person would recognise it in a message, e.g. "SHARDLINE_DATA_DIR". */
  readonly label: string;
}

/** Options that decide the search locations; see {@link searchLocations}. */
export interface LocationOptions {
  /** Explicit directory (a CLI's `--data-dir`), searched first. */
  dataDir?: string;
  /**
   * The user cache directory of this dataset, where downloads go. Default
   * `$XDG_CACHE_HOME/shardline/<name>`, else `~/.cache/shardline/<name>`.
   */
  cacheDir?: string;
  /**
   * Read-only directories searched after the cache. Default `/usr/share/datasets/<name>`, where
   * Debian's `dataset-*` packages install.
   */
  searchPaths?: readonly string[];
  /** Environment to read SHARDLINE_DATA_DIR, XDG_CACHE_HOME and HOME from. Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

/**
 * The user cache directory of dataset `name`: `$XDG_CACHE_HOME/shardline/<name>` when
 * XDG_CACHE_HOME is an absolute path (the XDG spec says to ignore relative ones), else
 * `$HOME/.cache/shardline/<name>`.
 */
export function userCacheDir(
  name: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): string {
  const xdg = env.XDG_CACHE_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.cache');
  return join(base, 'shardline', name);
}

/**
 * The directories searched for `descriptor`'s files, in order, without duplicates. An explicit
 * `dataDir` and SHARDLINE_DATA_DIR are each tried as given and then with `/<name>` appended, so
 * either can point at the files themselves or at a root holding one directory per dataset.
 *
 * @example
 * ```ts
 * searchLocations(getDataset('fashion-mnist'), { env: {} }).map((l) => l.dir);
 * // ['/home/me/.cache/shardline/fashion-mnist', '/usr/share/datasets/fashion-mnist']
 * ```
 */
export function searchLocations(
  descriptor: DatasetDescriptor,
  options: LocationOptions = {},
): SearchLocation[] {
  const env = options.env ?? process.env;
  const { name } = descriptor;
  const found: SearchLocation[] = [];
  const add = (kind: LocationKind, dir: string, label: string) => {
    const abs = resolve(dir);
    if (!found.some((l) => l.dir === abs)) found.push({ kind, dir: abs, label });
  };
  if (options.dataDir) {
    add('dataDir', options.dataDir, 'data directory (--data-dir)');
    add('dataDir', join(options.dataDir, name), 'data directory (--data-dir)');
  }
  const fromEnv = env[DATA_DIR_ENV];
  if (fromEnv) {
    add('env', fromEnv, DATA_DIR_ENV);
    add('env', join(fromEnv, name), DATA_DIR_ENV);
  }
  add('cache', options.cacheDir ?? userCacheDir(name, env), 'user cache');
  const system = options.searchPaths ?? [join('/usr/share/datasets', name)];
  for (const dir of system) {
    add(
      'system',
      dir,
      descriptor.debianPackage && resolve(dir) === join('/usr/share/datasets', name)
        ? `Debian package ${descriptor.debianPackage}`
        : 'search path',
    );
  }
  return found;
}
