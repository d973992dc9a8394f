/**
 * The `shardline-worker` command. `runWorkerCli` returns the exit status instead of calling
 * process.exit, so tests can run it and pending writes flush.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import {
  BackendNames,
  createLogger,
  type LogLevel,
  LogLevels,
  parseBackendPreference,
  toShardlineError,
} from '@shardline/core';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  createWorkerSecurityOptions,
  explainSecurityFailure,
  readWorkerSecurityFlags,
  resolveWorkerChannel,
} from './security.js';
import { runWorker } from './session.js';

const version = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

/** Where the CLI writes. */
export interface WorkerStreams {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
}

function address(value: string): string {
  if (!/^[^\s:]+:\d{1,5}$/.test(value) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(value)) {
    throw new InvalidArgumentError(
      'Expected host:port, such as 127.0.0.1:7070 or coordinator.example:7070.',
    );
  }
  return value;
}

function seconds(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0)
    throw new InvalidArgumentError('Expected a number of seconds greater than 0.');
  return n;
}

/** Runs the worker CLI with `argv` (as process.argv) and returns the exit status. */
export async function runWorkerCli(argv: string[], streams: WorkerStreams): Promise<number> {
  const program = new Command('shardline-worker')
    .description('Join a Shardline coordinator and compute gradients on this machine.')
    .version(version)
    .configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
    })
    .exitOverride()
    .addOption(
      new Option('--coordinator <host:port>', 'the coordinator to join')
        .env('SHARDLINE_COORDINATOR')
        .argParser(address)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--name <name>', 'how this worker appears in logs').default(
        `${hostname()}-${process.pid}`,
      ),
    )
    .addOption(
      new Option('--backend <name>', 'compute backend')
        .choices(['auto', ...BackendNames])
        .env('SHARDLINE_BACKEND')
        .default('auto'),
    )
    .addOption(
      new Option('--data-dir <dir>', 'folder holding the dataset files').env('SHARDLINE_DATA_DIR'),
    )
    .option('--no-download', 'never download the dataset; fail when no local copy exists')
    .option(
      '--connect-timeout <seconds>',
      'how long to keep trying to reach the coordinator',
      seconds,
      60,
    )
    .addOption(
      new Option('--log-format <format>', 'log format on stderr')
        .choices(['text', 'json'])
        .default('text'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices([...LogLevels])
        .env('SHARDLINE_LOG_LEVEL')
        .default('info'),
    );
  // Channel security: token, TLS, mutual TLS (security.ts).
  for (const option of createWorkerSecurityOptions()) program.addOption(option);
  program.action(async (opts: Record<string, unknown>) => {
    const logger = createLogger({
      level: opts.logLevel as LogLevel,
      format: opts.logFormat as 'json' | 'text',
      sink: streams.stderr,
      fields: { name: opts.name },
    });
    // Before the backend loads or data is read: bad PEM files or a bad token stop here.
    const coordinator = opts.coordinator as string;
    const channel = resolveWorkerChannel(readWorkerSecurityFlags(opts), coordinator, logger);
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const outcome = await runWorker({
        coordinator,
        name: opts.name as string,
        backend: parseBackendPreference(opts.backend as string),
        ...(opts.dataDir === undefined ? {} : { dataDir: opts.dataDir as string }),
        download: opts.download as boolean,
        connectTimeoutMs: (opts.connectTimeout as number) * 1000,
        channel,
        logger,
        signal: abort.signal,
      }).catch((error: unknown) => {
        throw explainSecurityFailure(error, channel, coordinator);
      });
      if (outcome.reason === 'job-failed' || outcome.reason === 'evicted') {
        throw toShardlineError(
          new Error(`The coordinator stopped this worker (${outcome.reason}): ${outcome.message}`),
        );
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    const e = toShardlineError(error);
    streams.stderr.write(`shardline-worker: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
    return e.code === 'CANCELLED' ? 130 : 1;
  }
}
