/**
 * The one error type of Shardline. Every failure that crosses a module boundary is a
 * {@link ShardlineError} with a stable {@link ShardlineErrorCode}; callers branch on `code`,
 * never on message text or `instanceof` alone (two copies of this package in one process
 * would defeat `instanceof`).
 *
 * Messages follow one pattern: what was expected, what was found, what to do.
 *
 * @example
 * ```ts
 * throw new ShardlineError('DATA_CORRUPT',
 *   'train-images-idx3-ubyte.gz is truncated: expected 47,040,016 bytes after decompression, ' +
 *   'found 1,024. Delete it and run again to download a fresh copy.');
 * ```
 */

/** Stable, machine-readable error codes. Add new ones at the end; never rename. */
export const ShardlineErrorCodes = [
  /** A caller passed a value outside its contract (bad flag, bad shape, bad option). */
  'INVALID_ARGUMENT',
  /** A file, dataset or model that should exist does not. */
  'NOT_FOUND',
  /** Data exists but is damaged: wrong magic number, truncated, checksum mismatch. */
  'DATA_CORRUPT',
  /** Two things that must agree do not (layout fingerprints, shapes, versions). */
  'MISMATCH',
  /** A compute backend could not be loaded or initialised. */
  'BACKEND_UNAVAILABLE',
  /** A network fetch failed or is impossible (offline). */
  'NETWORK',
  /** A numeric problem: NaN or Inf where finite numbers are required. */
  'NUMERIC',
  /** The operation was cancelled (signal, user abort). */
  'CANCELLED',
  /** The operation took longer than allowed. */
  'TIMEOUT',
  /** Authentication failed or is missing. */
  'UNAUTHENTICATED',
  /** A bug: an invariant that should always hold did not. */
  'INTERNAL',
  /**
   * An established connection or stream to a peer broke: the peer exited, restarted or went
   * silent, or the network dropped. Unlike NETWORK (cannot reach at all), the other side was
   * there a moment ago, so reconnecting is the usual answer.
   */
  'CONNECTION_LOST',
] as const;

/** One of {@link ShardlineErrorCodes}. */
export type ShardlineErrorCode = (typeof ShardlineErrorCodes)[number];

/** Options accepted by the {@link ShardlineError} constructor. */
export interface ShardlineErrorOptions {
  /** The underlying error, kept for logs and debugging (standard `Error.cause`). */
  cause?: unknown;
  /** Structured context for logs (file names, shapes, versions); never secrets. */
  details?: Record<string, unknown>;
}

const BRAND = Symbol.for('shardline.error');

/** A Shardline error: a stable `code`, a human message, an optional `cause` and `details`. */
export class ShardlineError extends Error {
  /** The stable code to branch on. */
  readonly code: ShardlineErrorCode;
  /** Structured context for logs. */
  readonly details: Record<string, unknown>;
  /** Marks instances across package copies; see {@link isShardlineError}. */
  readonly [BRAND] = true;

  constructor(code: ShardlineErrorCode, message: string, options: ShardlineErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ShardlineError';
    this.code = code;
    this.details = options.details ?? {};
  }

  /** A plain object for structured logs and JSON output. */
  toJSON(): {
    name: string;
    code: ShardlineErrorCode;
    message: string;
    details: Record<string, unknown>;
  } {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

/** True when `value` is a {@link ShardlineError}, from this or any other copy of the package. */
export function isShardlineError(value: unknown): value is ShardlineError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[BRAND] === true
  );
}

/** True when `value` is a {@link ShardlineError} with the given code. */
export function hasErrorCode(value: unknown, code: ShardlineErrorCode): value is ShardlineError {
  return isShardlineError(value) && value.code === code;
}

/**
 * Turns anything thrown into a {@link ShardlineError}: Shardline errors pass through, Node
 * system errors map to a fitting code, everything else becomes `INTERNAL` with the original
 * kept as `cause`.
 */
export function toShardlineError(
  value: unknown,
  fallbackCode: ShardlineErrorCode = 'INTERNAL',
): ShardlineError {
  if (isShardlineError(value)) return value;
  if (value instanceof Error) {
    const sys = (value as NodeJS.ErrnoException).code;
    const code: ShardlineErrorCode =
      sys === 'ENOENT'
        ? 'NOT_FOUND'
        : sys === 'ABORT_ERR' || value.name === 'AbortError'
          ? 'CANCELLED'
          : sys === 'ENOTFOUND' ||
              sys === 'ECONNREFUSED' ||
              sys === 'ECONNRESET' ||
              sys === 'EAI_AGAIN'
            ? 'NETWORK'
            : fallbackCode;
    return new ShardlineError(code, value.message, { cause: value });
  }
  return new ShardlineError(
    fallbackCode,
    typeof value === 'string' ? value : `Non-error thrown: ${safeString(value)}`,
    {
      cause: value,
    },
  );
}

function safeString(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Formats a count with thousands separators, as error messages quote sizes ("47,040,016"). */
export function formatCount(n: number | bigint): string {
  return n.toLocaleString('en-US');
}
