/**
 * FetchDataset, the worker's side: downloads the job's decoded image-folder dataset (one
 * `SLIMGFLD` cache file, ending in a SHA-256 of everything before it) from the coordinator into
 * `<destination>.partial`, and renames it to `destination` once complete and checked.
 *
 * Resuming is the point. Chunks are checked (offset, size, CRC-32) before they are appended, so
 * the partial file is always a prefix of the real one, even after a crash mid-write: its size is
 * where the next request starts, whether the stream broke a moment ago or a run died yesterday.
 * A chunk that fails a check makes the whole partial file suspect, so it is deleted.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import {
  formatCount,
  hasErrorCode,
  isShardlineError,
  type Logger,
  ShardlineError,
  syncDir,
  toShardlineError,
} from '@shardline/core';
import {
  type CoordinatorServiceClient,
  crc32,
  type FetchDatasetResponse,
  fromGrpcStatus,
} from '@shardline/protocol';
import { retryWithBackoff } from './backoff.js';

/** Options of {@link fetchDatasetFile}. */
export interface FetchDatasetFileOptions {
  /** The worker id from JoinResponse: the coordinator serves joined workers only. */
  workerId: string;
  /** JobSpec.dataset.fingerprint. */
  fingerprint: string;
  /** JobSpec.dataset.cache_bytes: the file's size, SHA-256 trailer included. */
  totalBytes: number;
  /** Where the complete file goes; `${destination}.partial` holds it meanwhile. */
  destination: string;
  /**
   * Requests in a row that receive nothing before the stream breaks, after which it gives up.
   * Any progress starts the count again. Default 5.
   */
  maxAttempts?: number;
  /** Stops the transfer with a `CANCELLED` error; the partial file is kept for a later resume. */
  signal?: AbortSignal;
  logger: Logger;
  /** Called after each chunk is written, with the bytes the file has so far. */
  onProgress?: (received: number, total: number) => void;
}

/** What {@link fetchDatasetFile} fetched. */
export interface FetchedDatasetFile {
  /** `destination`: the complete, checked file. */
  path: string;
  /** Its size. */
  bytes: number;
  /** The offsets of the requests that did not start at 0, in order: where it resumed. */
  resumedFrom: number[];
}

/** The SHA-256 at the end of an image-folder cache file. */
const TRAILER_BYTES = 32;
const DEFAULT_MAX_ATTEMPTS = 5;

/**
 * Fetches the job's dataset file from the coordinator into `destination` (its folder is
 * created). Appends to `${destination}.partial`, resuming from the size of one an earlier run
 * left. Every chunk must start where the file ends, stay within `totalBytes` and match its
 * CRC-32; when the file is complete its SHA-256 trailer is checked, and it is fsynced and renamed
 * into place. A broken stream is asked again from where it stopped, with backoff, up to
 * `maxAttempts` requests in a row without progress.
 *
 * Rejects with a ShardlineError: `DATA_CORRUPT` for a bad chunk or trailer (the partial file is
 * deleted: it cannot be trusted), `CANCELLED` when `signal` aborts (the partial file is kept),
 * `CONNECTION_LOST` when the coordinator stays unreachable, and the coordinator's own refusal
 * otherwise (`NOT_FOUND`: join first; `MISMATCH`: another fingerprint or nothing to send).
 *
 * @example
 * ```ts
 * const dataset = job.dataset!;
 * const { path } = await fetchDatasetFile(client, {
 *   workerId: joined.workerId,
 *   fingerprint: dataset.fingerprint,
 *   totalBytes: Number(dataset.cacheBytes),
 *   destination: join(cacheDir, `${dataset.fingerprint}.slimg`),
 *   signal,
 *   logger,
 * });
 * ```
 */
export async function fetchDatasetFile(
  client: CoordinatorServiceClient,
  options: FetchDatasetFileOptions,
): Promise<FetchedDatasetFile> {
  checkOptions(options);
  const { destination, totalBytes, logger, signal } = options;
  const partial = `${destination}.partial`;
  if (signal?.aborted) throw cancelledError(partial, 0, totalBytes, signal.reason);
  await mkdir(dirname(partial), { recursive: true });
  const handle = await openPartial(partial, totalBytes, logger);
  const transfer: Transfer = {
    options,
    partial,
    handle,
    received: 0,
    resumedFrom: [],
    startedAt: performance.now(),
    startBytes: 0,
    loggedDecile: 0,
    untrusted: false,
  };
  try {
    transfer.received = transfer.startBytes = (await handle.stat()).size;
    transfer.loggedDecile = Math.floor((transfer.received * 10) / totalBytes);
    // A resume is news; a fresh start the caller has already announced.
    const fields = { destination, from: transfer.received, total: totalBytes };
    if (transfer.received > 0) logger.info('resuming dataset fetch', fields);
    else logger.debug('fetching dataset', fields);
    await receiveAll(client, transfer);
    await handle.sync();
  } catch (error) {
    throw signal?.aborted && !transfer.untrusted
      ? cancelledError(partial, transfer.received, totalBytes, error)
      : toShardlineError(error);
  } finally {
    await handle.close();
    if (transfer.untrusted) await rm(partial, { force: true });
  }
  await checkTrailer(partial, totalBytes);
  // Readers of `destination` see no file or the whole checked one, never a partial one.
  await rename(partial, destination);
  await syncDir(dirname(destination));
  const seconds = (performance.now() - transfer.startedAt) / 1000;
  logger.info('fetched dataset', {
    destination,
    bytes: totalBytes,
    received: totalBytes - transfer.startBytes,
    seconds: Number(seconds.toFixed(2)),
    bytes_per_second: Math.round((totalBytes - transfer.startBytes) / Math.max(seconds, 1e-3)),
    resumed: transfer.resumedFrom.length,
  });
  return { path: destination, bytes: totalBytes, resumedFrom: transfer.resumedFrom };
}

/** One fetch in progress. */
interface Transfer {
  readonly options: FetchDatasetFileOptions;
  readonly partial: string;
  /** The partial file, opened for appending. */
  readonly handle: FileHandle;
  /** The partial file's size: every byte in it checked, and where the next request starts. */
  received: number;
  readonly resumedFrom: number[];
  readonly startedAt: number;
  /** What the partial file held when this call started, for the rate in the logs. */
  startBytes: number;
  /** The last tenth of the file logged, so progress is logged at most ten times. */
  loggedDecile: number;
  /** Set when a bad chunk arrived: the partial file is deleted. */
  untrusted: boolean;
}

function checkOptions(options: FetchDatasetFileOptions): void {
  const { totalBytes, maxAttempts } = options;
  if (!Number.isSafeInteger(totalBytes) || totalBytes < TRAILER_BYTES) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `totalBytes must be a whole number of at least ${TRAILER_BYTES} (the file's SHA-256 trailer), got ${totalBytes}. ` +
        'Pass JobSpec.dataset.cache_bytes; 0 there means the coordinator has no dataset file to send.',
    );
  }
  if (maxAttempts !== undefined && (!Number.isSafeInteger(maxAttempts) || maxAttempts < 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `maxAttempts must be a whole number of at least 1, got ${maxAttempts}.`,
    );
  }
}

/**
 * Opens the partial file for appending, creating it. One larger than the dataset is not a
 * prefix of it (a file of another job, or of another format) and is emptied first.
 */
async function openPartial(partial: string, totalBytes: number, logger: Logger) {
  const handle = await open(partial, 'a');
  try {
    const { size } = await handle.stat();
    if (size > totalBytes) {
      logger.warn('discarding a partial dataset file larger than the dataset', {
        partial,
        size,
        total: totalBytes,
      });
      await handle.truncate(0);
    }
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * Requests until the file is complete. Each run of retryWithBackoff counts only requests that
 * make no progress: a request that received something and then broke returns, and the next is
 * made at once with a fresh count, so a long transfer over a flaky link is not given up on
 * for breaks it recovered from.
 */
async function receiveAll(client: CoordinatorServiceClient, t: Transfer): Promise<void> {
  const { totalBytes, logger, signal } = t.options;
  const maxAttempts = t.options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  while (t.received < totalBytes) {
    let attempts = 0;
    try {
      await retryWithBackoff(
        async (n) => {
          attempts = n;
          const before = t.received;
          try {
            await receiveStream(client, t);
          } catch (error) {
            if (!isBreak(error) || t.received === before) throw error;
            logger.warn('dataset stream broke; resuming', {
              at: t.received,
              total: totalBytes,
              reason: (error as Error).message,
            });
            return;
          }
          if (t.received === before && t.received < totalBytes) {
            throw new ShardlineError(
              'CONNECTION_LOST',
              `The coordinator ended the dataset stream at byte ${formatCount(t.received)} of ${formatCount(totalBytes)} without sending anything.`,
            );
          }
        },
        {
          // maxAttempts bounds the retries; a deadline would also cut off slow, healthy streams.
          deadlineMs: Number.POSITIVE_INFINITY,
          retryable: (error) => isBreak(error) && attempts < maxAttempts,
          onRetry: (error, attempt, delayMs) =>
            logger.warn('dataset fetch failed; retrying', {
              attempt,
              delayMs,
              at: t.received,
              reason: (error as Error).message,
            }),
          ...(signal ? { signal } : {}),
        },
      );
    } catch (error) {
      if (!isBreak(error) || signal?.aborted) throw error;
      const e = error as ShardlineError;
      throw new ShardlineError(
        e.code,
        `Fetching the dataset failed ${attempts} times in a row without receiving anything (last: ${e.message}). ` +
          `${formatCount(t.received)} of ${formatCount(totalBytes)} bytes are kept in ${t.partial}: fetch again to resume from there.`,
        { cause: error },
      );
    }
  }
}

/** A broken stream or an unreachable coordinator: asking again may work. */
function isBreak(error: unknown): boolean {
  return hasErrorCode(error, 'CONNECTION_LOST') || hasErrorCode(error, 'NETWORK');
}

/** One FetchDataset call from the current size; resolves when the server ends it with OK. */
async function receiveStream(client: CoordinatorServiceClient, t: Transfer): Promise<void> {
  const { workerId, fingerprint, signal } = t.options;
  if (signal?.aborted)
    throw new ShardlineError('CANCELLED', 'Cancelled.', { cause: signal.reason });
  if (t.received > 0) t.resumedFrom.push(t.received);
  const call = client.fetchDataset({ workerId, fingerprint, offset: BigInt(t.received) });
  // The status of a call cancelled below can arrive after the loop has let go of the stream;
  // without a listener left, that 'error' event would crash the process.
  call.on('error', () => {});
  const onAbort = () => call.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const message of call as AsyncIterable<FetchDatasetResponse>) {
      // Messages already received keep coming after cancel(): stop at the first of them.
      if (signal?.aborted) throw new ShardlineError('CANCELLED', 'Cancelled.');
      checkChunk(t, message);
      await appendAll(t.handle, message.data);
      t.received += message.data.length;
      reportProgress(t);
    }
  } catch (error) {
    if (isShardlineError(error)) throw error;
    if (isGrpcStatus(error)) {
      throw fromGrpcStatus(error, { stream: { cancelledHere: signal?.aborted === true } });
    }
    throw toShardlineError(error);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // Stops the server's side when the loop left early (a bad chunk, a failed write); a no-op
    // on a call that already ended.
    call.cancel();
  }
}

/** The three checks a chunk must pass before it is appended. */
function checkChunk(t: Transfer, message: FetchDatasetResponse): void {
  const { totalBytes } = t.options;
  const { data } = message;
  const bad = (expected: string, found: string) => {
    t.untrusted = true;
    return new ShardlineError(
      'DATA_CORRUPT',
      `The coordinator sent a damaged dataset chunk: expected ${expected}, found ${found}. ` +
        `The partial file ${t.partial} was deleted, since it cannot be trusted; fetch again to start over, and check the network path to the coordinator if it happens again.`,
      { details: { offset: t.received, total: totalBytes } },
    );
  };
  if (message.totalBytes !== BigInt(totalBytes)) {
    throw bad(
      `a file of ${formatCount(totalBytes)} bytes (JobSpec.dataset.cache_bytes)`,
      `total_bytes ${formatCount(message.totalBytes)}`,
    );
  }
  if (message.offset !== BigInt(t.received)) {
    throw bad(
      `the chunk at byte ${formatCount(t.received)}`,
      `one at byte ${formatCount(message.offset)}`,
    );
  }
  if (t.received + data.length > totalBytes) {
    throw bad(
      `at most ${formatCount(totalBytes - t.received)} more bytes`,
      `a chunk of ${formatCount(data.length)}`,
    );
  }
  const actual = crc32(data);
  if (actual !== message.crc32 >>> 0) {
    throw bad(
      `CRC-32 ${hex32(message.crc32)} for the ${formatCount(data.length)} bytes at ${formatCount(t.received)}`,
      `${hex32(actual)}`,
    );
  }
}

function hex32(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}

/** Writes all of `data` at the end of the file (a write may take less than it was given). */
async function appendAll(handle: FileHandle, data: Uint8Array): Promise<void> {
  for (let written = 0; written < data.length; ) {
    const { bytesWritten } = await handle.write(data, written, data.length - written);
    written += bytesWritten;
  }
}

/** The callback after every chunk; an info log at each further tenth of the file. */
function reportProgress(t: Transfer): void {
  const { totalBytes, logger, onProgress } = t.options;
  onProgress?.(t.received, totalBytes);
  const decile = Math.floor((t.received * 10) / totalBytes);
  // The last tenth is the "fetched dataset" record.
  if (decile <= t.loggedDecile || decile >= 10) return;
  t.loggedDecile = decile;
  const seconds = Math.max((performance.now() - t.startedAt) / 1000, 1e-3);
  logger.info('fetching dataset', {
    received: t.received,
    total: totalBytes,
    percent: decile * 10,
    bytes_per_second: Math.round((t.received - t.startBytes) / seconds),
  });
}

/**
 * Checks the complete file against its trailer (the last 32 bytes: the SHA-256 of the rest) and
 * deletes it on a mismatch: the chunks' CRCs catch damage on the wire, this catches a partial
 * file from another dataset or damage on disk.
 */
async function checkTrailer(partial: string, totalBytes: number): Promise<void> {
  const bodyBytes = totalBytes - TRAILER_BYTES;
  const hash = createHash('sha256');
  if (bodyBytes > 0) {
    for await (const chunk of createReadStream(partial, { start: 0, end: bodyBytes - 1 })) {
      hash.update(chunk as Buffer);
    }
  }
  const trailer = Buffer.alloc(TRAILER_BYTES);
  const handle = await open(partial, 'r');
  try {
    await handle.read(trailer, 0, TRAILER_BYTES, bodyBytes);
  } finally {
    await handle.close();
  }
  const digest = hash.digest();
  if (!digest.equals(trailer)) {
    await rm(partial, { force: true });
    throw new ShardlineError(
      'DATA_CORRUPT',
      `The fetched dataset file fails its checksum: expected the SHA-256 in its last ${TRAILER_BYTES} bytes, ${trailer.toString('hex')}, found ${digest.toString('hex')}. ` +
        `The partial file ${partial} was deleted; fetch again to start over. If it fails again, the coordinator's cache file is damaged: restart the coordinator so it decodes the image folder again.`,
    );
  }
}

function cancelledError(
  partial: string,
  received: number,
  totalBytes: number,
  cause: unknown,
): ShardlineError {
  return new ShardlineError(
    'CANCELLED',
    `Stopped fetching the dataset at ${formatCount(received)} of ${formatCount(totalBytes)} bytes: cancelled. ` +
      `${partial} is kept; fetching again resumes from it.`,
    { cause },
  );
}

/** True for the status a failed grpc-js call rejects with (its `code` is a number). */
function isGrpcStatus(error: unknown): error is ServiceError {
  return typeof (error as Partial<ServiceError> | undefined)?.code === 'number';
}
