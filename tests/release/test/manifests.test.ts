/**
 * What every published package.json, README and the changesets config must say, read from the
 * source tree (fast; the e2e tests check the packed and installed result).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot, type WorkspacePackage, workspacePackages } from '../lib/workspace.js';

const packages = workspacePackages();
const libraries = packages.filter((pkg) => pkg.kind === 'library');
const apps = packages.filter((pkg) => pkg.kind === 'app');
const names = new Set(packages.map((pkg) => pkg.manifest.name));

describe.each(packages.map((pkg) => [pkg.manifest.name, pkg] as const))('%s', (_name, pkg) => {
  const { manifest } = pkg;

  it('is publishable: public, licensed, with its repository folder and Node version', () => {
    expect(manifest.private, 'published packages must not be private').toBeUndefined();
    expect(manifest.publishConfig?.access).toBe('public');
    expect(manifest.license).toBe('Apache-2.0');
    expect(existsSync(join(repoRoot, pkg.dir, 'LICENSE')), `${pkg.dir}/LICENSE`).toBe(true);
    expect(manifest.repository?.url).toMatch(/^git\+https:\/\/.+\.git$/);
    expect(manifest.repository?.directory).toBe(pkg.dir);
    expect(manifest.type).toBe('module');
    expect(manifest.engines?.node).toBe(rootManifest().engines.node);
  });

  it('exports types and JavaScript for every entry point, and ships their sources', () => {
    expect(manifest.files).toEqual(expect.arrayContaining(['dist', 'src']));
    expect(manifest.files, 'tests stay out of the tarball').not.toContain('test');
    for (const [entry, target] of Object.entries(manifest.exports ?? {})) {
      if (entry === './package.json') continue;
      expect(typeof target, `exports["${entry}"] should be a conditions object`).toBe('object');
      const conditions = Object.keys(target as Record<string, string>);
      // The private source condition first (only vitest and tsc turn it on), then types, default.
      expect(conditions, `exports["${entry}"]`).toEqual(['@shardline/source', 'types', 'default']);
    }
    expect(manifest.exports?.['./package.json']).toBe('./package.json');
  });

  it('depends on nothing it must not (design.md: apps -> packages -> core)', () => {
    const runtime = { ...manifest.dependencies, ...manifest.optionalDependencies };
    for (const [dep, range] of Object.entries({ ...runtime, ...manifest.peerDependencies })) {
      if (names.has(dep)) expect(range, `${dep} is a workspace package`).toBe('workspace:*');
    }
    if (pkg.kind === 'library') {
      const apps = Object.keys(runtime).filter(
        (dep) => dep === '@shardline/coordinator' || dep === '@shardline/worker',
      );
      expect(apps, 'packages never depend on an app').toEqual([]);
      const tensorflow = Object.keys(runtime).filter((dep) => dep.startsWith('@tensorflow/'));
      expect(tensorflow, 'TensorFlow.js is a peer of the packages: the user picks it').toEqual([]);
    }
  });
});

describe.each(libraries.map((pkg) => [pkg.manifest.name, pkg] as const))(
  'library %s',
  (_name, pkg) => {
    it('is side-effect free', () => {
      expect(pkg.manifest.sideEffects).toBe(false);
    });

    it('has a README whose Install section names the package and every peer it needs', () => {
      const install = installSection(pkg);
      expect(install).toContain(`npm i ${pkg.manifest.name}`);
      for (const peer of requiredPeers(pkg))
        expect(install, `the Install section should name ${peer}`).toContain(peer);
    });
  },
);

describe('the TensorFlow.js peer', () => {
  it('is optional where only part of a package needs it (core, datasets) and absent where nothing does', () => {
    const byName = new Map(packages.map((pkg) => [pkg.manifest.name, pkg.manifest]));
    // core: errors and logger load without it (metrics and protocol use only those).
    expect(
      byName.get('@shardline/core')?.peerDependenciesMeta?.['@tensorflow/tfjs']?.optional,
    ).toBe(true);
    // datasets: only @shardline/datasets/tensors needs it.
    expect(
      byName.get('@shardline/datasets')?.peerDependenciesMeta?.['@tensorflow/tfjs']?.optional,
    ).toBe(true);
    // models builds tf.LayersModels: always needs it.
    expect(byName.get('@shardline/models')?.peerDependencies?.['@tensorflow/tfjs']).toBeDefined();
    expect(
      byName.get('@shardline/models')?.peerDependenciesMeta?.['@tensorflow/tfjs']?.optional,
    ).not.toBe(true);
    for (const name of ['@shardline/metrics', '@shardline/protocol']) {
      expect(Object.keys(byName.get(name)?.peerDependencies ?? {}), name).toEqual([]);
    }
  });
});

describe.each(apps.map((pkg) => [pkg.manifest.name, pkg] as const))('app %s', (_name, pkg) => {
  it('ships its CLI with TensorFlow.js as a real dependency and the native backends optional', () => {
    expect(Object.keys(pkg.manifest.bin ?? {})).toEqual([`shardline-${pkg.dir.split('/')[1]}`]);
    expect(pkg.manifest.dependencies?.['@tensorflow/tfjs']).toBe('catalog:');
    expect(pkg.manifest.dependencies?.['@tensorflow/tfjs-backend-wasm']).toBe('catalog:');
    expect(Object.keys(pkg.manifest.optionalDependencies ?? {}).sort()).toEqual([
      '@tensorflow/tfjs-node',
      '@tensorflow/tfjs-node-gpu',
    ]);
  });
});

describe('changesets', () => {
  const config = JSON.parse(readFileSync(join(repoRoot, '.changeset/config.json'), 'utf8')) as {
    access: string;
    baseBranch: string;
    ignore: string[];
  };

  it('publishes publicly from main and ignores no published package', () => {
    expect(config.access).toBe('public');
    expect(config.baseBranch).toBe('main');
    expect(config.ignore.filter((name) => names.has(name))).toEqual([]);
  });
});

function rootManifest(): { engines: { node: string } } {
  return JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
}

/** The text of the README's "## Install" section, up to the next level-2 heading. */
function installSection(pkg: WorkspacePackage): string {
  const readme = readFileSync(join(repoRoot, pkg.dir, 'README.md'), 'utf8');
  const match = /^## Install\n([\s\S]*?)(?=^## )/m.exec(readme);
  if (!match)
    throw new Error(
      `${pkg.dir}/README.md has no "## Install" section followed by another "## " section.`,
    );
  return match[1]!;
}

/** Peers a user must install for the package's main entry point to load. */
function requiredPeers(pkg: WorkspacePackage): string[] {
  return Object.keys(pkg.manifest.peerDependencies ?? {}).filter(
    (peer) => pkg.manifest.peerDependenciesMeta?.[peer]?.optional !== true,
  );
}
