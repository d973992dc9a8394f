/**
 * `train(options)`: the coordinator's training job from code, the same trainer as
 * `shardline-coordinator train` with the same defaults, taking what a program has rather than
 * what a shell has: a model spec or a function returning a model, sets built in memory, an
 * event callback instead of stdout.
 */
import { createLogger, type Logger, ShardlineError } from '@shardline/core';
import { resolveSettings } from '@shardline/core/settings';
import { checkDashboard, parseDashboard, reservedPorts } from './dashboard/address.js';
import { openRunDashboard, type RunDashboard } from './dashboard/runDashboard.js';
import { type DistributedSettings, trainDistributed } from './distributed/trainDistributed.js';
import { trainInProcess } from './inProcess.js';
import type { JobSources, RunControl, TrainResult } from './job.js';
import type { InMemoryDataset } from './jobData.js';
import type { ModelBuildContext, ModelSource } from './jobModel.js';
import { createEventReporter, type Reporter, type TrainEvent } from './reporter.js';
import {
  checkInProcessExchange,
  TRAIN_SETTINGS_MODEL,
  type TrainConfig,
  type TrainSettings,
  toDistributedSettings,
  toTrainConfig,
} from './trainConfig.js';

/** What {@link train} takes. Anything left out has the default `shardline-coordinator train` has. */
export interface TrainOptions
  extends Partial<Omit<TrainConfig, 'model' | 'dataset' | 'hyperparameters' | 'logFormat'>> {
  /** A registered name or a file path (as `--model`), a model spec, or a function returning the model (given the data's shape and the seed: {@link ModelBuildContext}). Default `seed-cnn`. */
  model?: ModelSource;
  /** `--hp` values: hyperparameters of a registered or spec model, by name. */
  hyperparameters?: Readonly<Record<string, string | number | readonly number[]>>;
  /** A built-in dataset's name or an image folder's path (as `--dataset`), or sets built in memory. Default `fashion-mnist`. */
  dataset?: string | InMemoryDataset;
  /** Train inside this process, without gRPC or workers. Default false. */
  inProcess?: boolean;
  /** Serving and membership when not in-process: the CLI's defaults, except `listen` (127.0.0.1:0, any free port). */
  distributed?: Partial<Omit<DistributedSettings, 'gradientDtype' | 'weightsDtype'>> & {
    gradientDtype?: 'float32' | 'float16' | 'bfloat16';
    weightsDtype?: 'float32' | 'float16' | 'bfloat16';
  };
  /** Receives every event `--log-format json` prints (started, worker_joined, epoch_end, ...). */
  onEvent?: (event: TrainEvent) => void;
  /** Where log records go. Default: warnings and errors on stderr. */
  logger?: Logger;
  /** Stops the run after the current step, with a checkpoint (resume with `resume: true`). */
  signal?: AbortSignal;
  /**
   * Serve the live dashboard and Prometheus `/metrics` at this `host:port` (port 0: any free
   * one), as `--dashboard` does; its URL comes in the `started` event's `dashboard` field.
   * Default `off` here, unlike the CLI: a program should not open a port it did not ask for.
   * Beyond loopback it needs `distributed.security.token`.
   */
  dashboard?: string;
}

/** The CLI's defaults, read from its settings table with no flags, variables or config file. */
function defaultSettings(): TrainSettings {
  return resolveSettings(TRAIN_SETTINGS_MODEL, { flags: {}, env: {} }).settings;
}

/**
 * Trains a model. Resolves with the outcome (finished, or stopped by `signal` at a checkpoint);
 * rejects with a ShardlineError that says what to change.
 *
 * @example
 * ```ts
 * import { train } from '@shardline/coordinator';
 *
 * const result = await train({
 *   model: 'fast-cnn',
 *   dataset: './photos',          // one subfolder per class
 *   validationSplit: 0.2,
 *   epochs: 5,
 *   out: './runs/photos',
 *   distributed: { localWorkers: 2 },
 *   onEvent: (e) => e.event === 'epoch_end' && console.log(e.epoch, e.test_accuracy),
 * });
 * console.log(result.modelPath);
 * ```
 */
export async function train(options: TrainOptions = {}): Promise<TrainResult> {
  const {
    model,
    hyperparameters,
    dataset,
    inProcess,
    distributed,
    onEvent,
    logger: givenLogger,
    signal,
    dashboard: dashboardAddress,
    ...overrides
  } = options;
  const defaults = defaultSettings();
  const base = toTrainConfig(defaults);
  const sets = typeof dataset === 'object' ? dataset : undefined;
  const config: TrainConfig = {
    ...base,
    ...overrides,
    model:
      typeof model === 'string'
        ? model
        : typeof model === 'object'
          ? model.name
          : model === undefined
            ? base.model
            : 'function',
    hyperparameters: Object.fromEntries(
      Object.entries(hyperparameters ?? {}).map(([k, v]) => [
        k,
        Array.isArray(v) ? v.join(',') : String(v),
      ]),
    ),
    dataset: typeof dataset === 'string' ? dataset : sets ? 'in-memory' : base.dataset,
    logFormat: 'json',
  };
  if (config.resume && overrides.out === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'resume: true needs out: the folder of the run to continue.',
    );
  }
  const logger =
    givenLogger ?? createLogger({ level: 'warn', format: 'text', sink: process.stderr });
  const sources: JobSources = {
    ...(model !== undefined && typeof model !== 'string' ? { model } : {}),
    ...(sets ? { sets } : {}),
  };
  const control = signal ? { shouldStop: () => signal.aborted, stopSignal: signal } : {};
  if (inProcess) checkInProcessExchange(config.exchange, true);
  const address = dashboardOption(dashboardAddress);
  const token = distributed?.security?.token;
  const dashboardSettings =
    address === 'off'
      ? undefined
      : { address, fallback: false, ...(token === undefined ? {} : { token }) };
  const ports = inProcess ? {} : { listen: distributed?.listen ?? '127.0.0.1:0' };
  checkDashboard(dashboardSettings, ports);
  const dashboard = await openRunDashboard(dashboardSettings, {
    logger,
    reservedPorts: reservedPorts(ports),
  });
  const reporter = dashboard.observe(createEventReporter(onEvent ?? (() => {})));
  try {
    return await trainIn(inProcess === true, config, defaults, distributed, {
      reporter,
      logger,
      control,
      sources,
      dashboard,
    });
  } catch (error) {
    dashboard.failed(error);
    throw error;
  } finally {
    await dashboard.close();
  }
}

/** `dashboard`, checked as `--dashboard` is: `off` (the default here) or host:port. */
function dashboardOption(value: string | undefined): string {
  try {
    return parseDashboard(value ?? 'off');
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `dashboard: ${JSON.stringify(value)} is not valid: ${(error as Error).message}.`,
    );
  }
}

/** What {@link trainIn} runs a job with besides its settings. */
interface RunParts {
  reporter: Reporter;
  logger: Logger;
  control: RunControl;
  sources: JobSources;
  dashboard: RunDashboard;
}

/** Runs `config` in this process or distributed, as {@link train} was asked. */
async function trainIn(
  inProcess: boolean,
  config: TrainConfig,
  defaults: TrainSettings,
  distributed: TrainOptions['distributed'],
  { reporter, logger, control, sources, dashboard }: RunParts,
): Promise<TrainResult> {
  if (inProcess) return trainInProcess(config, reporter, logger, control, sources, dashboard);
  const { gradientDtype, weightsDtype, ...serving } = distributed ?? {};
  const settings: DistributedSettings = {
    ...toDistributedSettings({
      ...defaults,
      // Any free port: a program (or a test) running several jobs must not collide on 7070.
      listen: '127.0.0.1:0',
      localWorkers: serving.localWorkers ?? defaults.localWorkers,
      ...(serving.minWorkers === undefined ? {} : { minWorkers: serving.minWorkers }),
      gradientDtype: gradientDtype ?? defaults.gradientDtype,
      weightsDtype: weightsDtype ?? defaults.weightsDtype,
    }),
    ...serving,
  };
  return trainDistributed(
    config,
    settings,
    reporter,
    logger,
    { stderr: process.stderr },
    control,
    sources,
    dashboard,
  );
}
