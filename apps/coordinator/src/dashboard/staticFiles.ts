/**
 * The dashboard page's own files (HTML, scripts, styles, fonts), served from the package's
 * `dashboard/` folder: the page needs no CDN and works on machines without internet access.
 *
 * The folder sits beside `src/` and `dist/` in the package (and in its `files`), so the same
 * relative URL finds it from the TypeScript source (tests) and from the build.
 *
 * The chart libraries' browser bundles are served from the installed packages, under
 * `/vendor/` ({@link VENDOR_SCRIPTS}): the page draws with the same Vega and Vega-Lite versions
 * that render report.html's SVGs, and nothing is copied into the folder to go stale.
 */
import { readFile, stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's `dashboard/` folder (from src/dashboard/ or dist/dashboard/ alike). */
export const DASHBOARD_ASSETS_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

/**
 * The Content-Security-Policy of every page file: nothing from other origins (a CDN link fails
 * loudly instead of working only online); `unsafe-eval` because chart libraries such as Vega
 * compile their expressions with `Function`; inline styles because they set sizes at runtime.
 */
export const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; " +
  "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'";

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** Serves the files of one folder; resolves whether it answered (false: no such file). */
export type StaticFiles = (
  pathname: string,
  response: ServerResponse,
  head: boolean,
) => Promise<boolean>;

/** Sends the file at `path` with the page's headers; resolves false when it is not a file. */
async function sendFile(path: string, response: ServerResponse, head: boolean): Promise<boolean> {
  const type = CONTENT_TYPES[extname(path).toLowerCase()];
  if (type === undefined) return false;
  try {
    if (!(await stat(path)).isFile()) return false;
    const body = await readFile(path);
    response.writeHead(200, {
      'content-type': type,
      'content-length': body.byteLength,
      // Revalidate every time: a new release's page must not run an old release's scripts.
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      'content-security-policy': DASHBOARD_CSP,
    });
    response.end(head ? undefined : body);
    return true;
  } catch {
    return false;
  }
}

/**
 * Serves the files under `root`: `/` is `index.html`; paths that leave `root` (`..`, encoded
 * or not) and anything but regular files are not found.
 */
export function createStaticFiles(root: string = DASHBOARD_ASSETS_DIR): StaticFiles {
  const base = resolve(root);
  return async (pathname, response, head) => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(pathname);
    } catch {
      return false;
    }
    if (decoded.includes('\0')) return false;
    const relative = decoded.endsWith('/') ? `${decoded}index.html` : decoded;
    const path = resolve(base, `.${relative}`);
    if (path !== base && !path.startsWith(base + sep)) return false;
    return sendFile(path, response, head);
  };
}

/** Where the browser bundles are served: `/vendor/<name>`. */
export const VENDOR_PREFIX = '/vendor/';

/**
 * The browser bundles the page loads, by their name under {@link VENDOR_PREFIX}: the package
 * whose entry point they sit beside, and their file. UMD builds: classic scripts that define the
 * globals `vega` and `vegaLite` (Vega-Lite's expects `vega` to be loaded first).
 */
export const VENDOR_SCRIPTS: Readonly<Record<string, { from: string; file: string }>> = {
  'vega.min.js': { from: 'vega', file: 'vega.min.js' },
  'vega-lite.min.js': { from: 'vega-lite', file: 'vega-lite.min.js' },
};

/**
 * Serves {@link VENDOR_SCRIPTS} from the installed packages, and nothing else from
 * node_modules. A package that cannot be resolved (a broken install) is not found: the page then
 * says its charts could not load, and shows the rest.
 */
export function createVendorFiles(
  scripts: Readonly<Record<string, { from: string; file: string }>> = VENDOR_SCRIPTS,
): StaticFiles {
  const require = createRequire(import.meta.url);
  const paths = new Map<string, string | undefined>();
  /** The bundle's path: beside its package's entry point (the packages export no other path). */
  const pathOf = (name: string): string | undefined => {
    if (!paths.has(name)) {
      const entry = scripts[name];
      let path: string | undefined;
      try {
        if (entry) path = join(dirname(require.resolve(entry.from)), entry.file);
      } catch {
        path = undefined;
      }
      paths.set(name, path);
    }
    return paths.get(name);
  };
  return async (pathname, response, head) => {
    if (!pathname.startsWith(VENDOR_PREFIX)) return false;
    const name = pathname.slice(VENDOR_PREFIX.length);
    if (!Object.hasOwn(scripts, name)) return false;
    const path = pathOf(name);
    return path === undefined ? false : sendFile(path, response, head);
  };
}
