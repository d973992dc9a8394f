/**
 * PagedImages: the pixels of a set that stays on disk. Image i is read from its file with
 * `fs.readSync` at its offset, into a buffer the caller owns, when a batch needs it; nothing
 * keeps a copy, so resident memory is one batch of bytes however large the set. The operating
 * system's page cache does the caching: a set that fits in free memory is read from disk once
 * and then from RAM, one that does not is read as the sampler asks for it.
 *
 * Reads are synchronous on purpose: `makeBatch` is synchronous, and a 224x224x3 image (150 KB)
 * from the page cache costs tens of microseconds, far below a training step; adjacent indices
 * (evaluation order) are coalesced into one read.
 *
 * The file descriptor is shared by every set opened from one file (train, test, and the views
 * `slice` makes) and counted: each holds one reference, released by `close()` or, for sets
 * dropped without it, when they are garbage-collected, and the file is closed with the last.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { formatCount, ShardlineError } from '@shardline/core/errors';

/**
 * Images read from a file on demand: what `ImageSet.images` holds when a set is larger than
 * the memory budget (`residentBytes` of `loadImageFolder` and `readImageFolderCache`). Tell
 * the two forms apart with `images instanceof Uint8Array`.
 *
 * @example
 * ```ts
 * const loaded = await readImageFolderCache(path, fingerprint, { residentBytes: 0 });
 * if (loaded && !(loaded.train.images instanceof Uint8Array)) {
 *   const first = loaded.train.images.readImages([0, 1], new Uint8Array(2 * imageSize(loaded.train)));
 *   loaded.train.images.close(); // or leave it to garbage collection
 * }
 * ```
 */
export interface PagedImages {
  /** Number of images. */
  readonly count: number;
  /** Bytes of one image (`height * width * channels`). */
  readonly imageBytes: number;
  /** `count * imageBytes`: what the pixels would take in memory. */
  readonly byteLength: number;
  /** Where the pixels are read from, for messages (a file path, or a description of parts). */
  readonly source: string;
  /** True once {@link PagedImages.close} was called; reads then throw. */
  readonly closed: boolean;
  /**
   * Copies image `index` into `target` at `targetOffset` (default 0). Throws `INVALID_ARGUMENT`
   * for an index outside the set or a target too small, `DATA_CORRUPT` when the file turned out
   * shorter than when it was opened.
   */
  readImage(index: number, target: Uint8Array, targetOffset?: number): void;
  /**
   * Copies the images at `indices`, in that order, packed into `target` (image k at
   * `k * imageBytes`), and returns `target`. Runs of consecutive indices are read at once.
   */
  readImages(indices: ArrayLike<number>, target: Uint8Array): Uint8Array;
  /**
   * Images `[start, end)` as another PagedImages over the same file, without copying (used by
   * `takeImages`). The view holds its own reference to the file: close it too.
   */
  slice(start: number, end?: number): PagedImages;
  /**
   * Releases this set's hold on the file; the file is closed once no set or view uses it.
   * Idempotent. Sets never closed are released when garbage-collected, so `close()` matters
   * only where descriptors are scarce or the file is to be deleted on Windows.
   */
  close(): void;
}

/** Where the pixels of a {@link openPagedImages} set lie in its file. */
export interface PagedImagesLayout {
  /** Byte offset of image 0. */
  readonly offset: number;
  /** Number of images, stored one after another. */
  readonly count: number;
  /** Bytes per image. */
  readonly imageBytes: number;
}

// Node's readSync refuses lengths above 2 GiB; coalesced reads stay well below.
const MAX_READ = 64 * 1024 * 1024;

/** One open file shared by the sets read from it, closed with the last reference. */
class SharedFile {
  private refs = 0;
  constructor(
    readonly fd: number,
    readonly path: string,
  ) {}
  retain(): void {
    this.refs += 1;
  }
  release(): void {
    this.refs -= 1;
    if (this.refs === 0) {
      try {
        closeSync(this.fd);
      } catch {
        // Already closed (a double release would be a bug here, not the caller's problem).
      }
    }
  }
}

// A set dropped without close() still gives its descriptor back, when it is collected.
const unclosed = new FinalizationRegistry<SharedFile>((file) => file.release());

/**
 * Opens `path` for reading the images described by `layout` on demand. Throws `NOT_FOUND` when
 * the file is missing and `DATA_CORRUPT` when it is shorter than the layout needs. Used by
 * `readImageFolderCache` and `loadImageFolder`; open a raw NHWC uint8 file of your own with it.
 *
 * @example
 * ```ts
 * const images = openPagedImages('pixels.bin', { offset: 0, count: 1000, imageBytes: 64 * 64 * 3 });
 * const set: ImageSet = { images, labels, count: 1000, height: 64, width: 64, channels: 3 };
 * ```
 */
export function openPagedImages(path: string, layout: PagedImagesLayout): PagedImages {
  checkLayout(layout);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw new ShardlineError(
      'NOT_FOUND',
      `Cannot open ${path} to read images from: ${(error as Error).message}. Check that the file exists and is readable.`,
      { cause: error },
    );
  }
  const size = fstatSync(fd).size;
  const needed = layout.offset + layout.count * layout.imageBytes;
  if (size < needed) {
    closeSync(fd);
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${path} has ${formatCount(size)} bytes: ${formatCount(layout.count)} images of ${formatCount(layout.imageBytes)} bytes at offset ${formatCount(layout.offset)} need ${formatCount(needed)}. Check the layout, or whether the file was cut short.`,
    );
  }
  return pagedSetsOnDescriptor(fd, path, [layout])[0]!;
}

/**
 * One set per layout, all on a descriptor the caller opened and hands over (closed with the last
 * set using it): a reader pages from the very descriptor it verified, and a scratch file can be
 * unlinked as soon as it is open.
 */
export function pagedSetsOnDescriptor(
  fd: number,
  path: string,
  layouts: readonly PagedImagesLayout[],
): PagedImages[] {
  const file = new SharedFile(fd, path);
  return layouts.map((layout) => new FilePagedImages(file, layout));
}

function checkLayout({ offset, count, imageBytes }: PagedImagesLayout): void {
  if (
    !Number.isSafeInteger(offset) ||
    offset < 0 ||
    !Number.isSafeInteger(count) ||
    count < 0 ||
    !Number.isSafeInteger(imageBytes) ||
    imageBytes < 1
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A paged image layout needs a non-negative integer offset and count and a positive imageBytes: found offset ${String(offset)}, count ${String(count)}, imageBytes ${String(imageBytes)}.`,
    );
  }
}

abstract class BasePagedImages implements PagedImages {
  abstract readonly count: number;
  abstract readonly imageBytes: number;
  abstract readonly source: string;
  abstract readonly closed: boolean;
  abstract slice(start: number, end?: number): PagedImages;
  abstract close(): void;
  /** Reads `count` images starting at `index` into `target` at `targetOffset`. */
  protected abstract readRun(
    index: number,
    count: number,
    target: Uint8Array,
    targetOffset: number,
  ): void;

  get byteLength(): number {
    return this.count * this.imageBytes;
  }

  readImage(index: number, target: Uint8Array, targetOffset = 0): void {
    this.checkOpen();
    this.checkIndex(index, 0);
    if (
      !Number.isSafeInteger(targetOffset) ||
      targetOffset < 0 ||
      targetOffset + this.imageBytes > target.length
    ) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `An image of ${formatCount(this.imageBytes)} bytes does not fit a target of ${formatCount(target.length)} bytes at offset ${String(targetOffset)}: pass a larger target.`,
      );
    }
    this.readRun(index, 1, target, targetOffset);
  }

  readImages(indices: ArrayLike<number>, target: Uint8Array): Uint8Array {
    this.checkOpen();
    const n = indices.length;
    const size = this.imageBytes;
    if (target.length < n * size) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${formatCount(n)} images of ${formatCount(size)} bytes need a target of ${formatCount(n * size)} bytes: found ${formatCount(target.length)}.`,
      );
    }
    const maxRun = Math.max(1, Math.floor(MAX_READ / size));
    let runStart = 0;
    for (let k = 0; k < n; k++) {
      const index = indices[k]!;
      this.checkIndex(index, k);
      const first = indices[runStart]!;
      const continuesRun = index === first + (k - runStart) && k - runStart < maxRun;
      if (k > runStart && !continuesRun) {
        this.readRun(first, k - runStart, target, runStart * size);
        runStart = k;
      }
    }
    if (n > runStart) this.readRun(indices[runStart]!, n - runStart, target, runStart * size);
    return target;
  }

  protected checkOpen(): void {
    if (this.closed) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `The images of ${this.source} were closed: read them before calling close(), or load the set again.`,
      );
    }
  }

  private checkIndex(index: number, position: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Image index ${String(index)} at position ${position} is outside the set: expected 0 <= index < ${formatCount(this.count)}.`,
      );
    }
  }

  protected checkRange(start: number, end: number): void {
    if (
      !Number.isInteger(start) ||
      !Number.isInteger(end) ||
      start < 0 ||
      start > end ||
      end > this.count
    ) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Cannot take images [${String(start)}, ${String(end)}) of a set of ${formatCount(this.count)}: expected 0 <= start <= end <= count.`,
      );
    }
  }
}

class FilePagedImages extends BasePagedImages {
  readonly offset: number;
  readonly count: number;
  readonly imageBytes: number;
  private isClosed = false;

  constructor(
    private readonly file: SharedFile,
    layout: PagedImagesLayout,
  ) {
    super();
    checkLayout(layout);
    this.offset = layout.offset;
    this.count = layout.count;
    this.imageBytes = layout.imageBytes;
    file.retain();
    unclosed.register(this, file, this);
  }

  get source(): string {
    return this.file.path;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  slice(start: number, end: number = this.count): PagedImages {
    this.checkOpen();
    this.checkRange(start, end);
    return new FilePagedImages(this.file, {
      offset: this.offset + start * this.imageBytes,
      count: end - start,
      imageBytes: this.imageBytes,
    });
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    unclosed.unregister(this);
    this.file.release();
  }

  protected readRun(index: number, count: number, target: Uint8Array, targetOffset: number): void {
    const length = count * this.imageBytes;
    const position = this.offset + index * this.imageBytes;
    let done = 0;
    while (done < length) {
      const n = readSync(this.file.fd, target, targetOffset + done, length - done, position + done);
      if (n === 0) {
        throw new ShardlineError(
          'DATA_CORRUPT',
          `${this.file.path} ends at byte ${formatCount(position + done)}: expected images up to byte ${formatCount(position + length)}. The file was truncated or replaced after it was opened; delete it and load the data again.`,
        );
      }
      done += n;
    }
  }
}

/** Memory bytes behind the PagedImages interface, so a combined view can mix both forms. */
class MemoryPart extends BasePagedImages {
  readonly source = 'memory';
  readonly closed = false;
  constructor(
    private readonly bytes: Uint8Array,
    readonly count: number,
    readonly imageBytes: number,
  ) {
    super();
  }
  slice(start: number, end: number = this.count): PagedImages {
    this.checkRange(start, end);
    const size = this.imageBytes;
    return new MemoryPart(this.bytes.subarray(start * size, end * size), end - start, size);
  }
  close(): void {}
  protected readRun(index: number, count: number, target: Uint8Array, targetOffset: number): void {
    const size = this.imageBytes;
    target.set(this.bytes.subarray(index * size, (index + count) * size), targetOffset);
  }
}

/** The images of several parts, one after another, read from whichever part holds each. */
class ConcatPagedImages extends BasePagedImages {
  readonly count: number;
  readonly imageBytes: number;
  private readonly starts: number[];
  private isClosed = false;

  constructor(private readonly parts: readonly PagedImages[]) {
    super();
    this.imageBytes = parts[0]!.imageBytes;
    this.starts = [];
    let count = 0;
    for (const part of parts) {
      this.starts.push(count);
      count += part.count;
    }
    this.count = count;
  }

  get source(): string {
    return this.parts.map((p) => p.source).join(' + ');
  }

  get closed(): boolean {
    return this.isClosed;
  }

  slice(start: number, end: number = this.count): PagedImages {
    this.checkOpen();
    this.checkRange(start, end);
    const parts: PagedImages[] = [];
    for (const [p, part] of this.parts.entries()) {
      const from = Math.max(start, this.starts[p]!) - this.starts[p]!;
      const to = Math.min(end, this.starts[p]! + part.count) - this.starts[p]!;
      if (to > from) parts.push(part.slice(from, to));
    }
    return parts.length === 1 ? parts[0]! : new ConcatPagedImages(parts);
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const part of this.parts) part.close();
  }

  protected readRun(index: number, count: number, target: Uint8Array, targetOffset: number): void {
    const size = this.imageBytes;
    let p = this.partOf(index);
    let done = 0;
    while (done < count) {
      const part = this.parts[p]!;
      const local = index + done - this.starts[p]!;
      const take = Math.min(count - done, part.count - local);
      if (take > 0) {
        part.readImages(
          Array.from({ length: take }, (_, k) => local + k),
          target.subarray(targetOffset + done * size, targetOffset + (done + take) * size),
        );
        done += take;
      }
      p += 1;
    }
  }

  private partOf(index: number): number {
    let p = this.starts.length - 1;
    while (this.starts[p]! > index) p -= 1;
    return p;
  }
}

/**
 * The images of `parts`, one after another, as one PagedImages, with nothing copied: paged parts
 * are read from their files, in-memory ones from memory. The view holds its own references to
 * the files (closing it releases them; closing a part's original does not disturb the view).
 * All parts must have the same `imageBytes`.
 */
export function concatPagedImages(
  parts: readonly (Uint8Array | PagedImages)[],
  imageBytes: number,
): PagedImages {
  const own = parts.map((part) => {
    if (part instanceof Uint8Array) {
      if (part.length % imageBytes !== 0) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `${formatCount(part.length)} bytes of pixels are not a whole number of ${formatCount(imageBytes)}-byte images.`,
        );
      }
      return new MemoryPart(part, part.length / imageBytes, imageBytes);
    }
    if (part.imageBytes !== imageBytes) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Cannot join images of ${formatCount(part.imageBytes)} bytes with images of ${formatCount(imageBytes)} bytes: give sets of one shape.`,
      );
    }
    return part.slice(0);
  });
  return new ConcatPagedImages(own);
}

/**
 * Calls `fn` with the pixels of `images` in order, in chunks of at most `chunkBytes` (whole
 * images; at least one). In-memory pixels are passed as views; paged ones are read into one
 * reused buffer, so `fn` must be done with a chunk when it returns (await it: `fn` may be async).
 */
export async function forEachPixelChunk(
  images: Uint8Array | PagedImages,
  imageBytes: number,
  chunkBytes: number,
  fn: (chunk: Uint8Array) => void | Promise<void>,
): Promise<void> {
  if (images instanceof Uint8Array) {
    for (let at = 0; at < images.length; at += chunkBytes) {
      await fn(images.subarray(at, Math.min(images.length, at + chunkBytes)));
    }
    return;
  }
  const per = Math.max(1, Math.floor(chunkBytes / imageBytes));
  const buffer = new Uint8Array(Math.min(per, images.count) * imageBytes);
  for (let start = 0; start < images.count; start += per) {
    const n = Math.min(per, images.count - start);
    const indices = Array.from({ length: n }, (_, k) => start + k);
    await fn(images.readImages(indices, buffer).subarray(0, n * imageBytes));
  }
}
