import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeIdx, encodeIdx, parseIdx, readIdxFile } from '../src/idx.js';
import { tempDir } from './fixtures.js';

/** Hand-made IDX bytes: magic, big-endian dims, data. */
function idx(magic: number[], dims: number[], data: number[]): Uint8Array {
  const out = [...magic];
  for (const d of dims) out.push((d >>> 24) & 255, (d >>> 16) & 255, (d >>> 8) & 255, d & 255);
  return Uint8Array.from([...out, ...data]);
}

const LABELS = [0, 0, 8, 1];
const IMAGES = [0, 0, 8, 3];

async function codeAndMessage(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (error) {
    const e = error as { code: string; message: string };
    return { code: e.code, message: e.message };
  }
  throw new Error('expected a rejection');
}

function syncError(f: () => unknown): { code: string; message: string } {
  try {
    f();
  } catch (error) {
    const e = error as { code: string; message: string };
    return { code: e.code, message: e.message };
  }
  throw new Error('expected a throw');
}

describe('parseIdx', () => {
  it('reads a label file: shape and bytes', () => {
    const parsed = parseIdx(idx(LABELS, [3], [7, 0, 9]), { dimensions: 1 });
    expect(parsed.shape).toEqual([3]);
    expect([...parsed.data]).toEqual([7, 0, 9]);
  });

  it('reads an image file with big-endian dimensions', () => {
    const pixels = Array.from({ length: 2 * 2 * 3 }, (_, i) => i);
    const parsed = parseIdx(idx(IMAGES, [2, 2, 3], pixels), { dimensions: 3 });
    expect(parsed.shape).toEqual([2, 2, 3]);
    expect([...parsed.data]).toEqual(pixels);
  });

  it('round-trips encodeIdx, including dimensions above 255', () => {
    const data = new Uint8Array(300 * 2).map((_, i) => i % 251);
    const parsed = parseIdx(encodeIdx([300, 2], data));
    expect(parsed.shape).toEqual([300, 2]);
    expect(parsed.data).toEqual(data);
  });

  it('rejects a wrong magic number, naming the file, the expected and the found magic', () => {
    const e = syncError(() =>
      parseIdx(Uint8Array.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]), {
        fileName: 'x-labels',
        dimensions: 1,
      }),
    );
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('x-labels is not an IDX file');
    expect(e.message).toContain('0x00000801');
    expect(e.message).toContain('0x1f8b0800');
    expect(e.message).toContain('Delete it and run again');
  });

  it('rejects a dtype other than unsigned byte', () => {
    const e = syncError(() => parseIdx(idx([0, 0, 0x0d, 1], [1], [0, 0, 0, 0]), { dimensions: 1 }));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('0x0D (float32)');
    expect(e.message).toContain('expected 0x08');
  });

  it('rejects images where labels are expected (dimension count)', () => {
    const e = syncError(() =>
      parseIdx(idx(IMAGES, [1, 1, 1], [5]), { fileName: 'l', dimensions: 1 }),
    );
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('has 3 dimensions');
    expect(e.message).toContain('expected magic number 0x00000801 (labels)');
  });

  it('reports truncation with expected and found sizes', () => {
    const e = syncError(() =>
      parseIdx(idx(IMAGES, [60_000, 28, 28], new Array(1_008).fill(0)), {
        fileName: 'train-images-idx3-ubyte.gz',
        decompressed: true,
      }),
    );
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toBe(
      'train-images-idx3-ubyte.gz is truncated: expected 47,040,016 bytes after decompression, found 1,024. Delete it and run again to download a fresh copy.',
    );
  });

  it('reports a truncated header and a too-short file', () => {
    expect(syncError(() => parseIdx(Uint8Array.from([0, 0]))).message).toContain(
      'expected at least 4 bytes',
    );
    expect(syncError(() => parseIdx(Uint8Array.from([0, 0, 8, 3, 0, 0]))).message).toContain(
      'expected at least 16 bytes',
    );
  });

  it('rejects trailing bytes', () => {
    const e = syncError(() => parseIdx(idx(LABELS, [2], [1, 2, 3])));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('1 unexpected trailing bytes');
  });

  it('uses the remedy it is given', () => {
    const e = syncError(() => parseIdx(idx(LABELS, [2], [1]), { remedy: 'Reinstall it.' }));
    expect(e.message.endsWith('Reinstall it.')).toBe(true);
  });
});

describe('decodeIdx and readIdxFile', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(() => cleanup());

  const labels = idx(LABELS, [4], [1, 2, 3, 4]);

  it('reads raw and gzipped files alike', async () => {
    await writeFile(join(dir, 'l-idx1-ubyte'), labels);
    await writeFile(join(dir, 'l-idx1-ubyte.gz'), gzipSync(labels));
    const raw = await readIdxFile(join(dir, 'l-idx1-ubyte'), { dimensions: 1 });
    const gz = await readIdxFile(join(dir, 'l-idx1-ubyte.gz'), { dimensions: 1 });
    expect([...raw.data]).toEqual([1, 2, 3, 4]);
    expect([...gz.data]).toEqual([1, 2, 3, 4]);
  });

  it('rejects a .gz file that is not gzip data', async () => {
    await writeFile(join(dir, 'l.gz'), '<html>Access denied</html>');
    const e = await codeAndMessage(readIdxFile(join(dir, 'l.gz')));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain(
      'l.gz is not gzip data: expected the gzip signature 1f 8b, found 3c 68 74 6d',
    );
    expect(e.message).toContain('looks like text');
  });

  it('reports a gzip stream cut midway as truncated, with sizes from the header', async () => {
    const big = encodeIdx(
      [5_000, 10, 10],
      new Uint8Array(500_000).map((_, i) => (i * 7919) % 256),
    );
    const gz = gzipSync(big);
    const e = await codeAndMessage(decodeIdx(gz.subarray(0, gz.length >> 1), { fileName: 'i.gz' }));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toMatch(
      /^i\.gz is truncated: expected 500,016 bytes after decompression, found [\d,]+\./,
    );
    const found = Number(/found ([\d,]+)\./.exec(e.message)![1]!.replaceAll(',', ''));
    expect(found).toBeGreaterThan(0);
    expect(found).toBeLessThan(500_016);
  });

  it('reports a damaged gzip stream (CRC mismatch) as corrupt', async () => {
    const gz = Buffer.from(gzipSync(labels));
    gz[gz.length - 6]! ^= 0xff; // inside the CRC32 of the trailer
    const e = await codeAndMessage(decodeIdx(gz, { fileName: 'l.gz' }));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('l.gz is corrupt: gunzip failed');
  });

  it('refuses to inflate beyond maxBytes', async () => {
    const gz = gzipSync(encodeIdx([100_000], new Uint8Array(100_000)));
    const e = await codeAndMessage(decodeIdx(gz, { fileName: 'bomb.gz', maxBytes: 1_000 }));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('bomb.gz is too large: expected at most 1,000 bytes');
  });

  it('rejects an empty file and reports a missing one as NOT_FOUND', async () => {
    await writeFile(join(dir, 'e.gz'), '');
    expect(
      (await codeAndMessage(readIdxFile(join(dir, 'e.gz'), { expectedBytes: 60_008 }))).message,
    ).toBe(
      'e.gz is empty: expected 60,008 bytes after decompression, found 0 bytes. Delete it and run again to download a fresh copy.',
    );
    const missing = await codeAndMessage(readIdxFile(join(dir, 'nope.gz')));
    expect(missing.code).toBe('NOT_FOUND');
    expect(missing.message).toContain(join(dir, 'nope.gz'));
  });
});
