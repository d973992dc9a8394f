/**
 * The packages as their users get them: packed with pnpm, checked with publint and
 * arethetypeswrong, then installed with npm into fresh projects outside the workspace, where a
 * script loads Fashion-MNIST, builds fast-cnn, trains a step and computes metrics, and tsc checks
 * a TypeScript consumer against the installed declarations. A package that misses a file, a
 * dependency or a type fails here.
 */
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { type PackedPackage, packAll } from '../../../scripts/pack-all.mjs';
import { createProject, npmInstall } from '../lib/npm.js';
import { run, runOk, tails } from '../lib/processes.js';
import { type LocalRegistry, startEmptyRegistry } from '../lib/registries.js';
import { createScratch } from '../lib/scratch.js';
import { buildWorkspace, repoRoot, workspacePackages } from '../lib/workspace.js';

const bin = (name: string) => join(repoRoot, 'node_modules/.bin', name);
const fixtures = join(repoRoot, 'tests/release/fixtures/consumer');
const catalog = (
  parseYaml(readFileSync(join(repoRoot, 'pnpm-workspace.yaml'), 'utf8')) as {
    catalog: Record<string, string>;
  }
).catalog;
/** `name@version` as the workspace's catalog pins it, so consumers install what CI tests. */
const pinned = (name: string) => {
  if (!catalog[name]) throw new Error(`pnpm-workspace.yaml's catalog has no entry for ${name}.`);
  return `${name}@${catalog[name]}`;
};

const scratch = createScratch('shardline-release');
let packed: PackedPackage[] = [];
let unpacked = '';
let emptyRegistry: LocalRegistry | undefined;

/** The tarball of `name`; throws when packing did not produce one. */
function tarball(name: string): string {
  const found = packed.find((pkg) => pkg.name === name);
  if (!found)
    throw new Error(
      `No tarball for ${name}: pnpm pack made ${packed.map((pkg) => pkg.name).join(', ')}.`,
    );
  return found.tarball;
}

beforeAll(async () => {
  await buildWorkspace();
  packed = packAll({ destination: scratch.dir('tarballs') });
  unpacked = scratch.dir('unpacked');
  for (const pkg of packed) {
    const dir = join(unpacked, pkg.name);
    mkdirSync(dir, { recursive: true });
    await runOk('tar', ['-xzf', pkg.tarball, '-C', dir, '--strip-components=1'], {
      cwd: dir,
      timeoutMs: 60_000,
    });
  }
  emptyRegistry = await startEmptyRegistry();
}, 600_000);

afterAll(async () => {
  await emptyRegistry?.stop();
  scratch.removeAll();
});

// Real tools on seven tarballs, and real installs: minutes when npm's cache is cold.
describe('packed tarballs', { timeout: 300_000 }, () => {
  it('are made for every workspace package', () => {
    expect(packed.map((pkg) => pkg.name).sort()).toEqual(
      workspacePackages()
        .map((pkg) => pkg.manifest.name)
        .sort(),
    );
  });

  it('pass publint --strict', async () => {
    for (const pkg of packed) {
      const result = await run(bin('publint'), ['run', '--strict', pkg.tarball], {
        cwd: repoRoot,
        timeoutMs: 60_000,
      });
      expect(result.code, `publint on ${pkg.name}\n${tails(result)}`).toBe(0);
    }
  });

  // ESM only (conventions.md): there is no CommonJS build, so `require()` (node10 and node16
  // from CJS) cannot resolve by design; the esm-only profile checks node16-ESM and bundler.
  it('pass arethetypeswrong with the esm-only profile', async () => {
    for (const pkg of packed) {
      const result = await run(
        bin('attw'),
        [
          '--profile',
          'esm-only',
          '--no-definitely-typed',
          '--format',
          'ascii',
          '--no-color',
          pkg.tarball,
        ],
        { cwd: repoRoot, timeoutMs: 120_000 },
      );
      expect(result.code, `attw on ${pkg.name}\n${tails(result)}`).toBe(0);
    }
  });

  it('carry real versions in place of workspace: and catalog: ranges', () => {
    const versions = new Map(packed.map((pkg) => [pkg.name, pkg.version]));
    for (const pkg of packed) {
      const manifest = readManifest(pkg);
      for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies'] as const) {
        for (const [dep, range] of Object.entries(manifest[field] ?? {})) {
          expect(range, `${pkg.name} ${field}.${dep}`).not.toMatch(/^(workspace|catalog):/);
          // Released together: each internal dependency is exactly the version packed with it.
          if (versions.has(dep)) expect(range, `${pkg.name} -> ${dep}`).toBe(versions.get(dep));
        }
      }
    }
  });

  it('hold the license, the README, every export target and the sources their maps point at', () => {
    for (const pkg of packed) {
      const root = join(unpacked, pkg.name);
      expect(pkg.files, pkg.name).toEqual(
        expect.arrayContaining(['LICENSE', 'README.md', 'package.json']),
      );
      expect(
        pkg.files.filter((file) => /(^|\/)(test|bench)\/|\.tsbuildinfo$/.test(file)),
        `${pkg.name} ships tests or build leftovers`,
      ).toEqual([]);
      for (const target of exportTargets(readManifest(pkg))) {
        expect(
          existsSync(join(root, target)),
          `${pkg.name}: exports point at ${target}, which is not in the tarball`,
        ).toBe(true);
      }
      // Declaration maps and source maps name ../src/*.ts: shipping src/ makes "go to
      // definition" and stack traces land in real source (and the @shardline/source condition
      // resolve) instead of pointing at nothing.
      for (const map of pkg.files.filter((file) => file.endsWith('.map'))) {
        const { sources } = JSON.parse(readFileSync(join(root, map), 'utf8')) as {
          sources: string[];
        };
        for (const source of sources) {
          const file = relative(root, resolve(root, dirname(map), source));
          const hint = existsSync(join(repoRoot, workspaceDir(pkg.name), file))
            ? 'add its folder to "files"'
            : `${file} no longer exists: ${map} is a stale build output; run \`pnpm build --force\``;
          expect(
            pkg.files,
            `${pkg.name}: ${map} points at ${file}, not in the tarball (${hint})`,
          ).toContain(file);
        }
      }
    }
  });

  it('give each app an executable bin with a node shebang', () => {
    for (const pkg of packed) {
      for (const [name, target] of Object.entries(readManifest(pkg).bin ?? {})) {
        const file = join(unpacked, pkg.name, target);
        expect(readFileSync(file, 'utf8').split('\n')[0], `${pkg.name} bin ${name}`).toBe(
          '#!/usr/bin/env node',
        );
        expect(statSync(file).mode & 0o111, `${pkg.name} bin ${name} is executable`).not.toBe(0);
      }
    }
  });
});

describe('a fresh npm project with the library tarballs', { timeout: 300_000 }, () => {
  let project = '';

  beforeAll(async () => {
    project = scratch.dir('consumer');
    createProject(project, 'shardline-consumer');
    cpSync(fixtures, project, { recursive: true });
    await npmInstall(
      project,
      [
        ...['core', 'datasets', 'models', 'metrics', 'protocol'].map((name) =>
          tarball(`@shardline/${name}`),
        ),
        // The user's choice of TensorFlow.js and backend (peers), and Node's types for tsc.
        pinned('@tensorflow/tfjs'),
        pinned('@tensorflow/tfjs-backend-wasm'),
        pinned('@types/node'),
      ],
      { shardlineRegistry: emptyRegistry!.url },
    );
  }, 600_000);

  it('loads Fashion-MNIST, trains fast-cnn one step on wasm and computes metrics', async () => {
    const result = await runOk(process.execPath, ['trainStep.mjs'], {
      cwd: project,
      timeoutMs: 180_000,
    });
    const report = JSON.parse(result.stdout.trim().split('\n').at(-1)!);
    expect(report).toMatchObject({
      backend: 'wasm',
      trainCount: 256,
      testCount: 256,
      sampleCount: 32,
      gradientIntact: true,
      weightsChanged: true,
      leakedTensors: 0,
      evaluated: 256,
      confusionTotal: 256,
      xsShape: [32, 28, 28, 1],
    });
    // An untrained 10-class model: cross-entropy of a few units (ln 10 = 2.3 for a uniform guess).
    expect(report.loss).toBeGreaterThan(0.5);
    expect(report.loss).toBeLessThan(10);
    expect(report.accuracy).toBeGreaterThanOrEqual(0);
    expect(report.accuracy).toBeLessThanOrEqual(1);
    expect(report.chunks).toBeGreaterThan(1);
  });

  it('type-checks a TypeScript consumer against the installed declarations', async () => {
    const result = await run(
      process.execPath,
      [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'],
      {
        cwd: project,
        timeoutMs: 120_000,
      },
    );
    expect(result.code, tails(result)).toBe(0);
  });

  it('fails that type check when a package ships without its declarations', async () => {
    // Proves the check above can fail: the same consumer, with metrics' index.d.ts gone.
    const declarations = join(project, 'node_modules/@shardline/metrics/dist/index.d.ts');
    const saved = readFileSync(declarations);
    rmSync(declarations);
    try {
      const result = await run(
        process.execPath,
        [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'],
        {
          cwd: project,
          timeoutMs: 120_000,
        },
      );
      expect(result.code).not.toBe(0);
      expect(result.stdout).toContain(
        "Could not find a declaration file for module '@shardline/metrics'",
      );
    } finally {
      writeFileSync(declarations, saved);
    }
  });
});

describe('a fresh npm project without TensorFlow.js', { timeout: 300_000 }, () => {
  let project = '';

  beforeAll(async () => {
    project = scratch.dir('no-tfjs');
    createProject(project, 'shardline-no-tfjs');
    cpSync(join(fixtures, 'withoutTfjs.mjs'), join(project, 'withoutTfjs.mjs'));
    await npmInstall(
      project,
      ['core', 'datasets', 'metrics', 'protocol'].map((name) => tarball(`@shardline/${name}`)),
      { shardlineRegistry: emptyRegistry!.url },
    );
  }, 600_000);

  it('gets no TensorFlow.js from npm: no package requires it as a peer', () => {
    expect(existsSync(join(project, 'node_modules/@tensorflow'))).toBe(false);
  });

  it('runs metrics, protocol, datasets loading and core errors and logger', async () => {
    const result = await runOk(process.execPath, ['withoutTfjs.mjs'], {
      cwd: project,
      timeoutMs: 60_000,
    });
    const report = JSON.parse(result.stdout.trim());
    expect(report).toMatchObject({
      batchShape: [4, 28, 28, 1],
      halfRoundTrip: [1, 0.5, -2],
      errorClass: 'INVALID_ARGUMENT',
      // The optional SIMD CRC-32 arrives with the tarball's dependencies (linux x64 here).
      crc32: 'simd',
    });
    const zeros = report.labels.filter((label: number) => label === 0).length;
    expect(report.accuracy).toBe(zeros / report.labels.length);
  });

  it('names @tensorflow/tfjs when a part that needs it is imported', async () => {
    for (const entry of ['@shardline/core', '@shardline/datasets/tensors']) {
      const result = await run(
        process.execPath,
        ['--input-type=module', '-e', `await import('${entry}')`],
        {
          cwd: project,
          timeoutMs: 60_000,
        },
      );
      expect(result.code, entry).not.toBe(0);
      expect(result.stderr, entry).toContain("Cannot find package '@tensorflow/tfjs'");
    }
  });
});

describe('the apps installed from their tarballs into a folder', { timeout: 300_000 }, () => {
  let prefix = '';

  beforeAll(async () => {
    // The offline way to install the CLIs: every tarball into one folder, so npm places a single
    // TensorFlow.js that every package shares. (`npm i -g` of all tarballs would make each one a
    // separate top-level package, each with its own TensorFlow.js copy: see docs/releasing.md.)
    prefix = scratch.dir('apps');
    createProject(prefix, 'shardline-cli');
    await npmInstall(
      prefix,
      packed.map((pkg) => pkg.tarball),
      { shardlineRegistry: emptyRegistry!.url },
    );
  }, 600_000);

  it.each(['shardline-coordinator', 'shardline-worker'])(
    '%s --help and --version work',
    async (name) => {
      const cli = join(prefix, 'node_modules/.bin', name);
      const help = await runOk(cli, ['--help'], { cwd: prefix, timeoutMs: 60_000 });
      expect(help.stdout).toContain(`Usage: ${name}`);
      const version = await runOk(cli, ['--version'], { cwd: prefix, timeoutMs: 60_000 });
      expect(version.stdout.trim()).toBe(
        packed.find((pkg) => pkg.name === `@shardline/${name.split('-')[1]}`)!.version,
      );
    },
  );

  it('holds one TensorFlow.js', () => {
    const cores = findDirs(join(prefix, 'node_modules'), '@tensorflow/tfjs-core');
    expect(cores.map((dir) => relative(prefix, dir))).toEqual([
      'node_modules/@tensorflow/tfjs-core',
    ]);
  });
});

/** The folder of a workspace package, from its name. */
function workspaceDir(name: string): string {
  const found = workspacePackages().find((pkg) => pkg.manifest.name === name);
  if (!found) throw new Error(`${name} is not a workspace package.`);
  return found.dir;
}

function readManifest(pkg: PackedPackage): {
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  exports?: Record<string, string | Record<string, string>>;
  bin?: Record<string, string>;
} {
  return JSON.parse(readFileSync(join(unpacked, pkg.name, 'package.json'), 'utf8'));
}

/** Every file an `exports` map points at, under any condition (the private one included). */
function exportTargets(manifest: ReturnType<typeof readManifest>): string[] {
  return Object.values(manifest.exports ?? {}).flatMap((target) =>
    typeof target === 'string' ? [target] : Object.values(target),
  );
}

/** Folders under `root` (any depth of node_modules) whose path ends with `suffix`. */
function findDirs(root: string, suffix: string): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const path = join(dir, entry.name);
      if (path.endsWith(`/${suffix}`)) found.push(path);
      walk(path);
    }
  };
  walk(root);
  return found.sort();
}
