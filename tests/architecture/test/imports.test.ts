/**
 * design.md's arrows, checked on the source: apps -> packages -> core, no app imports another
 * app's code, only the apps and @shardline/protocol import @grpc/grpc-js, and every workspace
 * package a file imports is declared in its package.json. The manifests test checks the
 * declared dependencies; this one checks what the code really imports, so a stray relative path
 * into another app or a forgotten dependency fails here instead of on a user's machine.
 *
 * The apps' tests share helpers through @shardline/test-support (tests/support), a private
 * workspace package. It is checked with the rest, as a package that may import no app: else it
 * would be a way for one app's tests to reach another app's code.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type PrivatePackage,
  privateWorkspacePackages,
  repoRoot,
  type WorkspacePackage,
  workspacePackages,
} from '../../release/lib/workspace.js';

/**
 * A package whose imports are checked: the published ones, and the private test helpers, which
 * workspacePackages() leaves out since the release tests must not try to publish them.
 * (tests/api is left out on purpose: it is a user's program, importing the apps by name.)
 */
type CheckedPackage = PrivatePackage & { kind: WorkspacePackage['kind'] | 'test-support' };

const TEST_SUPPORT = '@shardline/test-support';
const found = privateWorkspacePackages().find((pkg) => pkg.manifest.name === TEST_SUPPORT);
if (!found) throw new Error(`No private workspace package under tests/ is named ${TEST_SUPPORT}.`);
const testSupport: CheckedPackage = { ...found, kind: 'test-support' };
const packages: CheckedPackage[] = [...workspacePackages(), testSupport];
const byName = new Map(packages.map((pkg) => [pkg.manifest.name, pkg]));
const apps = packages.filter((pkg) => pkg.kind === 'app');

/** Every .ts/.mts/.mjs/.js file under `dir`, skipping generated, built and installed trees. */
function sourceFiles(dir: string): string[] {
  const skip = new Set(['node_modules', 'dist', 'gen']);
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return skip.has(entry.name) ? [] : sourceFiles(path);
    return /\.(m?ts|m?js)$/.test(entry.name) && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/**
 * The module specifiers a file imports or re-exports, statically or dynamically. Comments are
 * dropped first so an example in a JSDoc block does not count.
 */
function importedSpecifiers(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  return patterns.flatMap((pattern) => [...code.matchAll(pattern)].map((m) => m[1]!));
}

/** The workspace package (by name) a specifier reaches, directly or by a relative path. */
function targetPackage(file: string, specifier: string): string | undefined {
  if (specifier.startsWith('.')) {
    const target = resolve(file, '..', specifier);
    const owner = packages.find((pkg) =>
      `${target}${sep}`.startsWith(`${join(repoRoot, pkg.dir)}${sep}`),
    );
    return owner?.manifest.name;
  }
  const name = specifier.startsWith('@')
    ? specifier.split('/').slice(0, 2).join('/')
    : specifier.split('/')[0]!;
  return name;
}

const files = packages.flatMap((pkg) =>
  ['src', 'test', 'bench']
    .map((folder) => join(repoRoot, pkg.dir, folder))
    .flatMap((dir) => {
      try {
        return sourceFiles(dir);
      } catch {
        return []; // the package has no such folder
      }
    })
    .map((file) => ({ pkg, file, imports: importedSpecifiers(readFileSync(file, 'utf8')) })),
);

describe('import rules (design.md, "Layout and data flow")', () => {
  it('finds the sources it checks', () => {
    expect(apps.map((app) => app.manifest.name).sort()).toEqual([
      '@shardline/coordinator',
      '@shardline/worker',
    ]);
    expect(files.length).toBeGreaterThan(50);
    expect(files.filter(({ pkg }) => pkg === testSupport).length).toBeGreaterThan(0);
  });

  it('no app imports code of another app, and no package imports an app', () => {
    const appNames = new Set(apps.map((app) => app.manifest.name));
    const offences = files.flatMap(({ pkg, file, imports }) =>
      imports
        .filter((specifier) => {
          const target = targetPackage(file, specifier);
          return target !== undefined && appNames.has(target) && target !== pkg.manifest.name;
        })
        .map((specifier) => `${relative(repoRoot, file)} imports ${specifier}`),
    );
    expect(offences).toEqual([]);
  });

  it('only the apps and @shardline/protocol import @grpc/grpc-js', () => {
    // The test helpers count as the apps' tests: their peer probe dials as a worker does.
    const allowed = new Set([
      '@shardline/protocol',
      testSupport.manifest.name,
      ...apps.map((app) => app.manifest.name),
    ]);
    const offences = files
      .filter(({ pkg }) => !allowed.has(pkg.manifest.name))
      .flatMap(({ file, imports }) =>
        imports
          .filter((s) => s === '@grpc/grpc-js' || s.startsWith('@grpc/grpc-js/'))
          .map((s) => `${relative(repoRoot, file)} imports ${s}`),
      );
    expect(offences).toEqual([]);
  });

  it('every workspace package a source file imports is declared in its package.json', () => {
    const offences = files.flatMap(({ pkg, file, imports }) => {
      const declared = new Set(
        Object.keys({
          ...pkg.manifest.dependencies,
          ...pkg.manifest.optionalDependencies,
          ...pkg.manifest.peerDependencies,
          // Tests and benches may use dev dependencies; shipped sources may not.
          ...(file.includes(`${sep}src${sep}`) ? {} : pkg.manifest.devDependencies),
        }),
      );
      return imports
        .map((specifier) => targetPackage(file, specifier))
        .filter(
          (target): target is string =>
            target !== undefined &&
            byName.has(target) &&
            target !== pkg.manifest.name &&
            !declared.has(target),
        )
        .map((target) => `${relative(repoRoot, file)} imports ${target}, not in its package.json`);
    });
    expect(offences).toEqual([]);
  });
});

describe('the shared test helpers (tests/support)', () => {
  it('are private, so nothing publishes them', () => {
    expect(testSupport.dir).toBe('tests/support');
    expect(testSupport.manifest.private).toBe(true);
  });

  it('reach only tests: no shipped source imports them, and no app depends on them at run time', () => {
    const name = testSupport.manifest.name;
    const offences = files
      .filter(({ pkg, file }) => pkg !== testSupport && file.includes(`${sep}src${sep}`))
      .flatMap(({ file, imports }) =>
        imports
          .filter((specifier) => targetPackage(file, specifier) === name)
          .map((specifier) => `${relative(repoRoot, file)} imports ${specifier}`),
      );
    expect(offences).toEqual([]);
    const runtime = packages
      .filter((pkg) =>
        Object.keys({
          ...pkg.manifest.dependencies,
          ...pkg.manifest.optionalDependencies,
          ...pkg.manifest.peerDependencies,
        }).includes(name),
      )
      .map((pkg) => pkg.manifest.name);
    expect(runtime).toEqual([]);
  });
});

describe('importedSpecifiers', () => {
  it('reads static, type-only, side-effect, re-export and dynamic imports, and skips comments', () => {
    const source = [
      "import { a } from '@shardline/core';",
      "import type { B } from '../src/b.js';",
      "import '@shardline/side-effect';",
      "export { c } from './c.js';",
      "export * from '@shardline/all';",
      "const d = await import('@shardline/worker');",
      "// import { e } from '@shardline/commented';",
      "/** import { f } from '@shardline/documented'; */",
      "const url = 'http://example.org/x'; import { g } from '@grpc/grpc-js';",
    ].join('\n');
    expect(importedSpecifiers(source).sort()).toEqual(
      [
        '../src/b.js',
        './c.js',
        '@grpc/grpc-js',
        '@shardline/all',
        '@shardline/core',
        '@shardline/side-effect',
        '@shardline/worker',
      ].sort(),
    );
  });
});
