// The real Fashion-MNIST files from Debian's dataset-fashion-mnist package.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBatch } from '../src/batch.js';
import { fashionMnist, getDataset, mnist } from '../src/descriptors.js';
import { type LoadedDataset, loadDataset } from '../src/load.js';
import { createEpochPlan } from '../src/sampler.js';
import { tempDir } from './fixtures.js';

const SYSTEM_DIR = '/usr/share/datasets/fashion-mnist';

describe.runIf(existsSync(SYSTEM_DIR))('Fashion-MNIST from /usr/share/datasets', () => {
  let loaded: LoadedDataset;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const tmp = await tempDir();
    cleanup = tmp.cleanup;
    // An empty home, so the Debian copy is found whatever the machine's own cache holds.
    loaded = await loadDataset('fashion-mnist', {
      env: { HOME: join(tmp.dir, 'home') },
      download: false,
    });
  });
  afterAll(() => cleanup());

  it('is found at the Debian location, with pinned checksums verified', () => {
    expect(loaded.source.location).toEqual({
      kind: 'system',
      dir: SYSTEM_DIR,
      label: 'Debian package dataset-fashion-mnist',
    });
    expect(loaded.source.verified).toBe(true);
    expect(loaded.source.files).toEqual(
      [
        'train-images-idx3-ubyte.gz',
        'train-labels-idx1-ubyte.gz',
        't10k-images-idx3-ubyte.gz',
        't10k-labels-idx1-ubyte.gz',
      ].map((n) => join(SYSTEM_DIR, n)),
    );
  });

  it('has 60,000 + 10,000 images of 28x28x1 and 10 balanced classes', () => {
    const { train, test } = loaded;
    expect([train.count, test.count]).toEqual([60_000, 10_000]);
    expect([train.height, train.width, train.channels, train.numClasses]).toEqual([28, 28, 1, 10]);
    expect(train.images.length).toBe(47_040_000);
    expect(test.images.length).toBe(7_840_000);
    const perClass = new Array(10).fill(0);
    for (const label of train.labels) perClass[label]++;
    expect(perClass).toEqual(new Array(10).fill(6_000));
  });

  it('has the known first labels (train: Ankle boot, T-shirt/top, T-shirt/top, Dress)', () => {
    const names = loaded.descriptor.classNames;
    expect([...loaded.train.labels.subarray(0, 4)].map((l) => names[l])).toEqual([
      'Ankle boot',
      'T-shirt/top',
      'T-shirt/top',
      'Dress',
    ]);
    expect([...loaded.test.labels.subarray(0, 4)]).toEqual([9, 2, 1, 1]);
  });

  it('matches the documented pixel statistics (mean 0.2860, std 0.3530)', () => {
    const { images } = loaded.train;
    const histogram = new Float64Array(256);
    for (let i = 0; i < images.length; i++) histogram[images[i]!]! += 1;
    let sum = 0;
    let sumSq = 0;
    histogram.forEach((n, v) => {
      sum += n * v;
      sumSq += n * v * v;
    });
    const mean = sum / images.length / 255;
    const std = Math.sqrt(sumSq / images.length / 255 ** 2 - mean * mean);
    expect(mean).toBeCloseTo(fashionMnist.pixelStats!.mean, 3);
    expect(std).toBeCloseTo(fashionMnist.pixelStats!.std, 3);
  });

  it('makes a normalised batch of a planned share', () => {
    const plan = createEpochPlan({ count: 60_000, seed: 1, epoch: 0, batchSize: 256 });
    expect(plan.steps).toBe(235);
    const batch = makeBatch(loaded.train, plan.share(0, 1, 2), {
      normalize: fashionMnist.pixelStats!,
      oneHot: true,
    });
    expect(batch.shape).toEqual([128, 28, 28, 1]);
    expect(batch.oneHot!.length).toBe(1280);
    const mean = batch.xs.reduce((a, b) => a + b, 0) / batch.xs.length;
    expect(Math.abs(mean)).toBeLessThan(0.2);
  });
});

describe('built-in descriptors', () => {
  it('describe Fashion-MNIST and MNIST with canonical names, counts, classes and mirrors', () => {
    for (const d of [fashionMnist, mnist]) {
      expect([d.train.count, d.test.count]).toEqual([60_000, 10_000]);
      expect([d.height, d.width, d.channels]).toEqual([28, 28, 1]);
      expect([
        d.train.images.name,
        d.train.labels.name,
        d.test.images.name,
        d.test.labels.name,
      ]).toEqual([
        'train-images-idx3-ubyte.gz',
        'train-labels-idx1-ubyte.gz',
        't10k-images-idx3-ubyte.gz',
        't10k-labels-idx1-ubyte.gz',
      ]);
      for (const f of [d.train.images, d.train.labels, d.test.images, d.test.labels]) {
        for (const digest of f.sha256) expect(digest).toMatch(/^[0-9a-f]{64}$/);
      }
    }
    expect(getDataset('Fashion-MNIST')).toBe(fashionMnist);
    expect(fashionMnist.classNames).toEqual([
      'T-shirt/top',
      'Trouser',
      'Pullover',
      'Dress',
      'Coat',
      'Sandal',
      'Shirt',
      'Sneaker',
      'Bag',
      'Ankle boot',
    ]);
    expect(fashionMnist.mirrors).toEqual([
      'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
    ]);
    expect(mnist.mirrors).toEqual([
      'https://ossci-datasets.s3.amazonaws.com/mnist/',
      'https://storage.googleapis.com/cvdf-datasets/mnist/',
    ]);
    expect(mnist.train.images.sha256[0]).toBe(
      '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
    );
    expect(() => {
      (fashionMnist.classNames as string[])[0] = 'changed';
    }).toThrow(TypeError);
  });
});
