import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@shardline/core/logger';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ImageDecoder,
  type ImageFolderOptions,
  loadImageFolder,
  sharpDecoder,
} from '../src/imageFolder.js';
import type { ImageSet } from '../src/imageSet.js';

/** Class colours: red, green, blue squares with a white top-left pixel. */
const COLORS: Record<string, [number, number, number]> = {
  Zebra: [255, 255, 0],
  blue: [0, 0, 255],
  green: [0, 255, 0],
  red: [255, 0, 0],
};

/** A 16x16 PNG (or JPEG) of `color`, pixel (0, 0) white, so orientation and placement show. */
async function square(
  color: [number, number, number],
  format: 'png' | 'jpeg',
  size = 16,
  channels: 1 | 3 = 3,
): Promise<Buffer> {
  const raw = Buffer.alloc(size * size * channels);
  for (let p = 0; p < size * size; p++) {
    for (let c = 0; c < channels; c++)
      raw[p * channels + c] = channels === 1 ? color[0] : color[c]!;
  }
  raw.fill(255, 0, channels);
  let img = sharp(raw, { raw: { width: size, height: size, channels } });
  // Without this sharp writes a one-channel raw buffer as an RGB PNG.
  if (channels === 1) img = img.toColourspace('b-w');
  return format === 'png' ? img.png().toBuffer() : img.jpeg({ quality: 95 }).toBuffer();
}

let root: string;
let cacheDir: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgfolder-'));
  cacheDir = join(root, 'cache');
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** `perClass` images per class in `dir/<class>/`, alternating PNG and JPEG. */
async function writeClasses(dir: string, perClass = 10, classes = ['blue', 'green', 'red']) {
  for (const name of classes) {
    await mkdir(join(dir, name), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const format = i % 2 === 0 ? 'png' : 'jpeg';
      await writeFile(
        join(dir, name, `img${String(i).padStart(2, '0')}.${format === 'png' ? 'png' : 'jpg'}`),
        await square(COLORS[name]!, format),
      );
    }
  }
}

/** Wraps sharp to count decodes (real decoding, nothing mocked). */
function countingDecoder(): ImageDecoder & { decodes: number } {
  const d = {
    decodes: 0,
    probe: sharpDecoder.probe,
    async decode(path: string, target: Parameters<ImageDecoder['decode']>[1]) {
      d.decodes += 1;
      return sharpDecoder.decode(path, target);
    },
  };
  return d;
}

/** The pixels of a set the test expects in memory (the default budget holds these folders). */
function pixels(set: ImageSet): Uint8Array {
  if (!(set.images instanceof Uint8Array)) throw new Error('expected in-memory pixels');
  return set.images;
}

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (error) {
    return error as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

function options(extra: ImageFolderOptions = {}): ImageFolderOptions {
  return { cacheDir, progress: 'none', ...extra };
}

describe('layout and labels', () => {
  it('sorts classes by code point and labels images by class index', async () => {
    const data = join(root, 'data');
    await writeClasses(data, 6, ['red', 'Zebra', 'blue', 'green']);
    const r = await loadImageFolder(data, options({ validationSplit: 0.5, seed: 1 }));
    expect(r.classNames).toEqual(['Zebra', 'blue', 'green', 'red']);
    expect(r.train.numClasses).toBe(4);
    expect(r.train.count + r.test.count).toBe(24);
    // stratified: 3 of each class in test
    for (let c = 0; c < 4; c++) expect([...r.test.labels].filter((l) => l === c)).toHaveLength(3);
    // a red image's centre pixel is red
    const s = 16 * 16 * 3;
    const redAt = [...r.train.labels].indexOf(3);
    const centre = redAt * s + (8 * 16 + 8) * 3;
    expect(
      [...pixels(r.train).subarray(centre, centre + 3)].map((v) => Math.round(v / 16)),
    ).toEqual([16, 0, 0]);
  });

  it('uses train/ and test/ when both exist, and classNames fixes order and selection', async () => {
    await writeClasses(join(root, 'd', 'train'), 4);
    await writeClasses(join(root, 'd', 'test'), 2);
    const r = await loadImageFolder(join(root, 'd'), options());
    expect(r.classNames).toEqual(['blue', 'green', 'red']);
    expect(r.train.count).toBe(12);
    expect(r.test.count).toBe(6);
    expect([...r.test.labels]).toEqual([0, 0, 1, 1, 2, 2]);
    const picked = await loadImageFolder(join(root, 'd'), options({ classNames: ['red', 'blue'] }));
    expect(picked.classNames).toEqual(['red', 'blue']);
    expect([...picked.test.labels]).toEqual([0, 0, 1, 1]);
  });

  it('refuses train/ and test/ with different classes', async () => {
    await writeClasses(join(root, 'd', 'train'), 2);
    await writeClasses(join(root, 'd', 'test'), 2, ['blue', 'green']);
    const e = await rejection(loadImageFolder(join(root, 'd'), options()));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('only train/ has red');
  });

  it('asks for a split when there is neither train/test nor validationSplit', async () => {
    await writeClasses(join(root, 'd'), 2);
    const e = await rejection(loadImageFolder(join(root, 'd'), options()));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('--validation-split');
    expect(e.message).toContain('train/ and test/');
  });

  it('validationSplit is deterministic by seed, and train + test is every image', async () => {
    await writeClasses(join(root, 'd'), 10);
    const load = (seed: number) =>
      loadImageFolder(join(root, 'd'), options({ validationSplit: 0.3, seed, cache: false }));
    const a = await load(7);
    const b = await load(7);
    const c = await load(8);
    expect(a.test.count).toBe(9);
    expect(a.train.count).toBe(21);
    expect(Buffer.from(pixels(a.test)).equals(Buffer.from(pixels(b.test)))).toBe(true);
    expect(Buffer.from(pixels(a.train)).equals(Buffer.from(pixels(b.train)))).toBe(true);
    // Images of one class are identical squares, so compare which files were picked via pixels
    // of JPEG vs PNG (they differ slightly): some seed must pick a different set.
    expect(Buffer.from(pixels(a.test)).equals(Buffer.from(pixels(c.test)))).toBe(false);
  });

  it('refuses fewer than two classes, a missing classNames folder, a file and a missing path', async () => {
    await writeClasses(join(root, 'one'), 2, ['red']);
    let e = await rejection(loadImageFolder(join(root, 'one'), options({ validationSplit: 0.5 })));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('at least two');
    await writeClasses(join(root, 'd'), 2);
    e = await rejection(
      loadImageFolder(
        join(root, 'd'),
        options({ validationSplit: 0.5, classNames: ['red', 'cat'] }),
      ),
    );
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain('"cat"');
    e = await rejection(loadImageFolder(join(root, 'd', 'red', 'img00.png'), options()));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('is a file');
    e = await rejection(loadImageFolder(join(root, 'nope'), options()));
    expect(e.code).toBe('NOT_FOUND');
  });

  it('refuses an empty class folder, naming it', async () => {
    await writeClasses(join(root, 'd'), 2);
    await mkdir(join(root, 'd', 'empty'));
    const e = await rejection(loadImageFolder(join(root, 'd'), options({ validationSplit: 0.5 })));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('empty');
  });
});

describe('pixels', () => {
  it('decodes a known image in rgb and grayscale, with and without resize', async () => {
    const d = join(root, 'd');
    await mkdir(join(d, 'a'), { recursive: true });
    await mkdir(join(d, 'b'), { recursive: true });
    await writeFile(join(d, 'a', 'x.png'), await square([200, 100, 50], 'png'));
    await writeFile(join(d, 'b', 'x.png'), await square([10, 20, 30], 'png'));
    await writeFile(join(d, 'b', 'y.png'), await square([10, 20, 30], 'png'));
    const base = options({ validationSplit: 0.5 });
    const rgb = await loadImageFolder(d, base);
    expect(rgb.train.channels).toBe(3);
    const a = pixels(rgb.train).subarray(0, 16 * 16 * 3);
    expect([...a.subarray(0, 3)]).toEqual([255, 255, 255]);
    expect([...a.subarray(3, 6)]).toEqual([200, 100, 50]);

    const grey = await loadImageFolder(d, { ...base, colorMode: 'grayscale' });
    expect(grey.train.channels).toBe(1);
    // libvips' sRGB -> b-w conversion (luma computed in linear light) gives 128 for (200, 100,
    // 50); gamma-space Rec. 709 would give 118. Either way it lies between the channels.
    expect(pixels(grey.train)[0]).toBe(255);
    expect(Math.abs(pixels(grey.train)[1]! - 128)).toBeLessThanOrEqual(2);

    const small = await loadImageFolder(d, { ...base, imageSize: { height: 4, width: 8 } });
    expect([small.train.height, small.train.width, small.train.channels]).toEqual([4, 8, 3]);
    expect(pixels(small.train).length).toBe(small.train.count * 4 * 8 * 3);
    // far from the white corner the colour is unchanged by resizing
    const at = (3 * 8 + 7) * 3;
    expect([...pixels(small.train).subarray(at, at + 3)]).toEqual([200, 100, 50]);
  });

  it('defaults to grayscale only when every image is greyscale', async () => {
    const d = join(root, 'd');
    for (const name of ['a', 'b']) {
      await mkdir(join(d, name), { recursive: true });
      await writeFile(join(d, name, 'g.png'), await square([90, 0, 0], 'png', 16, 1));
      await writeFile(join(d, name, 'h.png'), await square([90, 0, 0], 'png', 16, 1));
    }
    const g = await loadImageFolder(d, options({ validationSplit: 0.5 }));
    expect(g.train.channels).toBe(1);
    expect(pixels(g.train)[1]).toBe(90);
    await writeFile(join(d, 'a', 'c.png'), await square([1, 2, 3], 'png'));
    const c = await loadImageFolder(d, options({ validationSplit: 0.5 }));
    expect(c.train.channels).toBe(3);
    // a greyscale image in rgb mode repeats its value in all three channels
    const all = Buffer.concat([pixels(c.train), pixels(c.test)]);
    const greyImage = [...c.train.labels, ...c.test.labels].length;
    expect(greyImage).toBe(5);
    const rgbTriples = new Set<string>();
    for (let p = 0; p < all.length; p += 3) rgbTriples.add(all.subarray(p, p + 3).join(','));
    expect([...rgbTriples].sort()).toEqual(['1,2,3', '255,255,255', '90,90,90']);
  });

  it('refuses images of different sizes without imageSize, naming two files', async () => {
    const d = join(root, 'd');
    await writeClasses(d, 2);
    await writeFile(join(d, 'red', 'big.png'), await square([255, 0, 0], 'png', 20));
    const e = await rejection(loadImageFolder(d, options({ validationSplit: 0.5 })));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('red/big.png is 20x20');
    expect(e.message).toContain('--image-size');
    const ok = await loadImageFolder(
      d,
      options({ validationSplit: 0.5, imageSize: { height: 16, width: 16 } }),
    );
    expect(ok.train.count + ok.test.count).toBe(7);
  });
});

describe('bad files', () => {
  it('skips a corrupt image and a .txt file, names them, and warns once', async () => {
    const d = join(root, 'd');
    await writeClasses(d, 3);
    await writeFile(join(d, 'red', 'notes.txt'), 'not an image');
    const png = await square([255, 0, 0], 'png');
    await writeFile(join(d, 'green', 'broken.png'), png.subarray(0, 40));
    await writeFile(join(d, 'blue', '.DS_Store'), 'ignored');
    const warnings: string[] = [];
    const logger = createLogger({
      level: 'warn',
      sink: {
        write: (line: string) => {
          warnings.push(line);
        },
      },
    });
    const r = await loadImageFolder(d, options({ validationSplit: 0.3, logger }));
    expect(r.train.count + r.test.count).toBe(9);
    expect(r.skipped.count).toBe(2);
    expect(r.skipped.examples.map((s) => s.path)).toEqual(['green/broken.png', 'red/notes.txt']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('red/notes.txt');
    expect(warnings[0]).toContain('green/broken.png');
  });
});

describe('cache', () => {
  it('decodes once: the second load reads the cache file', async () => {
    const d = join(root, 'd');
    await writeClasses(d, 4);
    const first = countingDecoder();
    const a = await loadImageFolder(d, options({ validationSplit: 0.25, decoder: first }));
    expect(first.decodes).toBe(12);
    expect(a.fromCache).toBe(false);
    expect(await readdir(cacheDir)).toEqual([`${a.fingerprint}.bin`]);
    const second = countingDecoder();
    const b = await loadImageFolder(d, options({ validationSplit: 0.25, decoder: second }));
    expect(second.decodes).toBe(0);
    expect(b.fromCache).toBe(true);
    expect(b.cachePath).toBe(a.cachePath);
    expect(b.classNames).toEqual(a.classNames);
    expect(Buffer.from(pixels(b.train)).equals(Buffer.from(pixels(a.train)))).toBe(true);
    expect([...b.test.labels]).toEqual([...a.test.labels]);
    // Pixel-changing options are part of the key.
    const third = countingDecoder();
    const c = await loadImageFolder(d, options({ validationSplit: 0.25, seed: 3, decoder: third }));
    expect(third.decodes).toBe(12);
    expect(c.fingerprint).not.toBe(a.fingerprint);
  });

  it('a changed file invalidates the cache', async () => {
    const d = join(root, 'd');
    await writeClasses(d, 2);
    const a = await loadImageFolder(d, options({ validationSplit: 0.5 }));
    await writeFile(join(d, 'red', 'img00.png'), await square([128, 0, 0], 'png'));
    const counter = countingDecoder();
    const b = await loadImageFolder(d, options({ validationSplit: 0.5, decoder: counter }));
    expect(b.fingerprint).not.toBe(a.fingerprint);
    expect(counter.decodes).toBe(6);
  });

  it('a truncated or corrupt cache file is decoded again, never a crash', async () => {
    const d = join(root, 'd');
    await writeClasses(d, 2);
    const a = await loadImageFolder(d, options({ validationSplit: 0.5 }));
    const bytes = await readFile(a.cachePath);
    await writeFile(a.cachePath, bytes.subarray(0, bytes.length - 100));
    let counter = countingDecoder();
    const b = await loadImageFolder(d, options({ validationSplit: 0.5, decoder: counter }));
    expect(counter.decodes).toBe(6);
    expect(b.fromCache).toBe(false);
    // flip one pixel byte: the digest catches it
    const good = await readFile(a.cachePath);
    good[good.length - 40]! ^= 0xff;
    await writeFile(a.cachePath, good);
    counter = countingDecoder();
    const c = await loadImageFolder(d, options({ validationSplit: 0.5, decoder: counter }));
    expect(counter.decodes).toBe(6);
    expect(Buffer.from(pixels(c.train)).equals(Buffer.from(pixels(a.train)))).toBe(true);
    await writeFile(a.cachePath, 'garbage');
    const e = await loadImageFolder(d, options({ validationSplit: 0.5 }));
    expect(e.fromCache).toBe(false);
    expect((await loadImageFolder(d, options({ validationSplit: 0.5 }))).fromCache).toBe(true);
  });
});
