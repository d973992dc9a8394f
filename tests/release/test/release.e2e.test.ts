/**
 * The release path, end to end, on a copy of the working tree: `changeset version` turns the
 * pending changesets into versions and CHANGELOGs, `changeset publish` (which runs `pnpm
 * publish` per package) puts every package on a local Verdaccio, and the CLIs install globally
 * from there, and from their own tarballs, into fresh prefixes and run. The real checkout is
 * never modified, no git tag is made, and the publishing environment can reach no registry but
 * the local one.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PackedPackage, packAll } from '../../../scripts/pack-all.mjs';
import { npmInstall } from '../lib/npm.js';
import { run, runOk, tails } from '../lib/processes.js';
import { fetchPackument, startVerdaccio, type Verdaccio } from '../lib/registries.js';
import { copyWorkingTree } from '../lib/repoCopy.js';
import { createScratch } from '../lib/scratch.js';
import {
  buildWorkspace,
  type Manifest,
  pathWithPnpm,
  workspacePackages,
} from '../lib/workspace.js';

const scratch = createScratch('shardline-publish');
const packages = workspacePackages();
let copy = '';
let verdaccio: Verdaccio | undefined;
let publishEnv: Record<string, string> = {};
/** The released versions packed from the copy, made by the first tarball test. */
let tarballs: PackedPackage[] | undefined;
/** Versions after `changeset version`, by package name. */
const released = new Map<string, string>();

const changeset = () => join(copy, 'node_modules/.bin/changeset');
const readManifest = (dir: string) =>
  JSON.parse(readFileSync(join(copy, dir, 'package.json'), 'utf8')) as Manifest;

beforeAll(async () => {
  await buildWorkspace();
  copy = copyWorkingTree(scratch.dir('repo'));
  verdaccio = await startVerdaccio(scratch.dir('verdaccio'));
  // A home of its own: its .npmrc sends @shardline/* (and anything unscoped) to Verdaccio with
  // the test user's token, and no credential of the real user's ~/.npmrc or ~/.config/pnpm is
  // visible, so a misrouted publish can only fail, never reach the public registry.
  const home = scratch.dir('home');
  writeFileSync(
    join(home, '.npmrc'),
    [
      `registry=${verdaccio.url}`,
      `@shardline:registry=${verdaccio.url}`,
      `${verdaccio.nerfDart}:_authToken=${verdaccio.token}`,
      '',
    ].join('\n'),
  );
  mkdirSync(join(home, '.config'));
  publishEnv = {
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    // changesets asks `npm info` with this registry before publishing each package.
    'npm_config_@shardline:registry': verdaccio.url,
    // Keep npm's download cache (and npx's copy of pnpm) where the user has it.
    npm_config_cache: join(homedir(), '.npm'),
    PATH: pathWithPnpm(),
    CI: 'true',
  };
}, 600_000);

afterAll(async () => {
  await verdaccio?.stop();
  scratch.removeAll();
});

describe('changeset version', { timeout: 300_000 }, () => {
  it('bumps every package with a pending changeset and writes its CHANGELOG', async () => {
    const pending = readdirSync(join(copy, '.changeset')).filter(
      (file) => file.endsWith('.md') && file !== 'README.md',
    );
    expect(pending.length, 'the copy should hold the pending changesets').toBeGreaterThan(0);
    const before = new Map(packages.map((pkg) => [pkg.manifest.name, pkg.manifest.version]));

    await runOk(changeset(), ['version'], { cwd: copy, timeoutMs: 120_000, env: publishEnv });

    for (const pkg of packages) {
      const manifest = readManifest(pkg.dir);
      released.set(manifest.name, manifest.version);
      expect(
        compareVersions(manifest.version, before.get(manifest.name)!),
        `${manifest.name} was bumped`,
      ).toBe(1);
      const changelog = readFileSync(join(copy, pkg.dir, 'CHANGELOG.md'), 'utf8');
      expect(changelog.split('\n')[0]).toBe(`# ${manifest.name}`);
      expect(changelog).toMatch(new RegExp(`^## ${manifest.version.replaceAll('.', '\\.')}$`, 'm'));
      // Internal dependencies stay workspace:*; pnpm writes the real versions at publish time.
      for (const [dep, range] of Object.entries(manifest.dependencies ?? {})) {
        if (dep.startsWith('@shardline/'))
          expect(range, `${manifest.name} -> ${dep}`).toBe('workspace:*');
      }
    }
    const left = readdirSync(join(copy, '.changeset')).filter((file) => pending.includes(file));
    expect(left, 'changesets are consumed by the version step').toEqual([]);
  });
});

describe('changeset publish to a local Verdaccio', { timeout: 600_000 }, () => {
  it('publishes every package at its new version, with its CHANGELOG', async () => {
    const result = await run(changeset(), ['publish', '--no-git-tag'], {
      cwd: copy,
      timeoutMs: 300_000,
      env: publishEnv,
    });
    expect(
      result.code,
      `changeset publish\n${tails(result)}\n--- verdaccio ---\n${verdaccio!.log()}`,
    ).toBe(0);

    for (const [name, version] of released) {
      const packument = await fetchPackument(verdaccio!.url, name);
      expect(packument?.versions, `${name} on the local registry`).toHaveProperty([version]);
      expect(packument?.['dist-tags'].latest, name).toBe(version);
      const manifest = packument!.versions[version] as unknown as Manifest;
      for (const [dep, range] of Object.entries(manifest.dependencies ?? {})) {
        if (released.has(dep))
          expect(range, `${name}@${version} -> ${dep}`).toBe(released.get(dep));
      }
    }
  });

  it('publishes nothing twice when run again (a re-run release job is harmless)', async () => {
    const result = await runOk(changeset(), ['publish', '--no-git-tag'], {
      cwd: copy,
      timeoutMs: 300_000,
      env: publishEnv,
    });
    expect(`${result.stdout}${result.stderr}`).toMatch(/No unpublished projects to publish/);
  });
});

// Each test installs a CLI with npm (minutes when npm's cache is cold), then runs it.
describe('the CLIs installed globally', { timeout: 600_000 }, () => {
  const clis = [
    { bin: 'shardline-coordinator', name: '@shardline/coordinator' },
    { bin: 'shardline-worker', name: '@shardline/worker' },
  ] as const;

  /**
   * `npm i -g --prefix <fresh folder>` of one CLI, as on a machine that runs it; resolves to the
   * prefix. One CLI per install: npm installs each package named on one `npm i -g` line as a
   * separate top-level package, so the coordinator would then load the top-level worker and its
   * second copy of TensorFlow.js instead of its own (docs/releasing.md).
   */
  async function installCli(label: string, spec: string): Promise<string> {
    const prefix = scratch.dir(label);
    await npmInstall(prefix, [spec], { shardlineRegistry: verdaccio!.url, globalPrefix: prefix });
    return prefix;
  }

  /** `<bin> --help` and `--version` work from `prefix`, with a single TensorFlow.js loaded. */
  async function checkCli(prefix: string, bin: string, name: string): Promise<void> {
    const cwd = scratch.dir('cwd');
    const help = await runOk(join(prefix, 'bin', bin), ['--help'], { cwd, timeoutMs: 60_000 });
    expect(help.stdout, bin).toContain(`Usage: ${bin}`);
    // A second TensorFlow.js copy announces itself: "Platform node has already been set",
    // "The kernel '...' for backend 'cpu' is already registered".
    expect(help.stderr, `${bin} --help stderr`).not.toMatch(/already (been set|registered)/);
    const version = await runOk(join(prefix, 'bin', bin), ['--version'], {
      cwd,
      timeoutMs: 60_000,
    });
    expect(version.stdout.trim(), bin).toBe(released.get(name));
    // The libraries sit inside the app's folder, next to the one TensorFlow.js they share.
    const app = join(prefix, 'lib/node_modules', name);
    expect(
      existsSync(join(app, 'node_modules/@shardline/core/package.json')),
      `${name}'s own core`,
    ).toBe(true);
    expect(existsSync(join(app, 'CHANGELOG.md')), `${name} carries its CHANGELOG`).toBe(true);
  }

  it.each(clis)('$bin from the registry: --help and --version work', async ({ bin, name }) => {
    const prefix = await installCli(`registry-${bin}`, `${name}@${released.get(name)}`);
    await checkCli(prefix, bin, name);
    if (bin !== 'shardline-coordinator') return;

    // Without internet the native TensorFlow packages fail to install and npm skips them; the
    // CLI must then train on wasm (or on native TensorFlow where it did install).
    const out = scratch.dir('train');
    const result = await runOk(
      join(prefix, 'bin', bin),
      [
        'train',
        '--in-process',
        '--model',
        'fast-cnn',
        '--epochs',
        '1',
        '--limit-train',
        '64',
        '--limit-test',
        '64',
        '--batch-size',
        '32',
        '--no-download',
        '--log-format',
        'json',
        '--out',
        out,
      ],
      { cwd: out, timeoutMs: 180_000 },
    );
    const events = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event: string; backend?: string; model_path?: string });
    expect(['wasm', 'tensorflow', 'tensorflow-gpu']).toContain(
      events.find((e) => e.event === 'started')?.backend,
    );
    expect(events.at(-1)?.event).toBe('done');
    expect(existsSync(join(events.at(-1)!.model_path!, 'model.json'))).toBe(true);
  });

  it.each(clis)(
    '$bin from its tarball (npm i -g <tarball>): --help and --version work',
    async ({ bin, name }) => {
      tarballs ??= packAll({ destination: scratch.dir('tarballs'), root: copy });
      const tarball = tarballs.find((pkg) => pkg.name === name)?.tarball;
      if (!tarball) throw new Error(`pnpm pack made no tarball for ${name} in the release copy.`);
      const prefix = await installCli(`tarball-${bin}`, tarball);
      await checkCli(prefix, bin, name);
    },
  );
});

/** -1, 0 or 1 as semver `a` is lower, equal or higher than `b` (release versions only). */
function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i]! > pb[i]! ? 1 : -1;
  return 0;
}
