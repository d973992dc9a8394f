/**
 * The `shardline-worker` command. `runWorkerCli` returns the exit status instead of calling
 * process.exit, so tests can run it and pending writes flush.
 *
 * Commander parses only the command line here; environment variables, the config file and
 * defaults are merged by config.ts, so every source goes through one parser and one order of
 * precedence (commander's own `.env()` would read process.env directly, turn any value of a
 * switch's variable, even "false", into "on", and leave no room for a config file).
 */
import { readFileSync } from 'node:fs';
import { createLogger, toShardlineError } from '@shardline/core';
import { type FlagValues, settingsLogFields, sourceOf } from '@shardline/core/settings';
import {
  addSettingOptions,
  flagsGiven,
  settingOptionDescription,
} from '@shardline/core/settings/commander';
import { isLoopbackHost, splitHostPort } from '@shardline/protocol';
import { EXIT_COORDINATOR_STOPPED } from '@shardline/training';
import { Command, CommanderError } from 'commander';
import {
  formatConfig,
  type ResolvedWorkerConfig,
  requireCoordinator,
  resolveWorkerConfig,
  type WORKER_SETTINGS,
  WORKER_SETTINGS_MODEL,
} from './config.js';
import { formatDoctorReport, runDoctor } from './doctor.js';
import {
  checkMetricsListen,
  type MetricsServer,
  serveWorkerMetrics,
} from './metrics/metricsServer.js';
import { createWorkerMetrics, type WorkerMetrics } from './metrics/workerMetrics.js';
import {
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

/** Where the CLI reads its environment; defaults to this process's. */
export interface WorkerCliContext {
  env?: NodeJS.ProcessEnv;
  /** The folder relative --config paths resolve against. */
  cwd?: string;
}

/** How long doctor waits for the coordinator when --connect-timeout is left at its default. */
export const DOCTOR_COORDINATOR_TIMEOUT_S = 5;

/** A built `shardline-worker` command and the exit status its actions leave. */
interface WorkerProgram {
  program: Command;
  result: { exitCode: number };
}

/**
 * The `shardline-worker` command (with its `doctor` subcommand), ready to parse. Exposed so
 * tests and tools can inspect its options; run it with {@link runWorkerCli}.
 */
export function createWorkerProgram(
  streams: WorkerStreams = { stdout: process.stdout, stderr: process.stderr },
  context: WorkerCliContext = {},
): Command {
  return buildProgram(streams, context).program;
}

function buildProgram(streams: WorkerStreams, context: WorkerCliContext): WorkerProgram {
  const result = { exitCode: 0 };
  const program = new Command('shardline-worker')
    .description(
      'Join a Shardline coordinator and compute gradients on this machine.\n\n' +
        'Each setting comes from, in order of precedence: its flag, its environment variable ' +
        '(SHARDLINE_ + the flag in upper snake case; switches take 1/true/yes/on or 0/false/no/off), ' +
        'the JSON config file (--config; keys in camelCase), or its default.',
    )
    .version(version)
    .configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
    })
    .exitOverride()
    // Options before a subcommand belong to the program, after it to the subcommand, so
    // `shardline-worker doctor --backend tensorflow-gpu` reaches doctor.
    .enablePositionalOptions()
    // Set before `doctor` is added: subcommands inherit it.
    .configureHelp({ optionDescription: settingOptionDescription });
  addSettingOptions(program, WORKER_SETTINGS_MODEL);
  program.option(
    '--print-config',
    'print each setting, its value and where it came from, then exit',
  );
  addDoctorCommand(program, streams, context, result);
  program.action(async (opts: { printConfig?: boolean }) => {
    const config = resolveGiven([program], context);
    if (opts.printConfig) {
      streams.stdout.write(formatConfig(config));
      // A configuration that could not start a worker is not a success, even when printed.
      requireCoordinator(config);
      return;
    }
    result.exitCode = await startWorker(config, streams);
  });
  return { program, result };
}

/**
 * Merges the settings given on `commands`' command lines (a later command's win: settings
 * given after `doctor` override those before it) with the environment and the config file.
 */
function resolveGiven(
  commands: readonly Command[],
  context: WorkerCliContext,
): ResolvedWorkerConfig {
  const flags: FlagValues<typeof WORKER_SETTINGS> = {};
  let configFlag: string | undefined;
  for (const command of commands) {
    const given = flagsGiven(command, WORKER_SETTINGS_MODEL);
    Object.assign(flags, given.flags);
    configFlag = given.config ?? configFlag;
  }
  return resolveWorkerConfig({
    flags,
    ...(configFlag !== undefined ? { configFlag } : {}),
    env: context.env ?? process.env,
    cwd: context.cwd ?? process.cwd(),
  });
}

/** `doctor`: the same settings as the program, and a report of what this machine can do. */
function addDoctorCommand(
  program: Command,
  streams: WorkerStreams,
  context: WorkerCliContext,
  result: { exitCode: number },
): void {
  const doctor = program
    .command('doctor')
    .description(
      'check this machine: the backend auto would use and why, the GPUs, the native TensorFlow ' +
        'libraries and the CUDA libraries they need, and (with a coordinator set) whether the ' +
        `coordinator's health service answers. Waits ${DOCTOR_COORDINATOR_TIMEOUT_S} s for it unless --connect-timeout is given. ` +
        'Exits 0 when this worker could train.',
    );
  addSettingOptions(doctor, WORKER_SETTINGS_MODEL);
  doctor.option('--json', 'print the report as one JSON object');
  doctor.action(async (opts: { json?: boolean }) => {
    // Settings given before `doctor` count too; those after it win.
    const config = resolveGiven([program, doctor], context);
    const report = await runDoctor({
      config,
      version,
      env: context.env ?? process.env,
      coordinatorTimeoutMs:
        (sourceOf(config, 'connectTimeout').kind === 'default'
          ? DOCTOR_COORDINATOR_TIMEOUT_S
          : config.settings.connectTimeout) * 1000,
    });
    streams.stdout.write(
      opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctorReport(report),
    );
    result.exitCode = report.ok ? 0 : 1;
  });
}

/** Runs a worker with `config` until its job ends; returns the exit status. */
async function startWorker(config: ResolvedWorkerConfig, streams: WorkerStreams): Promise<number> {
  const coordinator = requireCoordinator(config);
  const s = config.settings;
  checkMetricsListen(s.metricsListen, s.token);
  const logger = createLogger({
    level: s.logLevel,
    format: s.logFormat,
    sink: streams.stderr,
    fields: { name: s.name },
  });
  if (logger.enabled('debug')) {
    logger.debug('settings', settingsLogFields(WORKER_SETTINGS_MODEL, config));
  }
  // Before the backend loads or data is read: bad PEM files or a bad token stop here.
  const channel = resolveWorkerChannel(readWorkerSecurityFlags({ ...s }), coordinator, logger);
  // Up before the backend loads, so a scrape sees the worker connecting.
  let metrics: { worker: WorkerMetrics; server: MetricsServer } | undefined;
  if (s.metricsListen !== undefined) {
    const worker = createWorkerMetrics(s.name);
    const server = await serveWorkerMetrics({
      address: s.metricsListen,
      token: s.token,
      registry: worker.registry,
      logger,
    });
    logger.info('metrics listening', { url: server.url, address: server.address });
    if (s.token !== undefined && !isLoopbackHost(splitHostPort(s.metricsListen).host)) {
      logger.warn(
        `metrics on ${server.address} are plain HTTP: scrapers send the token in clear text. Scrape over a network you trust, or through a TLS-terminating proxy`,
      );
    }
    metrics = { worker, server };
  }
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const outcome = await runWorker({
      coordinator,
      name: s.name,
      backend: s.backend,
      ...(s.dataDir === undefined ? {} : { dataDir: s.dataDir }),
      download: !s.noDownload,
      fetchData: !s.noFetchData,
      plugins: s.plugin,
      connectTimeoutMs: s.connectTimeout * 1000,
      channel,
      peer:
        s.noPeer || s.peerListen === 'off'
          ? false
          : {
              listen: s.peerListen,
              ...(s.peerAdvertise === undefined ? {} : { advertise: s.peerAdvertise }),
            },
      logger,
      signal: abort.signal,
      ...(metrics ? { monitor: metrics.worker.monitor } : {}),
    }).catch((error: unknown) => {
      throw explainSecurityFailure(error, channel, coordinator);
    });
    if (outcome.reason === 'job-failed' || outcome.reason === 'evicted') {
      throw toShardlineError(
        new Error(`The coordinator stopped this worker (${outcome.reason}): ${outcome.message}`),
      );
    }
    if (outcome.reason === 'shutdown') {
      streams.stderr.write(
        `shardline-worker: the coordinator stopped before the job finished (${outcome.message}). Start this worker again to rejoin the run when it resumes.\n`,
      );
      return EXIT_COORDINATOR_STOPPED;
    }
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await metrics?.server.close();
  }
}

/** Runs the worker CLI with `argv` (as process.argv) and returns the exit status. */
export async function runWorkerCli(
  argv: string[],
  streams: WorkerStreams,
  context: WorkerCliContext = {},
): Promise<number> {
  const { program, result } = buildProgram(streams, context);
  try {
    await program.parseAsync(argv);
    return result.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    const e = toShardlineError(error);
    streams.stderr.write(`shardline-worker: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
    return e.code === 'CANCELLED' ? 130 : 1;
  }
}
