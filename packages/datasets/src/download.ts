/**
 * Fetches a file into a directory so that the directory only ever holds complete, verified
 * files: the body streams into a uniquely named temp file next to the target, is hashed on the
 * way, checked, fsynced, and only then renamed over the target name (rename within a directory
 * is atomic). Any failure removes the temp file. A crash can still leave a temp file behind;
 * the next download of the same file removes stale ones.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ShardlineError, type ShardlineErrorCode, toShardlineError } from '@shardline/core/errors';
import type { ProgressCallback } from './progress.js';

/**
 * The part of the WHATWG `fetch` that downloads use, so tests and proxies can inject their own.
 * The global `fetch` of Node 20 fits.
 */
export type FetchLike = (
  url: string,
  init: { signal?: AbortSignal; redirect?: 'follow' },
) => Promise<FetchResponseLike>;

/** The part of a `Response` that downloads read. */
export interface FetchResponseLike {
  readonly ok: boolean;
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  readonly body: AsyncIterable<Uint8Array> | null;
}

/** Options for {@link downloadFile}. */
export interface DownloadFileOptions<T> {
  /** Candidate URLs, tried in order until one gives a file that passes `verify`. */
  urls: readonly string[];
  /** Directory to store the file in (created when missing). */
  dir: string;
  /** File name inside `dir`. */
  name: string;
  /**
   * Checks the complete body before it is committed; throw to reject it (the next URL is then
   * tried). Its result is returned, so a caller can parse once and keep the parsed form.
   */
  verify: (body: Buffer, sha256: string, url: string) => T | Promise<T>;
  /** Expected size when a server sends no Content-Length (progress only). */
  sizeHint?: number;
  fetch?: FetchLike;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

/** A committed download. */
export interface DownloadedFile<T> {
  /** Final path of the file. */
  path: string;
  /** The URL that served it. */
  url: string;
  /** What `verify` returned. */
  verified: T;
  bytes: number;
}

/** One failed attempt, for the error that lists them all. */
export interface DownloadAttempt {
  url: string;
  code: ShardlineErrorCode;
  reason: string;
}

/**
 * Downloads `name` into `dir` from the first of `urls` that serves a file `verify` accepts,
 * atomically (see the module comment). When every URL fails, throws a `NETWORK` error (or
 * `DATA_CORRUPT` when every server answered but with bad data) whose `details.attempts` lists
 * each URL and why it failed.
 */
export async function downloadFile<T>(options: DownloadFileOptions<T>): Promise<DownloadedFile<T>> {
  const fetchImpl = options.fetch ?? (globalThis.fetch as unknown as FetchLike);
  await mkdir(options.dir, { recursive: true });
  await removeStaleTempFiles(options.dir, options.name);
  const attempts: DownloadAttempt[] = [];
  for (const url of options.urls) {
    try {
      return await downloadOnce(url, options, fetchImpl);
    } catch (error) {
      if (options.signal?.aborted) {
        throw new ShardlineError('CANCELLED', `Download of ${options.name} was cancelled.`, {
          cause: error,
        });
      }
      const e = toShardlineError(error, 'NETWORK');
      attempts.push({ url, code: e.code, reason: describeError(error) });
    }
  }
  const code: ShardlineErrorCode =
    attempts.length > 0 && attempts.every((a) => a.code === 'DATA_CORRUPT')
      ? 'DATA_CORRUPT'
      : 'NETWORK';
  throw new ShardlineError(
    code,
    `Could not download ${options.name}: ${attempts.length === 0 ? 'no URL to try.' : attempts.map((a) => `${a.url}: ${a.reason.replace(/\.$/, '')}`).join('; ')}.`,
    { details: { file: options.name, attempts } },
  );
}

async function downloadOnce<T>(
  url: string,
  options: DownloadFileOptions<T>,
  fetchImpl: FetchLike,
): Promise<DownloadedFile<T>> {
  const { dir, name } = options;
  const target = join(dir, name);
  const temp = join(dir, tempName(name));
  const handle = await open(temp, 'wx');
  let committed = false;
  try {
    const response = await fetchImpl(url, {
      redirect: 'follow',
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (!response.ok || response.body === null) {
      // Drain nothing: an error body is of no use, and the connection closes with the response.
      throw new ShardlineError(
        response.status === 404 ? 'NOT_FOUND' : 'NETWORK',
        `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`,
      );
    }
    const lengthHeader = response.headers.get('content-length');
    const contentLength = lengthHeader === null ? undefined : Number(lengthHeader);
    const totalBytes =
      contentLength !== undefined && Number.isFinite(contentLength)
        ? contentLength
        : options.sizeHint;
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let received = 0;
    const report = (done: boolean) =>
      options.onProgress?.({ file: name, url, receivedBytes: received, totalBytes, done });
    report(false);
    for await (const chunk of response.body) {
      const buffer = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      hash.update(buffer);
      chunks.push(buffer);
      received += buffer.length;
      await handle.write(buffer);
      report(false);
    }
    if (contentLength !== undefined && received !== contentLength) {
      throw new ShardlineError(
        'NETWORK',
        `the transfer ended early: expected ${contentLength} bytes (Content-Length), received ${received}`,
      );
    }
    const body = Buffer.concat(chunks, received);
    const verified = await options.verify(body, hash.digest('hex'), url);
    // Data first, then the name: after a power cut the target is either absent or complete.
    await handle.sync();
    await handle.close();
    await rename(temp, target);
    committed = true;
    await syncDirectory(dir);
    report(true);
    return { path: target, url, verified, bytes: received };
  } finally {
    if (!committed) {
      await handle.close().catch(() => {});
      await unlink(temp).catch(() => {});
    }
  }
}

// `.<name>~<host>~<pid>~<random>.part`: hidden, never matches a file name the loader looks for,
// and says who is writing it so stale ones can be told from live ones.
function tempName(name: string): string {
  return `.${name}~${hostname()}~${process.pid}~${randomBytes(4).toString('hex')}.part`;
}

const STALE_AFTER_MS = 60 * 60 * 1000;

/**
 * Removes temp files of `name` left by crashed downloads: those written by a process of this
 * host that is gone, and any untouched for an hour (a live download touches its file
 * continuously; the hour covers caches shared between hosts).
 */
async function removeStaleTempFiles(dir: string, name: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return;
  }
  const prefix = `.${name}~`;
  const here = hostname();
  for (const entry of entries) {
    if (!entry.startsWith(prefix) || !entry.endsWith('.part')) continue;
    const [host, pidText] = entry.slice(prefix.length).split('~');
    const path = join(dir, entry);
    const deadHere = host === here && !processAlive(Number(pidText));
    const old = await stat(path).then(
      (s) => Date.now() - s.mtimeMs > STALE_AFTER_MS,
      () => false,
    );
    if (deadHere || old) await unlink(path).catch(() => {});
  }
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function syncDirectory(dir: string): Promise<void> {
  // Makes the rename itself durable. Not every platform can open a directory (Windows): the
  // file is still complete there, only the rename might be lost on power failure.
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Best effort, see above.
  }
}

/** A one-line reason for a failed attempt, including the network cause fetch hides. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause as (Error & { code?: string }) | undefined;
  const detail =
    cause instanceof Error ? ` (${cause.code ? `${cause.code}: ` : ''}${cause.message})` : '';
  return `${error.message}${detail}`;
}
