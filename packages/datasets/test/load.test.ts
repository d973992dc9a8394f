import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { createLogger } from '@shardline/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { datasetNames, getDataset } from '../src/descriptors.js';
import { encodeIdx } from '../src/idx.js';
import { type LoadDatasetOptions, loadDataset } from '../src/load.js';
import { searchLocations, userCacheDir } from '../src/locations.js';
import {
  sha256,
  TINY,
  tempDir,
  tinyDescriptor,
  tinyFiles,
  tinyLabel,
  tinyPixel,
  writeFiles,
} from './fixtures.js';

const files = tinyFiles();
const descriptor = tinyDescriptor(files);

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (error) {
    return error as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

describe('resolution order', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  // Every location under the temp root, and no download: nothing outside the test is touched.
  let base: LoadDatasetOptions;
  beforeEach(async () => {
    ({ dir: root, cleanup } = await tempDir());
    base = {
      env: { HOME: join(root, 'home') },
      searchPaths: [join(root, 'system')],
      download: false,
    };
  });
  afterEach(() => cleanup());

  const places = () => ({
    dataDir: join(root, 'explicit'),
    env: join(root, 'env'),
    cache: join(root, 'home', '.cache', 'shardline', 'tiny'),
    system: join(root, 'system'),
  });

  it('lists the locations in order: dataDir, SHARDLINE_DATA_DIR (each also /<name>), cache, search paths', () => {
    const p = places();
    const locations = searchLocations(descriptor, {
      dataDir: p.dataDir,
      env: { ...base.env, SHARDLINE_DATA_DIR: p.env },
      searchPaths: [p.system],
    });
    expect(locations.map((l) => [l.kind, l.dir])).toEqual([
      ['dataDir', p.dataDir],
      ['dataDir', join(p.dataDir, 'tiny')],
      ['env', p.env],
      ['env', join(p.env, 'tiny')],
      ['cache', p.cache],
      ['system', p.system],
    ]);
  });

  it('honours XDG_CACHE_HOME (absolute only) and defaults to /usr/share/datasets/<name>', () => {
    expect(userCacheDir('mnist', { XDG_CACHE_HOME: '/xdg', HOME: '/h' })).toBe(
      '/xdg/shardline/mnist',
    );
    expect(userCacheDir('mnist', { XDG_CACHE_HOME: 'relative', HOME: '/h' })).toBe(
      '/h/.cache/shardline/mnist',
    );
    const fashion = searchLocations(getDataset('fashion-mnist'), { env: { HOME: '/h' } });
    expect(fashion.at(-1)).toEqual({
      kind: 'system',
      dir: '/usr/share/datasets/fashion-mnist',
      label: 'Debian package dataset-fashion-mnist',
    });
  });

  it('takes the first complete location, whichever later ones also have the files', async () => {
    const p = places();
    const options = {
      ...base,
      dataDir: p.dataDir,
      env: { ...base.env, SHARDLINE_DATA_DIR: p.env },
    };
    for (const dir of [p.dataDir, p.env, p.cache, p.system]) await writeFiles(dir, files);
    const order: string[] = [];
    for (const dir of [p.dataDir, p.env, p.cache, p.system]) {
      const loaded = await loadDataset(descriptor, options);
      order.push(loaded.source.location.kind);
      expect(loaded.source.location.dir).toBe(dir);
      expect(loaded.source.files[0]).toBe(join(dir, 'train-images-idx3-ubyte.gz'));
      // Hide this one so the next is found.
      await rename(dir, `${dir}-hidden`);
    }
    expect(order).toEqual(['dataDir', 'env', 'cache', 'system']);
  });

  it('skips a location that has only some files', async () => {
    const p = places();
    await writeFiles(p.dataDir, files, ['train-images-idx3-ubyte.gz']);
    await writeFiles(p.system, files);
    const lines: string[] = [];
    const logger = createLogger({
      level: 'warn',
      format: 'json',
      sink: { write: (l) => lines.push(l) },
    });
    const loaded = await loadDataset(descriptor, { ...base, dataDir: p.dataDir, logger });
    expect(loaded.source.location.kind).toBe('system');
    expect(lines.join('')).toContain('has only some Tiny files');
  });

  it('finds files in <SHARDLINE_DATA_DIR>/<name> too', async () => {
    const p = places();
    await writeFiles(join(p.env, 'tiny'), files);
    const loaded = await loadDataset(descriptor, {
      ...base,
      env: { ...base.env, SHARDLINE_DATA_DIR: p.env },
    });
    expect(loaded.source.location.dir).toBe(join(p.env, 'tiny'));
  });

  it('decodes the data: counts, shape, pixels and labels, and limits', async () => {
    await writeFiles(places().system, files);
    const { train, test, source } = await loadDataset(descriptor, base);
    expect(source.verified).toBe(true);
    expect(source.downloaded).toEqual([]);
    expect([train.count, test.count]).toEqual([TINY.train, TINY.test]);
    expect([train.height, train.width, train.channels, train.numClasses]).toEqual([4, 3, 1, 3]);
    expect(train.images.length).toBe(TINY.train * 12);
    expect(train.images[(7 * 4 + 2) * 3 + 1]).toBe(tinyPixel('train', 7, 2, 1));
    expect(test.images[(4 * 4 + 3) * 3 + 2]).toBe(tinyPixel('test', 4, 3, 2));
    expect(train.labels[5]).toBe(tinyLabel('train', 5));
    expect(test.labels[2]).toBe(tinyLabel('test', 2));
    const limited = await loadDataset(descriptor, { ...base, limitTrain: 5, limitTest: 2 });
    expect([limited.train.count, limited.train.images.length, limited.test.labels.length]).toEqual([
      5, 60, 2,
    ]);
  });

  it('accepts an uncompressed copy when its content matches', async () => {
    const p = places();
    await writeFiles(p.system, files);
    const name = 't10k-labels-idx1-ubyte.gz';
    const raw = gunzipSync(files.get(name)!);
    await rename(join(p.system, name), join(p.system, 'x'));
    await writeFile(join(p.system, 't10k-labels-idx1-ubyte'), raw);
    const withContent = {
      ...descriptor,
      test: {
        ...descriptor.test,
        labels: { name, sha256: ['0'.repeat(64)], contentSha256: [sha256(raw)] },
      },
    };
    const loaded = await loadDataset(withContent, base);
    expect(loaded.source.files[3]).toBe(join(p.system, 't10k-labels-idx1-ubyte'));
    expect(loaded.source.verified).toBe(true);
  });
});

describe('damaged or mismatched files', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let base: LoadDatasetOptions;
  let system: string;
  beforeEach(async () => {
    ({ dir: root, cleanup } = await tempDir());
    system = join(root, 'system');
    base = { env: { HOME: join(root, 'home') }, searchPaths: [system], download: false };
  });
  afterEach(() => cleanup());

  const tinyImages = (count: number, h: number = TINY.height, w: number = TINY.width) =>
    gzipSync(encodeIdx([count, h, w], new Uint8Array(count * h * w)));

  it('refuses a wrong checksum with a clear error, and verifyChecksums: false accepts it', async () => {
    const other = new Map(files);
    const different = tinyImages(TINY.test);
    other.set('t10k-images-idx3-ubyte.gz', different);
    await writeFiles(system, other);
    const e = await rejection(loadDataset(descriptor, base));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain(
      `${join(system, 't10k-images-idx3-ubyte.gz')} is not the published Tiny file`,
    );
    expect(e.message).toContain(`expected SHA-256 ${descriptor.test.images.sha256[0]}`);
    expect(e.message).toContain(`found ${sha256(different)}`);
    expect(e.message).toContain('verifyChecksums: false');
    const loaded = await loadDataset(descriptor, { ...base, verifyChecksums: false });
    expect(loaded.source.verified).toBe(false);
    expect(loaded.test.images.every((v) => v === 0)).toBe(true);
  });

  it('does not fall through to a later location when the first complete one is damaged', async () => {
    const cache = join(root, 'home', '.cache', 'shardline', 'tiny');
    const bad = new Map(files);
    bad.set('train-labels-idx1-ubyte.gz', files.get('train-labels-idx1-ubyte.gz')!.subarray(0, 20));
    await writeFiles(cache, bad);
    await writeFiles(system, files);
    const e = await rejection(loadDataset(descriptor, base));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain(join(cache, 'train-labels-idx1-ubyte.gz'));
    expect(e.message).toContain('is truncated');
    expect(e.message).toContain('Delete it and run again to download a fresh copy.');
  });

  it('reports a count that disagrees with the descriptor as MISMATCH', async () => {
    const other = new Map(files);
    other.set('train-images-idx3-ubyte.gz', tinyImages(TINY.train - 1));
    await writeFiles(system, other);
    const e = await rejection(loadDataset(descriptor, { ...base, verifyChecksums: false }));
    expect(e.code).toBe('MISMATCH');
    expect(e.message).toContain('holds 11 images: expected 12, the Tiny train split');
  });

  it('reports images and labels of different counts as MISMATCH', async () => {
    // A descriptor-consistent image file with a label file one short.
    const other = new Map(files);
    other.set(
      't10k-labels-idx1-ubyte.gz',
      gzipSync(encodeIdx([TINY.test - 1], new Uint8Array(TINY.test - 1))),
    );
    await writeFiles(system, other);
    const e = await rejection(loadDataset(descriptor, { ...base, verifyChecksums: false }));
    expect(e.code).toBe('MISMATCH');
    expect(e.message).toContain('t10k-labels-idx1-ubyte.gz holds 4 labels: expected 5');
  });

  it('reports wrong image dimensions and out-of-range labels', async () => {
    const wide = new Map(files);
    wide.set('train-images-idx3-ubyte.gz', tinyImages(TINY.train, 4, 4));
    await writeFiles(system, wide);
    const e = await rejection(loadDataset(descriptor, { ...base, verifyChecksums: false }));
    expect(e.code).toBe('MISMATCH');
    expect(e.message).toContain('holds 4x4 images: expected 4x3');

    const labels = new Map(files);
    labels.set(
      'train-labels-idx1-ubyte.gz',
      gzipSync(encodeIdx([TINY.train], new Uint8Array(TINY.train).fill(7))),
    );
    await writeFiles(system, labels);
    const l = await rejection(loadDataset(descriptor, { ...base, verifyChecksums: false }));
    expect(l.code).toBe('DATA_CORRUPT');
    expect(l.message).toContain('has label 7 at index 0: expected 0 to 2');
  });

  it('with nothing anywhere and downloads off: NOT_FOUND listing every place and every fix', async () => {
    const dataDir = join(root, 'nowhere');
    const e = await rejection(
      loadDataset(getDataset('fashion-mnist'), {
        ...base,
        dataDir,
        env: { ...base.env, SHARDLINE_DATA_DIR: join(root, 'env') },
      }),
    );
    expect(e.code).toBe('NOT_FOUND');
    for (const dir of [
      dataDir,
      join(root, 'env'),
      join(root, 'home', '.cache', 'shardline', 'fashion-mnist'),
      system,
    ]) {
      expect(e.message).toContain(dir);
    }
    expect(e.message).toContain('no such directory');
    expect(e.message).toContain('SHARDLINE_DATA_DIR');
    expect(e.message).toContain('--data-dir');
    expect(e.message).toContain('sudo apt-get install dataset-fashion-mnist');
    expect(e.message).toContain('train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz');
    expect(e.message).not.toContain('\n');
  });

  it('rejects unknown names and malformed descriptors', async () => {
    expect(datasetNames).toEqual(['fashion-mnist', 'mnist']);
    expect(() => getDataset('cifar')).toThrow(/expected one of fashion-mnist, mnist/);
    const broken = { ...descriptor, train: { ...descriptor.train, count: -1 } };
    const e = await rejection(loadDataset(broken, base));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('train.count must be a non-negative integer');
  });
});
