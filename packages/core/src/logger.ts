/**
 * One structured logger for every Shardline process. Records are objects with a level, a
 * message and fields; they are written either as one JSON object per line (for machines) or as
 * readable text (for people). Logs go to stderr by default so that stdout stays free for
 * machine-readable events (`--log-format json`).
 *
 * @example
 * ```ts
 * const log = createLogger({ level: 'debug', format: 'text' }).child({ component: 'backend' });
 * log.info('backend chosen', { backend: 'wasm' });
 * ```
 */
import { ShardlineError } from './errors.js';

/** Log levels, least to most severe. */
export const LogLevels = ['debug', 'info', 'warn', 'error', 'silent'] as const;
/** One of {@link LogLevels}; `silent` logs nothing. */
export type LogLevel = (typeof LogLevels)[number];
/** `json`: one object per line; `text`: `LEVEL message key=value ...`. */
export type LogFormat = 'json' | 'text';

/** Fields attached to a log record. Errors are serialised with their code and cause. */
export type LogFields = Record<string, unknown>;

/** Where formatted lines go. */
export interface LogSink {
  write(line: string): void;
}

/** A structured logger. */
export interface Logger {
  readonly level: LogLevel;
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every record. */
  child(fields: LogFields): Logger;
  /** Whether a record at `level` would be written (skip building expensive fields when not). */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean;
}

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** Minimum level written. Default: `SHARDLINE_LOG_LEVEL`, else `info`. */
  level?: LogLevel;
  /** Default: `SHARDLINE_LOG_FORMAT`, else `text`. */
  format?: LogFormat;
  /** Default: process.stderr. */
  sink?: LogSink;
  /** Fields on every record. */
  fields?: LogFields;
  /** Clock, for tests. */
  now?: () => Date;
}

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/** Parses a level name, throwing an `INVALID_ARGUMENT` error that lists the valid ones. */
export function parseLogLevel(value: string): LogLevel {
  const level = value.toLowerCase();
  if ((LogLevels as readonly string[]).includes(level)) return level as LogLevel;
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `Unknown log level "${value}": expected one of ${LogLevels.join(', ')}.`,
  );
}

function serialise(value: unknown, depth = 0): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.cause !== undefined && depth < 3) out.cause = serialise(value.cause, depth + 1);
    return out;
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

function formatText(record: Record<string, unknown>): string {
  const { time, level, msg, ...rest } = record;
  const parts = [`${String(time)} ${String(level).toUpperCase().padEnd(5)} ${String(msg)}`];
  for (const [key, value] of Object.entries(rest)) {
    const v = serialise(value);
    parts.push(
      `${key}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`,
    );
  }
  return parts.join(' ');
}

/** Creates a {@link Logger}. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? parseLogLevel(process.env.SHARDLINE_LOG_LEVEL ?? 'info');
  const formatEnv = process.env.SHARDLINE_LOG_FORMAT;
  const format: LogFormat = options.format ?? (formatEnv === 'json' ? 'json' : 'text');
  const sink: LogSink = options.sink ?? process.stderr;
  const now = options.now ?? (() => new Date());
  const base = options.fields ?? {};

  const make = (fields: LogFields): Logger => {
    const emit = (at: Exclude<LogLevel, 'silent'>, msg: string, extra?: LogFields) => {
      if (rank[at] < rank[level]) return;
      const record: Record<string, unknown> = {
        time: now().toISOString(),
        level: at,
        msg,
        ...fields,
      };
      if (extra) for (const [k, v] of Object.entries(extra)) record[k] = serialise(v);
      sink.write(
        `${format === 'json' ? JSON.stringify(record, (_k, v) => serialise(v)) : formatText(record)}\n`,
      );
    };
    return {
      level,
      debug: (m, f) => emit('debug', m, f),
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      child: (more) => make({ ...fields, ...more }),
      enabled: (at) => rank[at] >= rank[level],
    };
  };
  return make(base);
}

/** A logger that drops everything: the default for library calls that take an optional logger. */
export const silentLogger: Logger = createLogger({ level: 'silent', sink: { write() {} } });

const TEXT_RECORD = /^\S+ (DEBUG|INFO|WARN|ERROR) /;

/**
 * The level of one line a Shardline logger wrote, in either format, or `undefined` when the line
 * is not a log record (a stack trace, a Node.js warning, a CLI's last words). Lets a process that
 * reads another's stderr (the coordinator reading its local workers) keep routine records apart
 * from warnings without knowing which format that process was started with.
 *
 * @example
 * ```ts
 * logLevelOfLine('2026-01-01T00:00:00.000Z WARN  slow step'); // 'warn'
 * logLevelOfLine('{"time":"...","level":"info","msg":"joined"}'); // 'info'
 * logLevelOfLine('Error: boom'); // undefined
 * ```
 */
export function logLevelOfLine(line: string): Exclude<LogLevel, 'silent'> | undefined {
  if (line.startsWith('{')) {
    let level: unknown;
    try {
      level = (JSON.parse(line) as { level?: unknown }).level;
    } catch {
      return undefined;
    }
    return typeof level === 'string' && level !== 'silent' && Object.hasOwn(rank, level)
      ? (level as Exclude<LogLevel, 'silent'>)
      : undefined;
  }
  const match = TEXT_RECORD.exec(line);
  return match ? (match[1]!.toLowerCase() as Exclude<LogLevel, 'silent'>) : undefined;
}
