/**
 * The `shardline-coordinator` command tree. `runCli` returns the exit status instead of calling
 * process.exit, so tests can run it in-process and the CLI lets pending writes flush.
 */
import { readFileSync } from 'node:fs';
import {
  BackendNames,
  createLogger,
  type Logger,
  type LogLevel,
  LogLevels,
  OptimizerKinds,
  parseBackendPreference,
  ScheduleKinds,
  ShardlineError,
  toShardlineError,
} from '@shardline/core';
import { datasetNames } from '@shardline/datasets';
import { listModels } from '@shardline/models';
import { DataType } from '@shardline/protocol';
import { Command, CommanderError, Option } from 'commander';
import { checkHealthListen, parseHealthListen } from './distributed/healthListen.js';
import {
  createSecurityOptions,
  readSecurityFlags,
  type ServerSecurityFlags,
} from './distributed/security.js';
import { type DistributedSettings, trainDistributed } from './distributed/trainDistributed.js';
import { trainInProcess } from './inProcess.js';
import { nonNegativeInt, nonNegativeNumber, positiveInt, positiveNumber } from './parsers.js';
import { createJsonReporter, createTextReporter, type ReporterStreams } from './reporter.js';
import type { TrainConfig } from './trainConfig.js';

const version = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

function defaultOut(): string {
  const stamp = new Date().toISOString().replace(/[:T]/g, '-').replace(/\..*$/, '');
  return `runs/${stamp}`;
}

/** Flags of `train` that are not part of the job's config. */
export interface TrainFlags {
  inProcess: boolean;
  /** Whether --out was given (--resume needs it). */
  outGiven: boolean;
  logLevel: LogLevel;
  distributed: DistributedSettings;
}

/** Builds the command tree; `onTrain` receives the validated config of `train`. */
export function buildProgram(
  streams: ReporterStreams,
  onTrain: (config: TrainConfig, flags: TrainFlags) => Promise<void>,
): Command {
  const security = createSecurityOptions();
  const program = new Command('shardline-coordinator')
    .description('Train image classifiers data-parallel with TensorFlow.js.')
    .version(version)
    .configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
    })
    .exitOverride();

  program
    .command('train')
    .description(
      'Run a whole training job. With no flags: the seed CNN on Fashion-MNIST for 30 epochs.\n' +
        'Global batch semantics: --batch-size is the number of images behind each optimizer step, summed over all workers.',
    )
    .option('--in-process', 'train inside this process (no gRPC, no workers)', false)
    .option(
      '--listen <host:port>',
      'address to serve workers on (port 0: any free port)',
      '127.0.0.1:7070',
    )
    .option('--local-workers <n>', 'worker processes to start on this machine', nonNegativeInt, 2)
    .option(
      '--health-listen <host:port>',
      'also serve the gRPC health service here, in plaintext and without a token, for probes that cannot use a TLS --listen (off by default)',
      parseHealthListen,
    )
    // Channel security: token, TLS, mutual TLS (distributed/security.ts).
    .addOption(security.token)
    .addOption(security.tokenFile)
    .addOption(security.tlsCert)
    .addOption(security.tlsKey)
    .addOption(security.tlsCa)
    .addOption(security.insecure)
    .option(
      '--min-workers <n>',
      'workers that must be attached before a step runs (default: --local-workers, at least 1)',
      positiveInt,
    )
    .addOption(
      new Option('--gradient-dtype <dtype>', 'encoding of gradients on the wire')
        .choices(['float32', 'float16', 'bfloat16'])
        .default('float32'),
    )
    .addOption(
      new Option(
        '--weights-dtype <dtype>',
        "encoding of weights on the wire (16-bit rounds the workers' copy)",
      )
        .choices(['float32', 'float16', 'bfloat16'])
        .default('float32'),
    )
    .addOption(
      new Option('--model <name>', 'model to train')
        .choices(listModels().map((m) => m.name))
        .default('seed-cnn'),
    )
    .addOption(
      new Option('--dataset <name>', 'dataset to train on')
        .choices([...datasetNames])
        .default('fashion-mnist'),
    )
    .option(
      '--data-dir <dir>',
      'folder holding the dataset files (else SHARDLINE_DATA_DIR, the cache, /usr/share/datasets, download)',
    )
    .option('--no-download', 'never download the dataset; fail when no local copy exists')
    .option('--epochs <n>', 'passes over the training set', positiveInt, 30)
    .option('--batch-size <n>', 'global batch size (images per optimizer step)', positiveInt, 32)
    .option('--learning-rate <lr>', 'peak learning rate', positiveNumber, 0.001)
    .addOption(
      new Option('--optimizer <kind>', 'optimizer').choices([...OptimizerKinds]).default('adam'),
    )
    .option('--momentum <m>', 'momentum coefficient (momentum optimizer)', nonNegativeNumber, 0.9)
    .option('--weight-decay <wd>', 'L2 weight decay', nonNegativeNumber, 0)
    .addOption(
      new Option('--schedule <kind>', 'learning-rate schedule')
        .choices([...ScheduleKinds])
        .default('constant'),
    )
    .option(
      '--warmup-epochs <n>',
      'linear learning-rate warmup, in epochs (may be fractional)',
      nonNegativeNumber,
      0,
    )
    .option('--augment', 'random shifts and flips of training images', false)
    .option(
      '--resume',
      'continue the run in --out from its newest checkpoint (same flags otherwise)',
      false,
    )
    .option(
      '--checkpoint-every <steps>',
      'also checkpoint every N steps (0: only at each epoch end)',
      nonNegativeInt,
      0,
    )
    .option('--keep-checkpoints <n>', 'checkpoints kept under <out>/checkpoints', positiveInt, 3)
    .option(
      '--worker-timeout <seconds>',
      'drop a worker that has not returned its share this long after a step began',
      positiveNumber,
      10,
    )
    .option(
      '--wait-timeout <seconds>',
      'give up when fewer than --min-workers are attached for this long (0: wait forever)',
      nonNegativeNumber,
      300,
    )
    .option(
      '--max-workers <n>',
      'refuse joins beyond this many workers (0: no limit)',
      nonNegativeInt,
      0,
    )
    .option('--seed <n>', 'seed for initialisation, shuffling and augmentation', nonNegativeInt, 42)
    .addOption(
      new Option('--backend <name>', 'compute backend')
        .choices(['auto', ...BackendNames])
        .default('auto'),
    )
    .option('--limit-train <n>', 'use only the first N training images (0: all)', nonNegativeInt, 0)
    .option('--limit-test <n>', 'use only the first N test images (0: all)', nonNegativeInt, 0)
    .option('--eval-batch-size <n>', 'images per forward pass during evaluation', positiveInt, 500)
    .option(
      '--out <dir>',
      'folder for the trained model and the run summary (default: runs/<date-time>)',
    )
    .addOption(
      new Option('--log-format <format>', 'json: one event per line on stdout')
        .choices(['text', 'json'])
        .default('text'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level for stderr')
        .choices([...LogLevels])
        .default(process.env.SHARDLINE_LOG_LEVEL ?? 'info'),
    )
    .action(async (opts: Record<string, unknown>, command: Command) => {
      const config: TrainConfig = {
        model: opts.model as string,
        dataset: opts.dataset as string,
        ...(opts.dataDir === undefined ? {} : { dataDir: opts.dataDir as string }),
        download: opts.download as boolean,
        epochs: opts.epochs as number,
        batchSize: opts.batchSize as number,
        learningRate: opts.learningRate as number,
        optimizer: opts.optimizer as TrainConfig['optimizer'],
        momentum: opts.momentum as number,
        weightDecay: opts.weightDecay as number,
        schedule: opts.schedule as TrainConfig['schedule'],
        warmupEpochs: opts.warmupEpochs as number,
        seed: opts.seed as number,
        backend: parseBackendPreference(opts.backend as string),
        limitTrain: opts.limitTrain as number,
        limitTest: opts.limitTest as number,
        evalBatchSize: opts.evalBatchSize as number,
        augment: opts.augment as boolean,
        out: (opts.out as string | undefined) ?? defaultOut(),
        resume: opts.resume as boolean,
        checkpointEvery: opts.checkpointEvery as number,
        keepCheckpoints: opts.keepCheckpoints as number,
        logFormat: opts.logFormat as TrainConfig['logFormat'],
      };
      const localWorkers = opts.localWorkers as number;
      const dtypes = {
        float32: DataType.FLOAT32,
        float16: DataType.FLOAT16,
        bfloat16: DataType.BFLOAT16,
      };
      await onTrain(config, {
        inProcess: opts.inProcess as boolean,
        outGiven: opts.out !== undefined,
        logLevel: opts.logLevel as LogLevel,
        distributed: {
          listen: opts.listen as string,
          ...(opts.healthListen === undefined ? {} : { healthListen: opts.healthListen as string }),
          localWorkers,
          minWorkers: (opts.minWorkers as number | undefined) ?? Math.max(1, localWorkers),
          gradientDtype: dtypes[opts.gradientDtype as keyof typeof dtypes],
          weightsDtype: dtypes[opts.weightsDtype as keyof typeof dtypes],
          maxWorkers: opts.maxWorkers as number,
          workerTimeoutMs: (opts.workerTimeout as number) * 1000,
          waitTimeoutMs: (opts.waitTimeout as number) * 1000,
          security: readSecurityFlags(opts, (key) => command.getOptionValueSource(key)),
        },
      });
    });
  return program;
}

/**
 * Runs the CLI with `argv` (as process.argv) and returns the exit status: 0 only when the job
 * finished; otherwise a one-line reason is written to stderr.
 */
export async function runCli(argv: string[], streams: ReporterStreams): Promise<number> {
  const program = buildProgram(streams, async (config, flags) => {
    const logger = createLogger({
      level: flags.logLevel,
      format: config.logFormat,
      sink: streams.stderr,
    });
    const reporter =
      config.logFormat === 'json' ? createJsonReporter(streams) : createTextReporter(streams);
    // First SIGINT/SIGTERM: finish the current step, checkpoint, stop the workers, exit 0.
    // A second one: exit at once.
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
    const control = { shouldStop: () => stopRequested, stopSignal: stopping.signal };
    try {
      // Before anything is created: a --health-listen that cannot work is a usage error.
      checkHealthListen({
        healthListen: flags.distributed.healthListen,
        listen: flags.distributed.listen,
        inProcess: flags.inProcess,
      });
      if (flags.inProcess && flags.distributed.security) {
        warnIgnoredSecurity(flags.distributed.security, logger);
      }
      if (config.resume && flags.outGiven === false) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          '--resume needs --out <dir>: the folder of the run to continue.',
        );
      }
      const result = flags.inProcess
        ? await trainInProcess(config, reporter, logger, control)
        : await trainDistributed(config, flags.distributed, reporter, logger, streams, control);
      if (!result.completed) {
        streams.stderr.write(
          `shardline-coordinator: stopped before the end; a checkpoint is in ${config.out}. Continue with the same flags plus --out ${config.out} --resume.\n`,
        );
      }
    } finally {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    }
  });
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

/**
 * With --in-process nothing listens, so channel security has nothing to protect: say so rather
 * than let someone believe a token or TLS is in force. A warning, not an error, because the token
 * may come from a SHARDLINE_TOKEN meant for other runs.
 */
function warnIgnoredSecurity(security: ServerSecurityFlags, logger: Logger): void {
  const ignored = [
    security.token === undefined ? undefined : '--token/--token-file',
    security.tlsCert === undefined ? undefined : '--tls-cert',
    security.tlsKey === undefined ? undefined : '--tls-key',
    security.tlsCa === undefined ? undefined : '--tls-ca',
    security.insecure ? '--insecure' : undefined,
  ].filter((flag) => flag !== undefined);
  if (ignored.length > 0) {
    logger.warn(
      `${ignored.join(', ')} ignored: --in-process trains in this process and listens on no port, so there is no channel to secure`,
    );
  }
}
