/**
 * The IDX file format (LeCun's MNIST format): a 4-byte magic number `00 00 <type> <ndims>`,
 * `ndims` big-endian uint32 dimension sizes, then the data in row-major order. Shardline reads
 * type 0x08 (unsigned byte) only, raw or gzip-compressed, and checks every length so that a
 * damaged file fails loudly with a message saying what to do, never a half-read dataset.
 */

import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { gunzip, constants as zlibConstants } from 'node:zlib';
import { formatCount, ShardlineError } from '@shardline/core/errors';

const gunzipAsync = promisify(gunzip);

/** Magic number of an IDX label file: unsigned bytes, one dimension. */
export const IDX_LABELS_MAGIC = 0x0000_0801;
/** Magic number of an IDX image file: unsigned bytes, three dimensions (count, rows, columns). */
export const IDX_IMAGES_MAGIC = 0x0000_0803;
/** The IDX type byte for unsigned 8-bit data, the only type Shardline reads. */
export const IDX_UINT8 = 0x08;

/** The advice appended to a damaged-file message when the caller has nothing better. */
export const DEFAULT_REMEDY = 'Delete it and run again to download a fresh copy.';

const IDX_TYPE_NAMES: Record<number, string> = {
  8: 'unsigned byte',
  9: 'signed byte',
  11: 'int16',
  12: 'int32',
  13: 'float32',
  14: 'float64',
};

/** A decoded IDX file: its dimensions and its bytes (a view, not a copy). */
export interface IdxArray {
  /** Dimension sizes, outermost first: `[count]` for labels, `[count, rows, columns]` for images. */
  readonly shape: readonly number[];
  /** The data, `product(shape)` bytes. */
  readonly data: Uint8Array;
}

/** Options for {@link parseIdx}. */
export interface ParseIdxOptions {
  /** Name used in messages. Default "IDX data". */
  fileName?: string;
  /** Required number of dimensions (1 for labels, 3 for images); any when absent. */
  dimensions?: number;
  /** Say "after decompression" in size messages (the bytes came out of gunzip). */
  decompressed?: boolean;
  /** What the user should do about a damaged file. Default {@link DEFAULT_REMEDY}. */
  remedy?: string;
}

/**
 * Decodes uncompressed IDX bytes, checking the magic number, the type byte, the number of
 * dimensions and that the length is exactly header + product of the dimensions.
 * Throws `DATA_CORRUPT` naming the file, what was expected, what was found and what to do.
 *
 * @example
 * ```ts
 * const { shape, data } = parseIdx(bytes, { fileName: 'train-labels-idx1-ubyte', dimensions: 1 });
 * ```
 */
export function parseIdx(bytes: Uint8Array, options: ParseIdxOptions = {}): IdxArray {
  const name = options.fileName ?? 'IDX data';
  const remedy = options.remedy ?? DEFAULT_REMEDY;
  const after = options.decompressed ? ' after decompression' : '';
  const corrupt = (message: string, details: Record<string, unknown> = {}) =>
    new ShardlineError('DATA_CORRUPT', `${name} ${message} ${remedy}`, {
      details: { file: name, ...details },
    });

  if (bytes.length < 4) {
    throw corrupt(
      `is truncated: expected at least 4 bytes${after} (the IDX magic number), found ${formatCount(bytes.length)}.`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  const type = bytes[2]!;
  const ndims = bytes[3]!;
  const wanted = options.dimensions;
  const expectedMagic =
    wanted === undefined
      ? 'an IDX magic number 0x000008NN'
      : `magic number ${hex32((IDX_UINT8 << 8) | wanted)}${wanted === 1 ? ' (labels)' : wanted === 3 ? ' (images)' : ''}`;
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw corrupt(`is not an IDX file: expected ${expectedMagic}, found ${hex32(magic)}.`, {
      magic,
    });
  }
  if (type !== IDX_UINT8) {
    throw corrupt(
      `has IDX type 0x${hex8(type)} (${IDX_TYPE_NAMES[type] ?? 'unknown'}): expected 0x08 (unsigned byte), the only type Shardline reads.`,
      { magic },
    );
  }
  if (ndims === 0 || (wanted !== undefined && ndims !== wanted)) {
    throw corrupt(
      `has ${ndims} dimension${ndims === 1 ? '' : 's'} (magic number ${hex32(magic)}): expected ${expectedMagic}.`,
      { magic },
    );
  }
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw corrupt(
      `is truncated: expected at least ${formatCount(headerBytes)} bytes${after} (the IDX header), found ${formatCount(bytes.length)}.`,
    );
  }
  const shape: number[] = [];
  let size = 1;
  for (let d = 0; d < ndims; d++) {
    const n = view.getUint32(4 + 4 * d);
    shape.push(n);
    size *= n;
  }
  // Typed arrays top out near 2^32 elements; a header claiming more is damage, not data.
  if (size > 0xffff_ffff) {
    throw corrupt(
      `has an impossible header: dimensions ${shape.join(' x ')} claim ${formatCount(size)} bytes of data.`,
      { shape },
    );
  }
  const total = headerBytes + size;
  if (bytes.length < total) {
    throw corrupt(
      `is truncated: expected ${formatCount(total)} bytes${after}, found ${formatCount(bytes.length)}.`,
      { expectedBytes: total, foundBytes: bytes.length, shape },
    );
  }
  if (bytes.length > total) {
    throw corrupt(
      `has ${formatCount(bytes.length - total)} unexpected trailing bytes: expected ${formatCount(total)} bytes${after} for dimensions ${shape.join(' x ')}, found ${formatCount(bytes.length)}.`,
      { expectedBytes: total, foundBytes: bytes.length, shape },
    );
  }
  return { shape, data: bytes.subarray(headerBytes, total) };
}

/** Options for {@link decodeIdx} and {@link readIdxFile}. */
export interface DecodeIdxOptions extends Omit<ParseIdxOptions, 'decompressed'> {
  /**
   * Size of the uncompressed IDX data, when known (a descriptor knows it): quoted when a file
   * is empty or so damaged that its own header cannot say how long it should be.
   */
  expectedBytes?: number;
  /**
   * Refuse to inflate more than this many bytes, so a damaged or hostile file cannot exhaust
   * memory. Default: no limit.
   */
  maxBytes?: number;
}

/** True when `bytes` starts with the gzip signature 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Decodes the bytes of an IDX file as stored: gunzips them when they are gzip data (required
 * when the name ends in `.gz`), then {@link parseIdx}. Decompression runs on libuv's thread pool,
 * so loading a dataset does not stall the event loop (heartbeats, gRPC) for long.
 */
export async function decodeIdx(
  fileBytes: Uint8Array,
  options: DecodeIdxOptions = {},
): Promise<IdxArray> {
  const name = options.fileName ?? 'IDX data';
  const remedy = options.remedy ?? DEFAULT_REMEDY;
  const named = name.endsWith('.gz');
  if (fileBytes.length === 0) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${name} is empty: expected ${options.expectedBytes === undefined ? 'IDX data' : `${formatCount(options.expectedBytes)} bytes${named ? ' after decompression' : ''}`}, found 0 bytes. ${remedy}`,
      { details: { file: name } },
    );
  }
  if (!isGzip(fileBytes)) {
    if (named) {
      throw new ShardlineError(
        'DATA_CORRUPT',
        `${name} is not gzip data: expected the gzip signature 1f 8b, found ${hexBytes(fileBytes, 4)}${looksLikeText(fileBytes) ? ' (it looks like text, e.g. an error page saved in its place)' : ''}. ${remedy}`,
        { details: { file: name } },
      );
    }
    return parseIdx(fileBytes, { ...options, decompressed: false });
  }
  const data = await gunzipChecked(fileBytes, name, remedy, options);
  return parseIdx(data, { ...options, decompressed: true });
}

async function gunzipChecked(
  fileBytes: Uint8Array,
  name: string,
  remedy: string,
  options: DecodeIdxOptions,
): Promise<Uint8Array> {
  const bound = options.maxBytes === undefined ? {} : { maxOutputLength: options.maxBytes };
  try {
    return await gunzipAsync(fileBytes, bound);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      throw new ShardlineError(
        'DATA_CORRUPT',
        `${name} is too large: expected at most ${formatCount(options.maxBytes ?? 0)} bytes after decompression, found more. ${remedy}`,
        { cause: error, details: { file: name, maxBytes: options.maxBytes } },
      );
    }
    // Recover what the stream held before it broke, to say how far it got.
    const partial = await gunzipAsync(fileBytes, {
      ...bound,
      finishFlush: zlibConstants.Z_SYNC_FLUSH,
    }).catch(() => undefined);
    const found = partial?.length;
    const truncated = code === 'Z_BUF_ERROR' || /unexpected end/i.test((error as Error).message);
    // The file's own header is the most precise claim of its length; the caller's is a fallback.
    const expected = (partial && headerTotal(partial)) ?? options.expectedBytes;
    if (truncated) {
      throw new ShardlineError(
        'DATA_CORRUPT',
        expected !== undefined && found !== undefined
          ? `${name} is truncated: expected ${formatCount(expected)} bytes after decompression, found ${formatCount(found)}. ${remedy}`
          : `${name} is truncated: its gzip stream ends early, after ${formatCount(fileBytes.length)} compressed bytes. ${remedy}`,
        { cause: error, details: { file: name, expectedBytes: expected, foundBytes: found } },
      );
    }
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${name} is corrupt: gunzip failed (${(error as Error).message})${found === undefined ? '' : ` after ${formatCount(found)} bytes of output`}. ${remedy}`,
      { cause: error, details: { file: name } },
    );
  }
}

/** The total IDX size a (possibly partial) header announces, when the header is intact. */
function headerTotal(bytes: Uint8Array): number | undefined {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0 || bytes[2] !== IDX_UINT8)
    return undefined;
  const ndims = bytes[3]!;
  const headerBytes = 4 + 4 * ndims;
  if (ndims === 0 || bytes.length < headerBytes) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let size = 1;
  for (let d = 0; d < ndims; d++) size *= view.getUint32(4 + 4 * d);
  return headerBytes + size;
}

/**
 * Reads and decodes an IDX file (raw or `.gz`); see {@link decodeIdx}. A missing file is a
 * `NOT_FOUND` error naming the path.
 *
 * @example
 * ```ts
 * const labels = await readIdxFile('/data/train-labels-idx1-ubyte.gz', { dimensions: 1 });
 * ```
 */
export async function readIdxFile(path: string, options: DecodeIdxOptions = {}): Promise<IdxArray> {
  const fileName = options.fileName ?? basename(path);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ShardlineError(
        'NOT_FOUND',
        `${fileName} not found: expected a file at ${path}. Check the path, or let loadDataset download it.`,
        { cause: error, details: { path } },
      );
    }
    throw error;
  }
  return decodeIdx(bytes, { ...options, fileName });
}

/**
 * Encodes uint8 data as IDX bytes (uncompressed). The inverse of {@link parseIdx}; handy for
 * writing small datasets and test fixtures.
 */
export function encodeIdx(shape: readonly number[], data: Uint8Array): Uint8Array {
  const size = shape.reduce((a, b) => a * b, 1);
  if (shape.length === 0 || shape.length > 255 || size !== data.length) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `encodeIdx needs 1 to 255 dimensions whose product is the data length: found dimensions [${shape.join(', ')}] and ${formatCount(data.length)} bytes.`,
    );
  }
  const out = new Uint8Array(4 + 4 * shape.length + size);
  const view = new DataView(out.buffer);
  view.setUint32(0, (IDX_UINT8 << 8) | shape.length);
  for (const [d, n] of shape.entries()) view.setUint32(4 + 4 * d, n);
  out.set(data, 4 + 4 * shape.length);
  return out;
}

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

function hex8(n: number): string {
  return n.toString(16).padStart(2, '0').toUpperCase();
}

function hexBytes(bytes: Uint8Array, n: number): string {
  return Array.from(bytes.subarray(0, n), (b) => b.toString(16).padStart(2, '0')).join(' ');
}

function looksLikeText(bytes: Uint8Array): boolean {
  const head = bytes.subarray(0, 64);
  return (
    head.length > 0 && head.every((b) => b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127))
  );
}
