/**
 * The `shardline-coordinator` command tree. `runCli` returns the exit status instead of calling
 * process.exit, so tests can run it in-process and the CLI lets pending writes flush.
 *
 * Commander parses only the command line here; environment variables, the config file and
 * defaults are merged by @shardline/core/settings from `train`'s settings table
 * (trainConfig.ts), so every source goes through one parser and one order of precedence, as in
 * `shardline-worker`.
 */
import { readFileSync } from 'node:fs';
import {
  createLogger,
  type Logger,
  type LogLevel,
  ShardlineError,
  toShardlineError,
} from '@shardline/core';
import {
  formatSettings,
  type ResolvedSettings,
  resolveSettings,
  sourceOf,
} from '@shardline/core/settings';
import {
  addSettingOptions,
  flagsGiven,
  settingOptionDescription,
} from '@shardline/core/settings/commander';
import { Command, CommanderError } from 'commander';
import {
  checkDashboard,
  type DashboardSettings,
  isExposed,
  reservedPorts,
} from './dashboard/address.js';
import { openRunDashboard } from './dashboard/runDashboard.js';
import { checkHealthListen } from './distributed/healthListen.js';
import type { ServerSecurityFlags } from './distributed/security.js';
import { type DistributedSettings, trainDistributed } from './distributed/trainDistributed.js';
import { trainInProcess } from './inProcess.js';
import { addEvaluateCommand, addPredictCommand } from './inspectCommands.js';
import { addReportCommand } from './report/command.js';
import { createJsonReporter, createTextReporter, type ReporterStreams } from './reporter.js';
import {
  checkInProcessExchange,
  type TRAIN_SETTINGS,
  TRAIN_SETTINGS_MODEL,
  type TrainConfig,
  toDashboardSettings,
  toDistributedSettings,
  toTrainConfig,
} from './trainConfig.js';

const version = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

/** Flags of `train` that are not part of the job's config. */
export interface TrainFlags {
  inProcess: boolean;
  /** Whether --out was set (by flag, variable or config file): --resume needs it. */
  outGiven: boolean;
  logLevel: LogLevel;
  distributed: DistributedSettings;
  /** Where the run's dashboard listens (`--dashboard`); absent when it is off. */
  dashboard?: DashboardSettings;
}

/** Where the CLI reads its environment; defaults to this process's. */
export interface CoordinatorCliContext {
  env?: NodeJS.ProcessEnv;
  /** The folder relative --config paths resolve against. */
  cwd?: string;
}

/** `train`'s resolved settings, with their sources. */
type ResolvedTrainSettings = ResolvedSettings<typeof TRAIN_SETTINGS>;

const TRAIN_DESCRIPTION =
  'Run a whole training job. With no flags: the seed CNN on Fashion-MNIST for 30 epochs.\n' +
  'Global batch semantics: --batch-size is the number of images behind each optimizer step, summed over all workers.\n\n' +
  'Each setting comes from, in order of precedence: its flag, its environment variable ' +
  '(SHARDLINE_ + the flag in upper snake case; switches take 1/true/yes/on or 0/false/no/off), ' +
  'the JSON config file (--config; keys in camelCase), or its default.';

/**
 * Builds the command tree; `onTrain` receives the validated config of `train`, its settings
 * read from `context`'s environment and the command line.
 */
export function buildProgram(
  streams: ReporterStreams,
  onTrain: (config: TrainConfig, flags: TrainFlags) => Promise<void>,
  context: CoordinatorCliContext = {},
): Command {
  const program = new Command('shardline-coordinator')
    .description('Train image classifiers data-parallel with TensorFlow.js.')
    .version(version)
    .configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
    })
    .exitOverride();
  addTrainCommand(program, streams, context, onTrain);
  addEvaluateCommand(program, streams, context);
  addPredictCommand(program, streams, context);
  addReportCommand(program, streams);
  return program;
}

/** `train`: declares its settings, resolves them, and runs or prints them. */
function addTrainCommand(
  program: Command,
  streams: ReporterStreams,
  context: CoordinatorCliContext,
  onTrain: (config: TrainConfig, flags: TrainFlags) => Promise<void>,
): void {
  const train = program
    .command('train')
    .description(TRAIN_DESCRIPTION)
    .configureHelp({ optionDescription: settingOptionDescription });
  addSettingOptions(train, TRAIN_SETTINGS_MODEL, { commanderChoices: true });
  train.option('--print-config', 'print each setting, its value and where it came from, then exit');
  train.action(async (_options: unknown, command: Command) => {
    const resolved = resolveTrainSettings(command, context);
    const config = toTrainConfig(resolved.settings);
    const flags = toTrainFlags(resolved);
    if (command.getOptionValue('printConfig') === true) {
      streams.stdout.write(formatSettings(TRAIN_SETTINGS_MODEL, resolved));
      // A configuration that could not start a job is not a success, even when printed.
      checkTrainSettings(config, flags);
      return;
    }
    checkTrainSettings(config, flags);
    await onTrain(config, flags);
  });
}

/** Merges `train`'s flags, environment variables, config file and defaults. */
function resolveTrainSettings(
  command: Command,
  context: CoordinatorCliContext,
): ResolvedTrainSettings {
  const given = flagsGiven(command, TRAIN_SETTINGS_MODEL);
  return resolveSettings(TRAIN_SETTINGS_MODEL, {
    flags: given.flags,
    ...(given.config === undefined ? {} : { configFlag: given.config }),
    env: context.env ?? process.env,
    cwd: context.cwd ?? process.cwd(),
  });
}

/** The settings of `train` that are not part of the job's config. */
function toTrainFlags(resolved: ResolvedTrainSettings): TrainFlags {
  const s = resolved.settings;
  const dashboard = toDashboardSettings(s, sourceOf(resolved, 'dashboard').kind === 'default');
  return {
    inProcess: s.inProcess,
    outGiven: sourceOf(resolved, 'out').kind !== 'default',
    logLevel: s.logLevel,
    distributed: toDistributedSettings(s),
    ...(dashboard ? { dashboard } : {}),
  };
}

/**
 * Refuses settings that cannot work together, before anything is created: a --health-listen
 * or a --dashboard that cannot work, --resume without --out, --exchange ring with --in-process.
 */
function checkTrainSettings(config: TrainConfig, flags: TrainFlags): void {
  checkInProcessExchange(config.exchange, flags.inProcess);
  checkHealthListen({
    healthListen: flags.distributed.healthListen,
    listen: flags.distributed.listen,
    inProcess: flags.inProcess,
  });
  checkDashboard(flags.dashboard, jobPorts(flags));
  if (config.resume && !flags.outGiven) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      '--resume needs --out <dir>: the folder of the run to continue.',
    );
  }
}

/**
 * Runs the CLI with `argv` (as process.argv) and returns the exit status: 0 only when the job
 * finished; otherwise a one-line reason is written to stderr.
 */
export async function runCli(
  argv: string[],
  streams: ReporterStreams,
  context: CoordinatorCliContext = {},
): Promise<number> {
  const program = buildProgram(
    streams,
    (config, flags) => runTrain(config, flags, streams),
    context,
  );
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander already printed its message (or the help text) to stderr/stdout.
      return error.exitCode;
    }
    const e = toShardlineError(error);
    streams.stderr.write(`shardline-coordinator: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
    return e.code === 'CANCELLED' ? 130 : 1;
  }
}

/** Trains one job in this process or distributed, stopping cleanly on SIGINT / SIGTERM. */
async function runTrain(
  config: TrainConfig,
  flags: TrainFlags,
  streams: ReporterStreams,
): Promise<void> {
  const printer =
    config.logFormat === 'json' ? createJsonReporter(streams) : createTextReporter(streams);
  // Everything else printed during the run goes through the reporter's streams, which keep log
  // lines out of its progress bar.
  const output = printer.output ?? streams;
  const logger = createLogger({
    level: flags.logLevel,
    format: config.logFormat,
    sink: output.stderr,
  });
  // First, so that its URL is the run's first log line, and the page is up while data loads.
  const dashboard = await openRunDashboard(flags.dashboard, {
    logger,
    reservedPorts: reservedPorts(jobPorts(flags)),
  });
  const reporter = dashboard.observe(printer);
  if (flags.inProcess && flags.distributed.security) {
    warnIgnoredSecurity(flags.distributed.security, logger, flags.dashboard);
  }
  const stop = listenForStop(logger, output);
  try {
    const result = flags.inProcess
      ? await trainInProcess(config, reporter, logger, stop.control, {}, dashboard)
      : await trainDistributed(
          config,
          flags.distributed,
          reporter,
          logger,
          output,
          stop.control,
          {},
          dashboard,
        );
    reporter.close?.();
    if (!result.completed) {
      streams.stderr.write(
        `shardline-coordinator: stopped before the end; a checkpoint is in ${config.out}. Continue with the same flags plus --out ${config.out} --resume.\n`,
      );
    }
  } catch (error) {
    dashboard.failed(error);
    throw error;
  } finally {
    // A failed run's reason follows on stderr: not onto the end of a half-drawn bar.
    reporter.close?.();
    stop.dispose();
    // After the run's last event: the page gets the final state before the server goes.
    await dashboard.close();
  }
}

/** The ports a run binds besides the dashboard's: --listen and --health-listen (distributed). */
function jobPorts(flags: TrainFlags): { listen?: string; healthListen?: string } {
  if (flags.inProcess) return {};
  return {
    listen: flags.distributed.listen,
    ...(flags.distributed.healthListen === undefined
      ? {}
      : { healthListen: flags.distributed.healthListen }),
  };
}

/**
 * First SIGINT/SIGTERM: finish the current step, checkpoint, stop the workers, exit 0. A second
 * one: exit at once.
 */
function listenForStop(
  logger: Logger,
  streams: ReporterStreams,
): {
  control: { shouldStop: () => boolean; stopSignal: AbortSignal };
  dispose(): void;
} {
  let stopRequested = false;
  const stopping = new AbortController();
  const onSignal = (name: string) => {
    if (stopRequested) {
      streams.stderr.write(`shardline-coordinator: second ${name}, exiting at once.\n`);
      process.exit(130);
    }
    stopRequested = true;
    stopping.abort();
    logger.warn(
      `${name} received: stopping after the current step (send it again to exit at once)`,
    );
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    control: { shouldStop: () => stopRequested, stopSignal: stopping.signal },
    dispose() {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    },
  };
}

/**
 * With --in-process no gRPC port listens, so channel security has nothing to protect: say so
 * rather than let someone believe a token or TLS is in force. A warning, not an error, because
 * the token may come from a SHARDLINE_TOKEN meant for other runs. The token still guards a
 * dashboard beyond loopback.
 */
function warnIgnoredSecurity(
  security: ServerSecurityFlags,
  logger: Logger,
  dashboard: DashboardSettings | undefined,
): void {
  const tokenUsed = dashboard !== undefined && isExposed(dashboard.address);
  const ignored = [
    security.token === undefined || tokenUsed ? undefined : '--token/--token-file',
    security.tlsCert === undefined ? undefined : '--tls-cert',
    security.tlsKey === undefined ? undefined : '--tls-key',
    security.tlsCa === undefined ? undefined : '--tls-ca',
    security.insecure ? '--insecure' : undefined,
  ].filter((flag) => flag !== undefined);
  if (ignored.length > 0) {
    logger.warn(
      `${ignored.join(', ')} ignored: --in-process trains in this process and serves no gRPC port, so there is no channel to secure`,
    );
  }
}
