import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import {
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createLogger } from '@shardline/core/logger';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBatch } from '../src/batch.js';
import {
  cacheImageSets,
  IMAGE_FOLDER_CACHE_MAGIC,
  IMAGE_FOLDER_CACHE_VERSION,
  type ImageFolderOptions,
  type LoadedImageFolder,
  loadImageFolder,
  readImageFolderCache,
} from '../src/imageFolder.js';
import {
  closeImageSet,
  concatImageSets,
  type ImageSet,
  imageSize,
  takeImages,
} from '../src/imageSet.js';
import { openPagedImages, type PagedImages } from '../src/pagedImages.js';
import { createRng } from '../src/random.js';
import { writeShapesFolder } from '../src/shapes.js';

// Real PNG folders, decoded by sharp, written to and read from real cache files.

// A full collection before and after a read, so what it keeps is measured, not garbage.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
let root: string;
let folder: string;
let memory: LoadedImageFolder;
let paged: LoadedImageFolder;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgd-paged-'));
  folder = (await writeShapesFolder(join(root, 'shapes'), { perClass: 30, size: 24, seed: 5 })).dir;
  memory = await loadImageFolder(folder, options('memory'));
  paged = await loadImageFolder(folder, options('paged', { residentBytes: 0 }));
});
afterAll(async () => {
  closeImageSet(paged.train);
  closeImageSet(paged.test);
  await rm(root, { recursive: true, force: true });
});

function options(cache: string, extra: ImageFolderOptions = {}): ImageFolderOptions {
  return {
    cacheDir: join(root, cache),
    progress: 'none',
    validationSplit: 0.25,
    seed: 3,
    ...extra,
  };
}

function pagedOf(set: ImageSet): PagedImages {
  if (set.images instanceof Uint8Array) throw new Error('expected paged pixels');
  return set.images;
}

function inMemory(set: ImageSet): Uint8Array {
  if (!(set.images instanceof Uint8Array)) throw new Error('expected in-memory pixels');
  return set.images;
}

/** Every pixel of a set, however it is held. */
function allPixels(set: ImageSet): Uint8Array {
  if (set.images instanceof Uint8Array) return set.images;
  const indices = Array.from({ length: set.count }, (_, i) => i);
  return set.images.readImages(indices, new Uint8Array(set.count * imageSize(set)));
}

/** Open file descriptors of this process (Linux), to show that files are closed. */
function openFiles(): number {
  return readdirSync('/proc/self/fd').length;
}
const hasProcFd = existsSync('/proc/self/fd');

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (error) {
    return error as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

/** Half of a noisy PNG: the header is intact (sharp probes it), the pixel data is cut. */
async function truncatedPng(size: number): Promise<Buffer> {
  const raw = Buffer.alloc(size * size * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37) & 255;
  const png = await sharp(raw, { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toBuffer();
  return png.subarray(0, png.length >> 1);
}

/** The documented format, written independently of the loader from what it returned. */
function expectedCacheFile(loaded: LoadedImageFolder): Buffer {
  const { train, test } = loaded;
  const header = {
    fingerprint: loaded.fingerprint,
    classNames: loaded.classNames,
    height: train.height,
    width: train.width,
    channels: train.channels,
    trainCount: train.count,
    testCount: test.count,
    skipped: loaded.skipped,
  };
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(16);
  prefix.write(IMAGE_FOLDER_CACHE_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(IMAGE_FOLDER_CACHE_VERSION, 8);
  prefix.writeUInt32LE(json.length, 12);
  const body = Buffer.concat([
    prefix,
    json,
    train.labels,
    test.labels,
    allPixels(train),
    allPixels(test),
  ]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

describe('paged image sets', () => {
  it('a folder decoded with residentBytes 0 is paged, and its batches are byte-identical', () => {
    expect(memory.train.images).toBeInstanceOf(Uint8Array);
    const images = pagedOf(paged.train);
    expect(images.byteLength).toBe(paged.train.count * 24 * 24 * 3);
    expect(images.source).toBe(paged.cachePath);
    expect(paged.fingerprint).toBe(memory.fingerprint);
    expect([...paged.train.labels]).toEqual([...memory.train.labels]);
    const rng = createRng(11, 0);
    for (let b = 0; b < 20; b++) {
      // Random indices with repeats, plus a run of neighbours (read as one) now and then.
      const indices = Array.from({ length: 32 }, () => rng.nextInt(memory.train.count));
      if (b % 4 === 0) indices.splice(0, 8, ...[3, 4, 5, 6, 7, 8, 9, 10]);
      const augment = b % 2 === 0 ? { seed: 1, epoch: b, shift: 2, flip: true } : undefined;
      const options = { oneHot: true, ...(augment ? { augment } : {}) };
      const a = makeBatch(memory.train, indices, options);
      const p = makeBatch(paged.train, indices, options);
      expect(Buffer.from(p.xs.buffer).equals(Buffer.from(a.xs.buffer))).toBe(true);
      expect([...p.labels]).toEqual([...a.labels]);
      expect([...p.oneHot!]).toEqual([...a.oneHot!]);
    }
    expect(Buffer.from(allPixels(paged.test)).equals(Buffer.from(inMemory(memory.test)))).toBe(
      true,
    );
  });

  it('the paged decode writes the documented format, byte for byte, and the same file as in memory', async () => {
    const file = await readFile(paged.cachePath);
    expect(file.equals(expectedCacheFile(paged))).toBe(true);
    expect(file.equals(await readFile(memory.cachePath))).toBe(true);
    // Only the cache file is left: no .partial.
    expect(await readdir(join(root, 'paged'))).toEqual([`${paged.fingerprint}.bin`]);
  });

  it('takeImages limits a paged set without copying, and the view reads the same bytes', () => {
    const limited = takeImages(paged.train, 10);
    const view = pagedOf(limited);
    expect(limited.count).toBe(10);
    expect(view.count).toBe(10);
    expect(view.byteLength).toBe(10 * imageSize(limited));
    const a = makeBatch(takeImages(memory.train, 10), [9, 0, 5]);
    expect(
      Buffer.from(makeBatch(limited, [9, 0, 5]).xs.buffer).equals(Buffer.from(a.xs.buffer)),
    ).toBe(true);
    const e = (() => {
      try {
        makeBatch(limited, [10]);
      } catch (error) {
        return error as { code: string };
      }
    })();
    expect(e?.code).toBe('INVALID_ARGUMENT');
    view.close();
    expect(takeImages(paged.train, 1_000_000)).toBe(paged.train);
  });

  it('concatImageSets joins paged and in-memory sets without materialising them', () => {
    const a = concatImageSets(memory.train, memory.test);
    const p = concatImageSets(paged.train, memory.test);
    expect(p.images).not.toBeInstanceOf(Uint8Array);
    expect(p.count).toBe(a.count);
    expect([...p.labels]).toEqual([...a.labels]);
    const across = [0, memory.train.count - 1, memory.train.count, a.count - 1, 7, 8, 9];
    expect(Buffer.from(makeBatch(p, across).xs.buffer)).toEqual(
      Buffer.from(makeBatch(a, across).xs.buffer),
    );
    expect(Buffer.from(allPixels(p)).equals(Buffer.from(inMemory(a)))).toBe(true);
    closeImageSet(p);
    // The combined view held its own reference: the original is still readable.
    expect(allPixels(paged.train).length).toBe(paged.train.count * imageSize(paged.train));
  });

  it('readImageFolderCache keeps a set within the budget in memory, and pages a larger one', async () => {
    const resident = await readImageFolderCache(paged.cachePath, paged.fingerprint);
    expect(resident?.train.images).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(inMemory(resident!.train)).equals(Buffer.from(allPixels(paged.train)))).toBe(
      true,
    );
    const total = (memory.train.count + memory.test.count) * imageSize(memory.train);
    const justUnder = await readImageFolderCache(paged.cachePath, paged.fingerprint, {
      residentBytes: total - 1,
    });
    expect(justUnder?.train.images).not.toBeInstanceOf(Uint8Array);
    closeImageSet(justUnder!.train);
    closeImageSet(justUnder!.test);
    const exactly = await readImageFolderCache(paged.cachePath, paged.fingerprint, {
      env: { SHARDLINE_RESIDENT_BYTES: String(total) },
    });
    expect(exactly?.train.images).toBeInstanceOf(Uint8Array);
    const e = await rejection(
      readImageFolderCache(paged.cachePath, paged.fingerprint, {
        env: { SHARDLINE_RESIDENT_BYTES: 'lots' },
      }),
    );
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain('SHARDLINE_RESIDENT_BYTES');
  });

  it('cacheImageSets streams a paged set: same fingerprint and file as the in-memory sets', async () => {
    const classNames = memory.classNames;
    const fromMemory = await cacheImageSets(
      { train: memory.train, test: memory.test, classNames },
      { cacheDir: join(root, 'sets-a') },
    );
    const fromPaged = await cacheImageSets(
      { train: paged.train, test: paged.test, classNames },
      { cacheDir: join(root, 'sets-b') },
    );
    expect(fromPaged.fingerprint).toBe(fromMemory.fingerprint);
    expect((await readFile(fromPaged.cachePath)).equals(await readFile(fromMemory.cachePath))).toBe(
      true,
    );
  });
});

describe('reading cache files', () => {
  it('verifies a file of megabytes in chunks and keeps only the labels when paged', async () => {
    const big = (await writeShapesFolder(join(root, 'big'), { perClass: 50, size: 128 })).dir;
    const loaded = await loadImageFolder(big, { ...options('big'), residentBytes: 0 });
    const { size } = await stat(loaded.cachePath);
    expect(size).toBeGreaterThan(9_000_000);
    closeImageSet(loaded.train);
    closeImageSet(loaded.test);
    gc();
    const before = process.memoryUsage().arrayBuffers;
    const read = await readImageFolderCache(loaded.cachePath, loaded.fingerprint, {
      residentBytes: 1024,
    });
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    const kept = process.memoryUsage().arrayBuffers - before;
    expect(read?.train.images).not.toBeInstanceOf(Uint8Array);
    // What a paged read keeps is its labels (200 bytes here), not the file's 9.8 MB; the
    // verification's 1 MiB read buffer may not have been collected yet (it was, mostly, but
    // not on a loaded CI machine), so the bound leaves room for it.
    expect(kept).toBeLessThan(size / 4);
    const i = read!.train.count - 1;
    const batch = makeBatch(read!.train, [i]);
    const direct = await loadImageFolder(big, options('big'));
    expect(direct.fromCache).toBe(true);
    expect(Buffer.from(batch.xs.buffer)).toEqual(
      Buffer.from(makeBatch(direct.train, [i]).xs.buffer),
    );
    closeImageSet(read!.train);
    closeImageSet(read!.test);
  });

  it('rejects a flipped byte (pixels or labels) in paged and in-memory reads, with a warning', async () => {
    const copy = join(root, 'flipped.bin');
    const good = await readFile(paged.cachePath);
    const labelsAt = 16 + good.readUInt32LE(12);
    for (const at of [good.length - 40, labelsAt + 1]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x01;
      await writeFile(copy, bad);
      for (const residentBytes of [0, Number.POSITIVE_INFINITY]) {
        const warnings: string[] = [];
        const logger = createLogger({
          level: 'warn',
          sink: { write: (line: string) => void warnings.push(line) },
        });
        const read = await readImageFolderCache(copy, paged.fingerprint, { residentBytes, logger });
        expect(read).toBeUndefined();
        expect(warnings.join('\n')).toContain('checksum mismatch');
      }
    }
  });
});

describe('decoding', () => {
  it('a file whose header reads but whose pixels do not is skipped, with the split of the readable files', async () => {
    const d = (await writeShapesFolder(join(root, 'broken'), { perClass: 12, size: 24 })).dir;
    // First of its class and in the middle of another: its slot shifts everything after it.
    await writeFile(join(d, 'circle', 'circle-0000.png'), await truncatedPng(24));
    await writeFile(join(d, 'square', 'square-0006b.png'), await truncatedPng(24));
    // One at a time: libvips' error text for concurrent failures varies ("Unknown error").
    const base = { ...options('broken'), concurrency: 1 };
    const inRam = await loadImageFolder(d, base);
    const onDisk = await loadImageFolder(d, {
      ...base,
      cacheDir: join(root, 'broken-paged'),
      residentBytes: 0,
    });
    const noCache = await loadImageFolder(d, { ...base, cache: false, residentBytes: 0 });
    for (const r of [inRam, onDisk, noCache]) {
      expect(r.skipped.count).toBe(2);
      expect(r.skipped.examples.map((s) => s.path)).toEqual([
        'circle/circle-0000.png',
        'square/square-0006b.png',
      ]);
      expect(r.skipped.examples[0]!.reason).toContain('could not decode');
      expect(r.train.count + r.test.count).toBe(48);
      expect([...r.test.labels]).toEqual([...inRam.test.labels]);
      expect(Buffer.from(allPixels(r.train)).equals(Buffer.from(inMemory(inRam.train)))).toBe(true);
    }
    // The split is the one of the 48 readable files: the same as a folder without the broken ones.
    await rm(join(d, 'circle', 'circle-0000.png'));
    await rm(join(d, 'square', 'square-0006b.png'));
    const clean = await loadImageFolder(d, { ...base, cache: false });
    expect(Buffer.from(inMemory(clean.test)).equals(Buffer.from(inMemory(inRam.test)))).toBe(true);
    // Both files, first pass and fallback, follow the documented format exactly.
    expect((await readFile(inRam.cachePath)).equals(expectedCacheFile(inRam))).toBe(true);
    expect((await readFile(onDisk.cachePath)).equals(expectedCacheFile(inRam))).toBe(true);
    expect(await readdir(join(root, 'broken-paged'))).toEqual([`${onDisk.fingerprint}.bin`]);
    for (const r of [onDisk, noCache]) {
      closeImageSet(r.train);
      closeImageSet(r.test);
    }
  });

  it('cache: false pages from a scratch file that is already deleted', async () => {
    const r = await loadImageFolder(folder, {
      ...options('scratch'),
      cache: false,
      residentBytes: 0,
    });
    const images = pagedOf(r.train);
    expect(images.source).toContain('.partial');
    expect(existsSync(images.source)).toBe(false);
    expect(existsSync(join(root, 'scratch'))).toBe(true);
    expect(await readdir(join(root, 'scratch'))).toEqual([]);
    expect(Buffer.from(allPixels(r.train)).equals(Buffer.from(inMemory(memory.train)))).toBe(true);
    closeImageSet(r.train);
    closeImageSet(r.test);
  });

  it("removes a dead process's stale partial file, and leaves a fresh one", async () => {
    const dir = join(root, 'stale');
    const dead = (await readFile('/proc/sys/kernel/pid_max', 'utf8').catch(() => '4194304')).trim();
    const stale = join(dir, `.x.bin.${Number(dead) + 1}.0123abcd.partial`);
    const fresh = join(dir, `.y.bin.${Number(dead) + 1}.0123abcd.partial`);
    const resumable = join(dir, 'z.bin.partial');
    await loadImageFolder(folder, options('stale')); // creates the folder
    for (const f of [stale, fresh, resumable]) await writeFile(f, 'x');
    const old = new Date(Date.now() - 3600_000);
    await utimes(stale, old, old);
    await utimes(resumable, old, old);
    await loadImageFolder(folder, { ...options('stale'), seed: 4 });
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(existsSync(resumable)).toBe(true);
  });
});

describe.skipIf(!hasProcFd)('file handles', () => {
  it('close() releases the file once every set and view of it is closed; reads after close fail', async () => {
    const before = openFiles();
    const read = await readImageFolderCache(paged.cachePath, paged.fingerprint, {
      residentBytes: 0,
    });
    expect(openFiles()).toBe(before + 1); // train, test and views share one descriptor
    const view = pagedOf(read!.test).slice(1, 3);
    closeImageSet(read!.train);
    closeImageSet(read!.test);
    // The view still holds the file.
    expect(openFiles()).toBe(before + 1);
    expect(view.readImages([0, 1], new Uint8Array(2 * view.imageBytes)).length).toBe(
      2 * view.imageBytes,
    );
    view.close();
    view.close();
    expect(openFiles()).toBe(before);
    const e = (() => {
      try {
        pagedOf(read!.train).readImage(0, new Uint8Array(view.imageBytes));
      } catch (error) {
        return error as { code: string; message: string };
      }
    })();
    expect(e?.code).toBe('INVALID_ARGUMENT');
    expect(e?.message).toContain('closed');
  });

  it('loading, reading, rejecting and decoding leave no file open', async () => {
    const before = openFiles();
    for (let k = 0; k < 3; k++) {
      const r = await loadImageFolder(folder, options('paged', { residentBytes: 0 }));
      makeBatch(r.train, [0, 1, 2]);
      closeImageSet(r.train);
      closeImageSet(r.test);
      const m = await loadImageFolder(folder, options('paged'));
      expect(m.train.images).toBeInstanceOf(Uint8Array);
      expect(
        await readImageFolderCache(paged.cachePath, 'f'.repeat(64), { residentBytes: 0 }),
      ).toBeUndefined();
      const d = await loadImageFolder(folder, {
        ...options(`fresh-${k}`),
        residentBytes: 0,
      });
      closeImageSet(d.train);
      closeImageSet(d.test);
    }
    expect(openFiles()).toBe(before);
  });

  it('openPagedImages reads a raw file, and refuses one shorter than its layout at open and at read', async () => {
    const file = join(root, 'raw.bin');
    await writeFile(
      file,
      Uint8Array.from({ length: 30 }, (_, i) => i),
    );
    const images = openPagedImages(file, { offset: 6, count: 4, imageBytes: 6 });
    expect([...images.readImages([3, 0], new Uint8Array(12))]).toEqual([
      24, 25, 26, 27, 28, 29, 6, 7, 8, 9, 10, 11,
    ]);
    expect(() => openPagedImages(file, { offset: 6, count: 5, imageBytes: 6 })).toThrow(/need 36/);
    // Cut short after opening: the read says so instead of returning stale bytes.
    await truncate(file, 20);
    const e = (() => {
      try {
        images.readImage(3, new Uint8Array(6));
      } catch (error) {
        return error as { code: string };
      }
    })();
    expect(e?.code).toBe('DATA_CORRUPT');
    images.close();
    expect(() =>
      openPagedImages(join(root, 'missing.bin'), { offset: 0, count: 1, imageBytes: 1 }),
    ).toThrow(/Cannot open/);
  });
});
