/**
 * Download progress for people: a redrawn bar when stderr is a terminal, a plain log line every
 * 10% (or every 10 seconds) otherwise, so logs and CI output never fill with carriage returns.
 * Nothing is ever written to stdout, which belongs to machine-readable events.
 */
import { formatCount } from '@shardline/core/errors';
import { type Logger, silentLogger } from '@shardline/core/logger';

/** One progress report of a download. */
export interface DownloadProgress {
  /** File name being downloaded. */
  readonly file: string;
  readonly url: string;
  /** Bytes received so far. */
  readonly receivedBytes: number;
  /** Expected bytes (Content-Length, else the descriptor's size), when known. */
  readonly totalBytes: number | undefined;
  /** True on the last report of a successful download. */
  readonly done: boolean;
  /**
   * What the bytes are: `download` (the default) or `decode` (an image folder's files being
   * decoded, counted by their size on disk), for the wording of progress lines.
   */
  readonly activity?: 'download' | 'decode';
}

/** Receives {@link DownloadProgress} reports. */
export type ProgressCallback = (progress: DownloadProgress) => void;

/**
 * `auto`: a bar when the stream is a TTY, log lines otherwise. `bar`, `lines`: force one.
 * `none`: report nothing.
 */
export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

/** Where a progress bar is drawn; process.stderr by default. */
export interface ProgressStream {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(text: string): unknown;
}

/** Options for {@link createProgressReporter}. */
export interface ProgressReporterOptions {
  /** Default `auto`. */
  mode?: ProgressMode;
  /** Where the bar goes. Default process.stderr. */
  stream?: ProgressStream;
  /** Where log lines go. Default: nowhere. */
  logger?: Logger;
  /** Milliseconds clock, for tests. */
  now?: () => number;
}

const BAR_INTERVAL_MS = 100;
const LINE_INTERVAL_MS = 10_000;

/**
 * A {@link ProgressCallback} that shows downloads to a person: see the module comment.
 *
 * @example
 * ```ts
 * await loadDataset('fashion-mnist', { onProgress: createProgressReporter({ logger }) });
 * ```
 */
export function createProgressReporter(options: ProgressReporterOptions = {}): ProgressCallback {
  const stream = options.stream ?? process.stderr;
  const mode = options.mode ?? 'auto';
  const resolved = mode === 'auto' ? (stream.isTTY ? 'bar' : 'lines') : mode;
  if (resolved === 'none') return () => {};
  return resolved === 'bar'
    ? barReporter(stream, options.now ?? Date.now)
    : lineReporter(options.logger ?? silentLogger, options.now ?? Date.now);
}

function barReporter(stream: ProgressStream, now: () => number): ProgressCallback {
  let last = Number.NEGATIVE_INFINITY;
  let started = now();
  let current = '';
  return (p) => {
    if (p.file !== current) {
      current = p.file;
      started = now();
      last = Number.NEGATIVE_INFINITY;
    }
    const t = now();
    if (!p.done && t - last < BAR_INTERVAL_MS) return;
    last = t;
    const width = Math.max(10, Math.min(30, (stream.columns ?? 80) - 60));
    const fraction = p.totalBytes ? Math.min(1, p.receivedBytes / p.totalBytes) : undefined;
    const filled = fraction === undefined ? 0 : Math.round(fraction * width);
    const bar =
      fraction === undefined ? '?'.repeat(width) : '#'.repeat(filled) + '.'.repeat(width - filled);
    const seconds = Math.max(0.001, (t - started) / 1000);
    const rate = `${megabytes(p.receivedBytes / seconds)} MB/s`;
    const amount = `${megabytes(p.receivedBytes)}${p.totalBytes ? `/${megabytes(p.totalBytes)}` : ''} MB`;
    const percent =
      fraction === undefined ? '' : `${String(Math.floor(fraction * 100)).padStart(3)}% `;
    // \r redraws in place; \x1b[K clears what a longer previous line left behind.
    stream.write(`\r${p.file} [${bar}] ${percent}${amount} ${rate}\x1b[K${p.done ? '\n' : ''}`);
  };
}

function lineReporter(logger: Logger, now: () => number): ProgressCallback {
  let lastTime = Number.NEGATIVE_INFINITY;
  let lastDecile = -1;
  let current = '';
  return (p) => {
    if (p.file !== current) {
      current = p.file;
      lastTime = Number.NEGATIVE_INFINITY;
      lastDecile = -1;
    }
    const t = now();
    const decile = p.totalBytes ? Math.floor((10 * p.receivedBytes) / p.totalBytes) : -1;
    if (!p.done && decile <= lastDecile && t - lastTime < LINE_INTERVAL_MS) return;
    lastTime = t;
    lastDecile = Math.max(lastDecile, decile);
    const decoding = p.activity === 'decode';
    const fields: Record<string, unknown> = decoding
      ? { folder: p.url, bytes_read: p.receivedBytes }
      : { file: p.file, url: p.url, received_bytes: p.receivedBytes };
    if (p.totalBytes !== undefined) {
      fields.total_bytes = p.totalBytes;
      fields.percent = Math.min(100, Math.floor((100 * p.receivedBytes) / p.totalBytes));
    }
    const verb = decoding ? ['decoding', 'decoded'] : ['downloading', 'downloaded'];
    logger.info(
      p.done
        ? `${verb[1]} ${p.file} (${formatCount(p.receivedBytes)} bytes)`
        : `${verb[0]} ${p.file}`,
      fields,
    );
  };
}

function megabytes(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

/** The progress options a loader takes: a callback, or the default reporter's mode and stream. */
export interface ProgressOptions {
  /** Receives progress (bytes downloaded or decoded so far); replaces the default reporter. */
  onProgress?: ProgressCallback;
  /** The default reporter's mode when `onProgress` is absent. Default `auto`. */
  progress?: ProgressMode;
  /** Where the default reporter draws its bar. Default process.stderr. */
  progressStream?: ProgressStream;
}

/** `options.onProgress`, or the default reporter built from `options.progress` and `progressStream`. */
export function progressCallback(options: ProgressOptions, logger: Logger): ProgressCallback {
  return (
    options.onProgress ??
    createProgressReporter({
      logger,
      mode: options.progress ?? 'auto',
      ...(options.progressStream ? { stream: options.progressStream } : {}),
    })
  );
}
