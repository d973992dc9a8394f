/**
 * The image-folder cache file: its format, a streaming writer and a streaming reader.
 *
 * Neither side ever holds the whole file. The writer appends through a 1 MiB buffer, hashing
 * as it goes, to a hidden `.partial` file that is fsynced and renamed into place (readers see
 * the old file or the whole new one). The reader checks the SHA-256 trailer by reading the file
 * once in chunks, copying into memory only what it keeps: the labels always (one byte per
 * image), the pixels when they fit the resident budget. Otherwise the sets it returns are
 * {@link PagedImages} on the very descriptor it verified.
 */

import { constants as bufferConstants } from 'node:buffer';
import { createHash, type Hash, randomBytes } from 'node:crypto';
import { close, fstat, open, read } from 'node:fs';
import { type FileHandle, open as openHandle, readdir, rename, rm, stat } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { syncDir } from '@shardline/core/atomicFile';
import { formatCount, ShardlineError } from '@shardline/core/errors';
import type { Logger } from '@shardline/core/logger';
import type { ImageSet } from './imageSet.js';
import { forEachPixelChunk, pagedSetsOnDescriptor } from './pagedImages.js';

/**
 * First 8 bytes of a cache file. Layout, all integers little-endian:
 *
 * | bytes | content |
 * | ----- | ------- |
 * | 8     | magic `SLIMGFLD` |
 * | 4     | format version, uint32 (1) |
 * | 4     | header length H, uint32 |
 * | H     | header, UTF-8 JSON: fingerprint, classNames, height, width, channels, trainCount, testCount, skipped |
 * | T     | train labels, uint8, T = trainCount |
 * | E     | test labels, uint8, E = testCount |
 * | T*S   | train pixels, uint8 NHWC, S = height*width*channels |
 * | E*S   | test pixels |
 * | 32    | SHA-256 of everything before it |
 *
 * A file that fails any check (magic, version, header, fingerprint, length, labels, digest) is
 * ignored and the folder decoded again.
 */
export const IMAGE_FOLDER_CACHE_MAGIC = 'SLIMGFLD';
/** Version of the cache file format; a file with another is decoded again. */
export const IMAGE_FOLDER_CACHE_VERSION = 1;

/**
 * Environment variable that sets the default resident budget in bytes (see
 * {@link resolveResidentBytes}), e.g. `SHARDLINE_RESIDENT_BYTES=8G` on a worker whose other
 * processes need the rest of its memory.
 */
export const RESIDENT_BYTES_ENV = 'SHARDLINE_RESIDENT_BYTES';

/** One file left out of a folder, and why. */
export interface SkippedImage {
  /** Path relative to the folder given to `loadImageFolder`, with `/` separators. */
  readonly path: string;
  readonly reason: string;
}

/** The JSON header; its key order is part of the format (the file must be byte-identical). */
export interface CacheHeader {
  fingerprint: string;
  classNames: string[];
  height: number;
  width: number;
  channels: number;
  trainCount: number;
  testCount: number;
  skipped: { count: number; examples: SkippedImage[] };
}

/** What a cache file holds, as sets. */
export interface CachedSets {
  readonly train: ImageSet;
  readonly test: ImageSet;
  readonly classNames: readonly string[];
  readonly fingerprint: string;
  readonly skipped: { readonly count: number; readonly examples: readonly SkippedImage[] };
}

// Numeric descriptors, not FileHandles: a verified descriptor is handed to PagedImages, which
// reads it with readSync, and a FileHandle would close it on garbage collection with a warning.
function readAt(fd: number, target: Uint8Array, offset: number, length: number, position: number) {
  return new Promise<number>((resolve, reject) =>
    read(fd, target, offset, length, position, (error, n) => (error ? reject(error) : resolve(n))),
  );
}
const openAsync = promisify(open);
const closeAsync = promisify(close);
const fstatAsync = promisify(fstat);

/** Bytes per read or write: large enough that syscalls do not show, small enough to not matter. */
const CHUNK = 1024 * 1024;

/**
 * The pixel budget of a load: `given` when set, else `$SHARDLINE_RESIDENT_BYTES`, else a quarter
 * of the machine's memory (`os.totalmem() / 4`), leaving the rest to the model, the batches and
 * other processes. The variable takes bytes, optionally with a binary suffix (`512M`, `8G`).
 * Throws `INVALID_ARGUMENT` for a negative or unreadable value.
 */
export function resolveResidentBytes(
  given: number | undefined,
  env: Readonly<Record<string, string | undefined>> = process.env,
): number {
  if (given !== undefined) {
    if (!(given >= 0)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `residentBytes must be a non-negative number of bytes: found ${String(given)}.`,
      );
    }
    return given;
  }
  const raw = env[RESIDENT_BYTES_ENV]?.trim();
  if (raw !== undefined && raw !== '') {
    const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(raw);
    if (!m) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${RESIDENT_BYTES_ENV}=${JSON.stringify(raw)} is not a number of bytes: expected e.g. 4294967296, 4096M or 4G.`,
      );
    }
    const power = ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
    return Number(m[1]) * 1024 ** power;
  }
  return Math.floor(totalmem() / 4);
}

/**
 * Whether pixels of these sizes are kept in memory: within the budget, and each split within
 * the largest buffer Node allocates (4 GiB on Node 20), beyond which a split is always paged.
 */
export function keepsInMemory(
  residentBytes: number,
  trainPixelBytes: number,
  testPixelBytes: number,
): boolean {
  return (
    trainPixelBytes + testPixelBytes <= residentBytes &&
    Math.max(trainPixelBytes, testPixelBytes) <= bufferConstants.MAX_LENGTH
  );
}

/** Magic, version, header length and header: the bytes before the labels. */
export function headerBytes(header: CacheHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(16);
  prefix.write(IMAGE_FOLDER_CACHE_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(IMAGE_FOLDER_CACHE_VERSION, 8);
  prefix.writeUInt32LE(json.length, 12);
  return Buffer.concat([prefix, json]);
}

/** Where a header puts each part of the file. */
export interface CacheLayout {
  /** Bytes per image. */
  readonly imageBytes: number;
  /** Offset of the train labels (test labels follow). */
  readonly labelsAt: number;
  /** Offset of the train pixels. */
  readonly trainPixelsAt: number;
  /** Offset of the test pixels. */
  readonly testPixelsAt: number;
  /** Offset of the SHA-256 trailer; the file is 32 bytes longer. */
  readonly digestAt: number;
}

/** The layout of a file whose header (magic to JSON) ends at `headerEnd`. */
export function cacheLayout(header: CacheHeader, headerEnd: number): CacheLayout {
  const imageBytes = header.height * header.width * header.channels;
  const labelsAt = headerEnd;
  const trainPixelsAt = labelsAt + header.trainCount + header.testCount;
  const testPixelsAt = trainPixelsAt + header.trainCount * imageBytes;
  return {
    imageBytes,
    labelsAt,
    trainPixelsAt,
    testPixelsAt,
    digestAt: testPixelsAt + header.testCount * imageBytes,
  };
}

/** Bytes of a file at `at`, wanted in memory. */
interface Region {
  readonly at: number;
  readonly into: Uint8Array;
}

/** Copies the part of `bytes` (which lie at `position` in the file) that falls in each region. */
function copyOverlap(regions: readonly Region[], bytes: Uint8Array, position: number): void {
  for (const r of regions) {
    const from = Math.max(position, r.at);
    const to = Math.min(position + bytes.length, r.at + r.into.length);
    if (to > from) r.into.set(bytes.subarray(from - position, to - position), from - r.at);
  }
}

/**
 * Appends a cache file. With `partial`, the bytes go to that file (hashed, trailer added by
 * `finish`); with `keep`, the bytes falling in those regions are also copied to memory. When
 * both are given, a failing file (disk full, read-only) is dropped with a warning and the load
 * goes on from memory: a cache that cannot be written costs a decode next time, never this load.
 */
export class CacheWriter {
  private handle: FileHandle | undefined;
  private readonly hash: Hash = createHash('sha256');
  private readonly buffer = Buffer.allocUnsafe(CHUNK);
  private fill = 0;
  /** Bytes appended so far (the file offset of the next byte). */
  position = 0;
  /** Why the file was dropped, when it was. */
  fileError: Error | undefined;

  private constructor(
    readonly partial: string | undefined,
    handle: FileHandle | undefined,
    readonly keep: readonly Region[],
    private readonly logger: Logger,
  ) {
    this.handle = handle;
  }

  /**
   * Opens a writer. `partial` is created (exclusively) when given; a failure to create it is
   * thrown, so the caller can choose another place.
   */
  static async open(options: {
    partial?: string;
    keep?: readonly Region[];
    logger: Logger;
  }): Promise<CacheWriter> {
    const handle =
      options.partial === undefined ? undefined : await openHandle(options.partial, 'wx+');
    return new CacheWriter(options.partial, handle, options.keep ?? [], options.logger);
  }

  /** True while the bytes are going to a file. */
  get hasFile(): boolean {
    return this.handle !== undefined;
  }

  async write(bytes: Uint8Array): Promise<void> {
    copyOverlap(this.keep, bytes, this.position);
    this.position += bytes.length;
    if (!this.handle) return;
    this.hash.update(bytes);
    if (this.fill + bytes.length > this.buffer.length) await this.flush();
    if (bytes.length >= this.buffer.length) {
      await this.guard(async (h) => {
        await h.write(bytes, 0, bytes.length);
      });
    } else {
      this.buffer.set(bytes, this.fill);
      this.fill += bytes.length;
    }
  }

  /**
   * Reads back `length` bytes written at `position` into `target` (the fallback pass copies
   * images out of a first file into a second).
   */
  async readBack(position: number, target: Uint8Array): Promise<void> {
    for (const r of this.keep) {
      if (position >= r.at && position + target.length <= r.at + r.into.length) {
        target.set(r.into.subarray(position - r.at, position - r.at + target.length));
        return;
      }
    }
    const handle = this.handle;
    if (!handle) {
      throw new ShardlineError(
        'INTERNAL',
        'readBack: the bytes are neither in memory nor on disk.',
      );
    }
    await this.flush();
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await handle.read(target, done, target.length - done, position + done);
      if (bytesRead === 0) {
        throw new ShardlineError(
          'INTERNAL',
          `${this.partial} is shorter than what was written to it (${formatCount(position + done)} bytes).`,
        );
      }
      done += bytesRead;
    }
  }

  /** Appends the SHA-256 trailer, fsyncs and closes the file. Returns the partial's path. */
  async finish(): Promise<string | undefined> {
    if (this.handle) {
      const digest = this.hash.digest();
      if (this.fill + digest.length > this.buffer.length) await this.flush();
      this.buffer.set(digest, this.fill);
      this.fill += digest.length;
      this.position += digest.length;
      await this.flush();
      await this.guard((h) => h.sync());
    }
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
    return handle ? this.partial : undefined;
  }

  /** Closes and deletes the partial file. Safe to call more than once, and after finish. */
  async abort(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close().catch(() => {});
    if (this.partial !== undefined) await rm(this.partial, { force: true });
  }

  private async flush(): Promise<void> {
    if (this.fill === 0 || !this.handle) return;
    const n = this.fill;
    this.fill = 0;
    await this.guard(async (h) => {
      let done = 0;
      while (done < n) done += (await h.write(this.buffer, done, n - done)).bytesWritten;
    });
  }

  /** Runs a file operation; on failure drops the file when memory has the bytes, else throws. */
  private async guard(op: (handle: FileHandle) => Promise<void>): Promise<void> {
    const handle = this.handle;
    if (!handle) return;
    try {
      await op(handle);
    } catch (error) {
      if (this.keep.length === 0) throw error;
      this.fileError = error as Error;
      this.logger.warn(
        `could not write the image folder cache ${this.partial}; going on in memory, and the next load decodes again`,
        { error: (error as Error).message },
      );
      await this.abort();
    }
  }
}

/** A name for a writer's temporary file next to `path`, unique per process and call. */
export function partialPathFor(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.partial`,
  );
}

/**
 * Deletes the `.partial` files in `dir` (cache and scratch files, named with a pid and a random
 * suffix) that a process on this machine left when it died mid-write: its pid is gone and the
 * file has not changed for ten minutes. A decoded set is as large as its folder, so crashed
 * writes must not pile up. Best effort; a worker's resumable `<cache>.partial` never matches.
 */
export async function removeStalePartials(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^\..+\.(\d+)\.[0-9a-f]{8}\.partial$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    try {
      const info = await stat(join(dir, name));
      if (Date.now() - info.mtimeMs > 10 * 60 * 1000) await rm(join(dir, name), { force: true });
    } catch {
      // Gone already, or not ours to remove.
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Renames a finished partial file over `path` and fsyncs the folder, so the rename lasts. */
export async function commitPartial(partial: string, path: string): Promise<void> {
  await rename(partial, path);
  await syncDir(dirname(path));
}

/**
 * Writes sets to `path` atomically in the cache format, pixels streamed in chunks (a paged set
 * is read a chunk at a time, never whole).
 */
export async function writeCacheFile(
  path: string,
  sets: CachedSets,
  logger: Logger,
): Promise<void> {
  const { train, test } = sets;
  const header: CacheHeader = {
    fingerprint: sets.fingerprint,
    classNames: [...sets.classNames],
    height: train.height,
    width: train.width,
    channels: train.channels,
    trainCount: train.count,
    testCount: test.count,
    skipped: { count: sets.skipped.count, examples: [...sets.skipped.examples] },
  };
  const partial = partialPathFor(path);
  const writer = await CacheWriter.open({ partial, logger });
  try {
    await writer.write(headerBytes(header));
    await writer.write(train.labels);
    await writer.write(test.labels);
    const imageBytes = train.height * train.width * train.channels;
    for (const set of [train, test]) {
      await forEachChunk(set, imageBytes, (chunk) => writer.write(chunk));
    }
    await writer.finish();
    await commitPartial(partial, path);
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

/** The pixels of `set` in order, in chunks of about 8 MiB (whole images). */
function forEachChunk(
  set: ImageSet,
  imageBytes: number,
  fn: (chunk: Uint8Array) => Promise<void>,
): Promise<void> {
  return forEachPixelChunk(set.images, imageBytes, 8 * CHUNK, fn);
}

/**
 * Reads a cache file, checking everything (see {@link IMAGE_FOLDER_CACHE_MAGIC}) while reading
 * it once in chunks. Pixels are kept in memory when they fit `residentBytes`
 * ({@link keepsInMemory}), else the sets page from the file. Returns undefined for a missing
 * file, and for a damaged one after a warning.
 */
export async function readCacheFile(
  path: string,
  fingerprint: string,
  logger: Logger,
  residentBytes: number,
): Promise<CachedSets | undefined> {
  let fd: number;
  try {
    fd = await openAsync(path, 'r');
  } catch {
    return undefined;
  }
  let handedOver = false;
  try {
    const result = await readOpenCacheFile(fd, path, fingerprint, logger, residentBytes);
    handedOver = result !== undefined && !(result.train.images instanceof Uint8Array);
    return result;
  } catch (error) {
    // A read error or a file that shrank while being read: as damaged as a bad digest.
    logger.warn(
      `ignoring unreadable image folder cache ${path} (${(error as Error).message}); decoding the images again`,
    );
    return undefined;
  } finally {
    if (!handedOver) await closeAsync(fd).catch(() => {});
  }
}

async function readOpenCacheFile(
  fd: number,
  path: string,
  fingerprint: string,
  logger: Logger,
  residentBytes: number,
): Promise<CachedSets | undefined> {
  const bad = (why: string) => {
    logger.warn(`ignoring damaged image folder cache ${path} (${why}); decoding the images again`);
    return undefined;
  };
  const size = (await fstatAsync(fd)).size;
  if (size < 16 + 32) return bad('truncated');
  const prefix = Buffer.alloc(16);
  await readFully(fd, prefix, 0);
  if (prefix.toString('latin1', 0, 8) !== IMAGE_FOLDER_CACHE_MAGIC) return bad('wrong magic');
  if (prefix.readUInt32LE(8) !== IMAGE_FOLDER_CACHE_VERSION) return bad('another format version');
  const headerLength = prefix.readUInt32LE(12);
  if (16 + headerLength + 32 > size) return bad('truncated header');
  const json = Buffer.alloc(headerLength);
  await readFully(fd, json, 16);
  let header: CacheHeader;
  try {
    header = JSON.parse(json.toString('utf8')) as CacheHeader;
  } catch {
    return bad('unreadable header');
  }
  const { height, width, channels, trainCount, testCount, classNames } = header;
  const ints = [height, width, channels, trainCount, testCount];
  if (
    header.fingerprint !== fingerprint ||
    !Array.isArray(classNames) ||
    !ints.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    (channels !== 1 && channels !== 3) ||
    typeof header.skipped?.count !== 'number' ||
    !Array.isArray(header.skipped.examples)
  ) {
    return bad('unexpected header');
  }
  const layout = cacheLayout(header, 16 + headerLength);
  const expected = layout.digestAt + 32;
  if (size !== expected) return bad(`expected ${expected} bytes, found ${size}`);

  const labels = new Uint8Array(trainCount + testCount);
  const trainBytes = trainCount * layout.imageBytes;
  const testBytes = testCount * layout.imageBytes;
  const inMemory = keepsInMemory(residentBytes, trainBytes, testBytes);
  const trainPixels = inMemory ? new Uint8Array(trainBytes) : undefined;
  const testPixels = inMemory ? new Uint8Array(testBytes) : undefined;
  const regions: Region[] = [{ at: layout.labelsAt, into: labels }];
  if (trainPixels && testPixels) {
    regions.push({ at: layout.trainPixelsAt, into: trainPixels });
    regions.push({ at: layout.testPixelsAt, into: testPixels });
  }
  const digest = await hashFile(fd, layout.digestAt, regions);
  const trailer = Buffer.alloc(32);
  await readFully(fd, trailer, layout.digestAt);
  if (!digest.equals(trailer)) return bad('checksum mismatch');
  for (const l of labels) if (l >= classNames.length) return bad('label out of range');

  const set = (ls: Uint8Array, count: number): Omit<ImageSet, 'images'> => ({
    labels: ls,
    count,
    height,
    width,
    channels,
    numClasses: classNames.length,
  });
  const trainLabels = labels.subarray(0, trainCount);
  const testLabels = labels.subarray(trainCount);
  if (trainPixels && testPixels) {
    return {
      train: { ...set(trainLabels, trainCount), images: trainPixels },
      test: { ...set(testLabels, testCount), images: testPixels },
      classNames,
      fingerprint,
      skipped: header.skipped,
    };
  }
  const [trainImages, testImages] = pagedSetsOnDescriptor(fd, path, [
    { offset: layout.trainPixelsAt, count: trainCount, imageBytes: layout.imageBytes },
    { offset: layout.testPixelsAt, count: testCount, imageBytes: layout.imageBytes },
  ]);
  logger.info(
    `image folder pixels (${formatCount(trainBytes + testBytes)} bytes) exceed the resident budget of ${formatCount(residentBytes)} bytes: reading images from the cache file as batches need them`,
    { cache: path },
  );
  return {
    train: { ...set(trainLabels, trainCount), images: trainImages! },
    test: { ...set(testLabels, testCount), images: testImages! },
    classNames,
    fingerprint,
    skipped: header.skipped,
  };
}

/**
 * SHA-256 of the first `length` bytes of `fd`, read once in order: the parts that fall in
 * `regions` (sorted, disjoint) are read straight into them, the rest through one reused 1 MiB
 * buffer. Memory beyond the regions: that buffer.
 */
async function hashFile(fd: number, length: number, regions: readonly Region[]): Promise<Buffer> {
  const hash = createHash('sha256');
  const scratch = Buffer.allocUnsafe(CHUNK);
  let position = 0;
  const through = async (end: number, target: (n: number) => Uint8Array) => {
    while (position < end) {
      const view = target(Math.min(CHUNK * 8, end - position));
      await readFully(fd, view, position);
      hash.update(view);
      position += view.length;
    }
  };
  for (const r of regions) {
    await through(r.at, (n) => scratch.subarray(0, Math.min(n, CHUNK)));
    const base = r.at;
    await through(r.at + r.into.length, (n) =>
      r.into.subarray(position - base, position - base + n),
    );
  }
  await through(length, (n) => scratch.subarray(0, Math.min(n, CHUNK)));
  return hash.digest();
}

async function readFully(fd: number, target: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const bytesRead = await readAt(fd, target, done, target.length - done, position + done);
    if (bytesRead === 0) {
      throw new ShardlineError(
        'DATA_CORRUPT',
        `The file ended at byte ${formatCount(position + done)} while reading ${formatCount(target.length)} bytes at ${formatCount(position)}.`,
      );
    }
    done += bytesRead;
  }
}
