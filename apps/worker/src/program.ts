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
import {
  createLogger,
  type LogLevel,
  parseBackendPreference,
  toShardlineError,
} from '@shardline/core';
import { Command, CommanderError, Help, InvalidArgumentError, Option } from 'commander';
import {
  CONFIG_ENV,
  CONFIG_FLAG,
  configKeyFor,
  describeSource,
  displayValue,
  Expectation,
  envVariableFor,
  formatConfig,
  requireCoordinator,
  resolveWorkerConfig,
  type SettingKey,
  type SettingSpec,
  WORKER_SETTINGS,
} from './config.js';
import { formatDoctorReport, runDoctor } from './doctor.js';
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

// Help text for each setting's option: commander's own format, "(choices: ..., default: ...,
// env: NAME)", plus the config-file key, so `--help` documents all three ways to set it.
const specOfOption = new WeakMap<Option, SettingSpec | 'config'>();

function optionDescription(this: Help, option: Option): string {
  const spec = specOfOption.get(option);
  if (spec === undefined) return Help.prototype.optionDescription.call(this, option);
  if (spec === 'config') return `${option.description} (env: ${CONFIG_ENV})`;
  const extra: string[] = [];
  if (spec.choices) extra.push(`choices: ${spec.choices.map((c) => JSON.stringify(c)).join(', ')}`);
  if (spec.defaultValue && spec.type !== 'boolean') {
    extra.push(`default: ${spec.defaultDescription ?? JSON.stringify(spec.defaultValue())}`);
  }
  extra.push(`env: ${envVariableFor(spec.flag)}`);
  extra.push(`config: ${spec.key}`);
  return `${option.description} (${extra.join(', ')})`;
}

/** Adds every setting's flag (and --config) to `command`. */
function addSettingOptions(command: Command): void {
  for (const spec of WORKER_SETTINGS) {
    const option = new Option(
      spec.argument ? `${spec.flag} ${spec.argument}` : spec.flag,
      spec.description,
    );
    if (spec.argument) {
      option.argParser((value: string) => {
        try {
          return spec.parse(value);
        } catch (error) {
          if (error instanceof Expectation) {
            throw new InvalidArgumentError(
              `${error.message[0]!.toUpperCase()}${error.message.slice(1)}.`,
            );
          }
          throw error;
        }
      });
    }
    specOfOption.set(option, spec);
    command.addOption(option);
  }
  const config = new Option(
    `${CONFIG_FLAG} <file>`,
    'read settings from this JSON file; flags and environment variables override it',
  );
  specOfOption.set(config, 'config');
  command.addOption(config);
}

/**
 * The settings given on `command`'s command line (not commander's defaults): a switch given as
 * `--tls` is true, one given as `--no-download` makes `noDownload` true.
 */
function flagsGiven(command: Command): {
  flags: Partial<Record<SettingKey, string | number | boolean>>;
  config?: string;
} {
  const flags: Partial<Record<SettingKey, string | number | boolean>> = {};
  for (const spec of WORKER_SETTINGS) {
    const attribute = configKeyFor(spec.flag.replace(/^--no-/, '--'));
    if (command.getOptionValueSource(attribute) !== 'cli') continue;
    const value = command.getOptionValue(attribute) as string | number | boolean;
    flags[spec.key] = spec.argument ? value : true;
  }
  const config =
    command.getOptionValueSource('config') === 'cli' ? command.getOptionValue('config') : undefined;
  return { flags, ...(typeof config === 'string' ? { config } : {}) };
}

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
  const env = context.env ?? process.env;
  const cwd = context.cwd ?? process.cwd();
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
    .configureHelp({ optionDescription });
  addSettingOptions(program);
  program.option(
    '--print-config',
    'print each setting, its value and where it came from, then exit',
  );

  const doctor = program
    .command('doctor')
    .description(
      'check this machine: the backend auto would use and why, the GPUs, the native TensorFlow ' +
        'libraries and the CUDA libraries they need, and (with a coordinator set) whether the ' +
        `coordinator's health service answers. Waits ${DOCTOR_COORDINATOR_TIMEOUT_S} s for it unless --connect-timeout is given. ` +
        'Exits 0 when this worker could train.',
    );
  addSettingOptions(doctor);
  doctor.option('--json', 'print the report as one JSON object');
  doctor.action(async (opts: { json?: boolean }) => {
    // Settings given before `doctor` count too; those after it win.
    const before = flagsGiven(program);
    const after = flagsGiven(doctor);
    const configFlag = after.config ?? before.config;
    const config = resolveWorkerConfig({
      flags: { ...before.flags, ...after.flags },
      ...(configFlag !== undefined ? { configFlag } : {}),
      env,
      cwd,
    });
    const timeout = config.entries.find((e) => e.key === 'connectTimeout')!;
    const report = await runDoctor({
      config,
      version,
      env,
      coordinatorTimeoutMs:
        (timeout.source.kind === 'default'
          ? DOCTOR_COORDINATOR_TIMEOUT_S
          : config.settings.connectTimeout) * 1000,
    });
    streams.stdout.write(
      opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctorReport(report),
    );
    result.exitCode = report.ok ? 0 : 1;
  });

  program.action(async (opts: { printConfig?: boolean }) => {
    const given = flagsGiven(program);
    const config = resolveWorkerConfig({
      flags: given.flags,
      ...(given.config !== undefined ? { configFlag: given.config } : {}),
      env,
      cwd,
    });
    if (opts.printConfig) {
      streams.stdout.write(formatConfig(config));
      // A configuration that could not start a worker is not a success, even when printed.
      requireCoordinator(config);
      return;
    }
    const coordinator = requireCoordinator(config);
    const s = config.settings;
    const logger = createLogger({
      level: s.logLevel as LogLevel,
      format: s.logFormat,
      sink: streams.stderr,
      fields: { name: s.name },
    });
    if (logger.enabled('debug')) {
      const shown = Object.fromEntries(
        config.entries.map((e) => {
          const spec = WORKER_SETTINGS.find((x) => x.key === e.key)!;
          return [e.key, `${displayValue(spec, e.value)} (${describeSource(e.source)})`];
        }),
      );
      logger.debug('settings', shown);
    }
    // Before the backend loads or data is read: bad PEM files or a bad token stop here.
    const channel = resolveWorkerChannel(readWorkerSecurityFlags({ ...s }), coordinator, logger);
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const outcome = await runWorker({
        coordinator,
        name: s.name,
        backend: parseBackendPreference(s.backend),
        ...(s.dataDir === undefined ? {} : { dataDir: s.dataDir }),
        download: !s.noDownload,
        connectTimeoutMs: s.connectTimeout * 1000,
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
      if (outcome.reason === 'shutdown') {
        streams.stderr.write(
          `shardline-worker: the coordinator stopped before the job finished (${outcome.message}). Start this worker again to rejoin the run when it resumes.\n`,
        );
        result.exitCode = EXIT_COORDINATOR_STOPPED;
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
  return { program, result };
}

/**
 * The exit status of a worker whose coordinator stopped before the job finished (a clean
 * shutdown, to be resumed): 75, EX_TEMPFAIL in sysexits.h, "try again later". Exit 0 means the
 * job is done, so a service manager can restart a worker on failure only (systemd's
 * `Restart=on-failure`) and still have it rejoin a resumed run.
 */
export const EXIT_COORDINATOR_STOPPED = 75;

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
