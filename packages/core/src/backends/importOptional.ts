import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Imports an optional dependency, looking first where this package is installed, then next to
 * the program being run and in the working directory. Apps install the native TensorFlow
 * packages as their own optional dependencies; a library such as this one cannot always see
 * those from its own folder (pnpm's strict layout), so it also asks from the app's side.
 *
 * Resolves to the module namespace, or rejects with the first error that was not "not found"
 * (a package that is installed but fails to load says why), else a not-found error.
 */
export async function importOptional(specifier: string): Promise<Record<string, unknown>> {
  try {
    return (await import(specifier)) as Record<string, unknown>;
  } catch (error) {
    if (!isNotFound(error, specifier)) throw error;
    for (const base of fallbackBases()) {
      let resolved: string;
      try {
        resolved = createRequire(base).resolve(specifier);
      } catch {
        continue;
      }
      return (await import(pathToFileURL(resolved).href)) as Record<string, unknown>;
    }
    throw error;
  }
}

/**
 * Where {@link importOptional} finds `specifier`: the resolved entry file, searched in the same
 * places (this package's folder, next to the program being run, the working directory), or
 * undefined when it is installed in none of them. Diagnostics use it to inspect a package that
 * is installed but fails to load (its version, whether its install script left its native files).
 *
 * @example
 * ```ts
 * locateOptional('@tensorflow/tfjs-node'); // '/app/node_modules/@tensorflow/tfjs-node/dist/index.js'
 * ```
 */
export function locateOptional(specifier: string): string | undefined {
  for (const base of [import.meta.url, ...fallbackBases()]) {
    try {
      return createRequire(base).resolve(specifier);
    } catch {
      // Not visible from this base; try the next one.
    }
  }
  return undefined;
}

function fallbackBases(): string[] {
  const bases = new Set<string>();
  const main = process.argv[1];
  if (main) {
    bases.add(resolve(dirname(main), 'noop.js'));
    // npm links a global CLI as <prefix>/bin/<name> -> ../lib/node_modules/<pkg>/dist/cli.js:
    // the app's own node_modules are next to the link's target, not next to the link.
    try {
      bases.add(resolve(dirname(realpathSync(main)), 'noop.js'));
    } catch {
      // The program path is not a file on disk (node -e, a REPL): nothing more to try.
    }
  }
  bases.add(resolve(process.cwd(), 'noop.js'));
  return [...bases];
}

/** True when `error` says the module itself is missing (not one of its own imports failing). */
export function isNotFound(error: unknown, specifier: string): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') return false;
  const message = String((error as Error).message);
  return message.includes(`'${specifier}'`) || message.includes(`"${specifier}"`);
}
