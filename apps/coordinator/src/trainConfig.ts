/**
 * The settings of one training job: the `train` command's settings table, and the job's
 * validated config built from them.
 *
 * Every setting comes from, in this order of precedence, its flag, its environment variable
 * (`SHARDLINE_` + the flag in upper snake case), the JSON config file (`--config` /
 * `SHARDLINE_CONFIG`, keys in camelCase), the `--preset` recipe (presets.ts) or its default:
 * the same model as `shardline-worker`, from @shardline/core/settings.
 */
import {
  BackendNames,
  type BackendPreference,
  LogLevels,
  OptimizerKinds,
  ScheduleKinds,
  ShardlineError,
} from '@shardline/core';
import {
  defineSettings,
  nonEmpty,
  oneOf,
  parseSwitch,
  type SettingsOf,
  setting,
} from '@shardline/core/settings';
import { datasetNames } from '@shardline/datasets';
import { listModels } from '@shardline/models';
import { DataType, TOKEN_FILE_FORM } from '@shardline/protocol';
import type { TrainerConfig } from '@shardline/training';
import { type DashboardSettings, DEFAULT_DASHBOARD, parseDashboard } from './dashboard/address.js';
import { parseHealthListen } from './distributed/healthListen.js';
import type { ServerSecurityFlags } from './distributed/security.js';
import type { DistributedSettings } from './distributed/trainDistributed.js';
import {
  classNamesText,
  hyperparameterItem,
  hyperparameterRecord,
  imageSizeText,
  modelValue,
  nonNegativeInt,
  nonNegativeNumber,
  openFraction,
  parseImageSize,
  positiveInt,
  positiveNumber,
} from './parsers.js';
import { TRAIN_PRESET_NAMES, TRAIN_PRESETS } from './presets.js';

/** Everything a training job needs to know, validated: the trainer's settings and the job's. */
export interface TrainConfig extends TrainerConfig {
  /** A registered model's name, or the path of a model.json or an ES module model spec. */
  model: string;
  /** `--hp` values by name, parsed by the model's declared types. */
  hyperparameters: Record<string, string>;
  /** `--plugin` modules (custom layer classes), loaded before the model; workers need them too. */
  plugins: string[];
  /** A built-in dataset's name, or the path of an image folder. */
  dataset: string;
  /** Image folders: resize every image to this size (default: the images' own size). */
  imageSize?: { height: number; width: number };
  /** Image folders: default rgb, or grayscale when every image is. */
  colorMode?: 'grayscale' | 'rgb';
  /** Image folders without train/ and test/: the fraction of each class held out for testing. */
  validationSplit?: number;
  /** Image folders: exactly these class folders, in label order. */
  classNames?: string[];
  dataDir?: string;
  /** Download the dataset when no local copy exists. */
  download: boolean;
  seed: number;
  backend: BackendPreference;
  /** Use only the first N training / test images (0 = all). */
  limitTrain: number;
  limitTest: number;
  /** Images per forward pass during evaluation. */
  evalBatchSize: number;
  augment: boolean;
  out: string;
  /** Continue the run under `out` from its newest checkpoint. */
  resume: boolean;
  /** Checkpoint every N steps (0: only at each epoch's end). */
  checkpointEvery: number;
  /** Checkpoints kept; older ones are deleted. */
  keepCheckpoints: number;
  logFormat: 'json' | 'text';
  /**
   * Who averages the gradients: the coordinator (`star`), the workers among themselves
   * (`ring`), or `auto`, which the distributed mode resolves once at startup
   * ({@link resolveExchange}). A checkpoint records the resolved mode; absent in checkpoints
   * written before ring mode, which were star.
   */
  exchange: ExchangeSetting;
}

/** The values of `--exchange`. */
export const EXCHANGE_SETTINGS = ['star', 'ring', 'auto'] as const;

/** A value of `--exchange`: `auto` until resolved. */
export type ExchangeSetting = (typeof EXCHANGE_SETTINGS)[number];

/** An exchange mode as a job runs it, `auto` resolved. */
export type ExchangeMode = Exclude<ExchangeSetting, 'auto'>;

/** `--exchange auto` picks ring from this many workers, when some of them are remote... */
export const AUTO_RING_MIN_WORKERS = 2;

/** ...and a float32 gradient of at least this many bytes (1 MiB, 262,144 parameters). */
export const AUTO_RING_MIN_GRADIENT_BYTES = 1024 * 1024;

/**
 * Resolves `--exchange auto` for a job of `parameterCount` parameters on `workers` workers (the
 * larger of --min-workers and --local-workers), `remote` of which are expected to join from
 * elsewhere (--min-workers beyond --local-workers): ring from {@link AUTO_RING_MIN_WORKERS}
 * workers with at least one remote and a float32 gradient of {@link AUTO_RING_MIN_GRADIENT_BYTES},
 * star otherwise. The rule follows `pnpm bench:exchange`: wherever the network sets the pace,
 * ring ran 3.3 times star's steps/s at 2 workers and 4.4 times at 4 (the coordinator's link
 * carries 2 x N gradients per step in star mode, every link about 2 x (N - 1) / N of one in
 * ring mode); with only local workers (loopback, no bandwidth limit) the two are within 5% and
 * star, with one replica fewer per process, stays; below 1 MiB a step's exchange is too short
 * for bandwidth to matter. `star` and `ring` resolve to themselves. Returns the mode and why.
 */
export function resolveExchange(
  setting: ExchangeSetting,
  job: { workers: number; remote: number; parameterCount: number },
): { exchange: ExchangeMode; reason: string } {
  if (setting !== 'auto') return { exchange: setting, reason: `--exchange ${setting}` };
  const bytes = job.parameterCount * 4;
  const mib = (bytes / (1024 * 1024)).toFixed(2);
  if (job.workers < AUTO_RING_MIN_WORKERS) {
    return {
      exchange: 'star',
      reason: `--exchange auto: ${job.workers} worker(s), fewer than ${AUTO_RING_MIN_WORKERS}`,
    };
  }
  if (job.remote < 1) {
    return {
      exchange: 'star',
      reason: `--exchange auto: only local workers (no network between them to save)`,
    };
  }
  if (bytes < AUTO_RING_MIN_GRADIENT_BYTES) {
    return {
      exchange: 'star',
      reason: `--exchange auto: a ${mib} MiB gradient, under 1 MiB`,
    };
  }
  return {
    exchange: 'ring',
    reason: `--exchange auto: ${job.workers} workers (${job.remote} remote) and a ${mib} MiB gradient`,
  };
}

/**
 * Refuses `--exchange ring` with `--in-process`: one process has no peers to all-reduce with.
 * (`auto` trains in-process as star.)
 */
export function checkInProcessExchange(exchange: ExchangeSetting, inProcess: boolean): void {
  if (inProcess && exchange === 'ring') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      '--exchange ring needs worker processes to all-reduce among, but --in-process trains in this one process. Drop --in-process (ring needs at least 2 workers), or use --exchange star or auto.',
    );
  }
}

/** Wire encodings of gradients and weights. */
export const WIRE_DTYPES = ['float32', 'float16', 'bfloat16'] as const;
const BACKENDS = ['auto', ...BackendNames] as const;
const LOG_FORMATS = ['text', 'json'] as const;
const MODELS = listModels().map((m) => m.name);
const COLOR_MODES = ['grayscale', 'rgb'] as const;

/** The default --out: `runs/<date-time>`, a new folder for every run. */
function defaultOut(): string {
  const stamp = new Date().toISOString().replace(/[:T]/g, '-').replace(/\..*$/, '');
  return `runs/${stamp}`;
}

/** A switch: off unless given. */
function off(): false {
  return false;
}

/** Where the distributed mode listens, and who may join. */
const SERVING = [
  setting({
    flag: '--in-process',
    description: 'train inside this process (no gRPC, no workers)',
    type: 'boolean',
    defaultValue: off,
    parse: parseSwitch,
  }),
  setting({
    flag: '--listen',
    argument: '<host:port>',
    description: 'address to serve workers on (port 0: any free port)',
    type: 'string',
    defaultValue: () => '127.0.0.1:7070',
    parse: nonEmpty('host:port'),
  }),
  setting({
    flag: '--local-workers',
    argument: '<n>',
    description: 'worker processes to start on this machine',
    type: 'number',
    defaultValue: () => 2,
    parse: nonNegativeInt,
  }),
  setting({
    flag: '--health-listen',
    argument: '<host:port>',
    description:
      'also serve the gRPC health service here, in plaintext and without a token, for probes that cannot use a TLS --listen (off by default)',
    type: 'string',
    parse: parseHealthListen,
  }),
  setting({
    flag: '--dashboard',
    argument: '<host:port|off>',
    description:
      'serve the live dashboard, its JSON API and Prometheus /metrics here (off: none); beyond loopback every request needs the token. The default takes a free port when 7071 is taken',
    type: 'string',
    defaultValue: () => DEFAULT_DASHBOARD,
    parse: parseDashboard,
  }),
] as const;

/** Channel security: token, TLS, mutual TLS (distributed/security.ts). */
const SECURITY = [
  setting({
    flag: '--token',
    argument: '<token>',
    description:
      'shared secret every worker call must carry (prefer the env variable: flags show in `ps`)',
    type: 'string',
    secret: true,
    parse: (value) => value,
  }),
  setting({
    flag: '--token-file',
    argument: '<file>',
    description: 'read the shared secret from this file, such as a mounted Kubernetes Secret',
    type: 'string',
    path: true,
    parse: nonEmpty('a file'),
  }),
  setting({
    flag: '--tls-cert',
    argument: '<pem>',
    description: 'serve TLS with this certificate (chain) file',
    type: 'string',
    path: true,
    parse: nonEmpty('a PEM file'),
  }),
  setting({
    flag: '--tls-key',
    argument: '<pem>',
    description: "the certificate's private key file (unencrypted PEM)",
    type: 'string',
    path: true,
    parse: nonEmpty('a PEM file'),
  }),
  setting({
    flag: '--tls-ca',
    argument: '<pem>',
    description: 'mutual TLS: require worker certificates signed by a CA in this file',
    type: 'string',
    path: true,
    parse: nonEmpty('a PEM file'),
  }),
  setting({
    flag: '--insecure',
    description: 'allow a non-loopback --listen with neither --token nor TLS',
    type: 'boolean',
    defaultValue: off,
    parse: parseSwitch,
  }),
] as const;

/** Membership and the wire. */
const EXCHANGE = [
  setting({
    flag: '--exchange',
    argument: '<mode>',
    description:
      'who averages the gradients: star (the coordinator), ring (the workers among themselves, each keeping a replica; workers need --peer-listen), or auto (ring from 3 workers and a 1 MiB gradient, else star)',
    type: 'string',
    choices: EXCHANGE_SETTINGS,
    defaultValue: () => 'star',
    parse: oneOf(EXCHANGE_SETTINGS),
  }),
  setting({
    flag: '--min-workers',
    argument: '<n>',
    description:
      'workers that must be attached before a step runs (default: --local-workers, at least 1)',
    type: 'number',
    parse: positiveInt,
  }),
  setting({
    flag: '--gradient-dtype',
    argument: '<dtype>',
    description: 'encoding of gradients on the wire',
    type: 'string',
    choices: WIRE_DTYPES,
    defaultValue: () => 'float32',
    parse: oneOf(WIRE_DTYPES),
  }),
  setting({
    flag: '--weights-dtype',
    argument: '<dtype>',
    description: "encoding of weights on the wire (16-bit rounds the workers' copy)",
    type: 'string',
    choices: WIRE_DTYPES,
    defaultValue: () => 'float32',
    parse: oneOf(WIRE_DTYPES),
  }),
] as const;

/** The model, the data and the optimisation. */
const JOB = [
  setting({
    flag: '--preset',
    argument: '<name>',
    description: `a named recipe whose values any other flag, variable or config key overrides: ${Object.entries(
      TRAIN_PRESETS,
    )
      .map(([name, preset]) => `${name} (${preset.description})`)
      .join('; ')}`,
    type: 'string',
    choices: TRAIN_PRESET_NAMES,
    parse: oneOf(TRAIN_PRESET_NAMES),
  }),
  setting({
    flag: '--model',
    argument: '<name|file>',
    description: `model to train: ${MODELS.join(', ')}, or a TensorFlow.js layers model.json, or an ES module (.mjs/.js) exporting a model spec`,
    type: 'string',
    defaultValue: () => 'seed-cnn',
    parse: modelValue(MODELS),
  }),
  setting({
    flag: '--hp',
    argument: '<name=value>',
    description: 'a hyperparameter of the model, such as dropout=0.3 or hiddenUnits=128,64',
    type: 'list',
    defaultValue: () => [],
    parse: hyperparameterItem,
  }),
  setting({
    flag: '--plugin',
    argument: '<module>',
    description:
      'an ES module that registers custom layer classes, loaded before the model; every worker needs it too (its --plugin)',
    type: 'list',
    path: true,
    defaultValue: () => [],
    parse: nonEmpty('a module path'),
  }),
  setting({
    flag: '--dataset',
    argument: '<name|dir>',
    description: `dataset to train on: ${datasetNames.join(', ')}, or a folder of images with one subfolder per class`,
    type: 'string',
    defaultValue: () => 'fashion-mnist',
    parse: nonEmpty('a dataset name or folder'),
  }),
  setting({
    flag: '--image-size',
    argument: '<HxW>',
    description:
      "image folders: resize every image to this size (default: the images' own size, when all agree)",
    type: 'string',
    parse: imageSizeText,
  }),
  setting({
    flag: '--color-mode',
    argument: '<mode>',
    description: 'image folders: grayscale or rgb (default: rgb, or grayscale when every image is)',
    type: 'string',
    choices: COLOR_MODES,
    parse: oneOf(COLOR_MODES),
  }),
  setting({
    flag: '--validation-split',
    argument: '<fraction>',
    description:
      'image folders without train/ and test/: fraction of each class held out for testing (seeded by --seed)',
    type: 'number',
    parse: openFraction,
  }),
  setting({
    flag: '--class-names',
    argument: '<a,b,...>',
    description:
      'image folders: exactly these class folders, in label order (default: all, sorted)',
    type: 'string',
    parse: classNamesText,
  }),
  setting({
    flag: '--data-dir',
    argument: '<dir>',
    description: 'folder holding the dataset files (else the cache, /usr/share/datasets, download)',
    type: 'string',
    path: true,
    parse: nonEmpty('a folder'),
  }),
  setting({
    flag: '--no-download',
    description: 'never download the dataset; fail when no local copy exists',
    type: 'boolean',
    defaultValue: off,
    parse: parseSwitch,
  }),
  setting({
    flag: '--epochs',
    argument: '<n>',
    description: 'passes over the training set',
    type: 'number',
    defaultValue: () => 30,
    parse: positiveInt,
  }),
  setting({
    flag: '--batch-size',
    argument: '<n>',
    description: 'global batch size (images per optimizer step)',
    type: 'number',
    defaultValue: () => 32,
    parse: positiveInt,
  }),
  setting({
    flag: '--learning-rate',
    argument: '<lr>',
    description: 'peak learning rate',
    type: 'number',
    defaultValue: () => 0.001,
    parse: positiveNumber,
  }),
  setting({
    flag: '--optimizer',
    argument: '<kind>',
    description: 'optimizer',
    type: 'string',
    choices: OptimizerKinds,
    defaultValue: () => 'adam',
    parse: oneOf(OptimizerKinds),
  }),
  setting({
    flag: '--momentum',
    argument: '<m>',
    description: 'momentum coefficient (momentum optimizer)',
    type: 'number',
    defaultValue: () => 0.9,
    parse: nonNegativeNumber,
  }),
  setting({
    flag: '--weight-decay',
    argument: '<wd>',
    description: 'L2 weight decay',
    type: 'number',
    defaultValue: () => 0,
    parse: nonNegativeNumber,
  }),
  setting({
    flag: '--schedule',
    argument: '<kind>',
    description: 'learning-rate schedule',
    type: 'string',
    choices: ScheduleKinds,
    defaultValue: () => 'constant',
    parse: oneOf(ScheduleKinds),
  }),
  setting({
    flag: '--warmup-epochs',
    argument: '<n>',
    description: 'linear learning-rate warmup, in epochs (may be fractional)',
    type: 'number',
    defaultValue: () => 0,
    parse: nonNegativeNumber,
  }),
  setting({
    flag: '--augment',
    description: 'random shifts and flips of training images',
    type: 'boolean',
    defaultValue: off,
    parse: parseSwitch,
  }),
] as const;

/** Checkpoints, faults and where the run goes. */
const RUN = [
  setting({
    flag: '--resume',
    description: 'continue the run in --out from its newest checkpoint (same flags otherwise)',
    type: 'boolean',
    defaultValue: off,
    parse: parseSwitch,
  }),
  setting({
    flag: '--checkpoint-every',
    argument: '<steps>',
    description: 'also checkpoint every N steps (0: only at each epoch end)',
    type: 'number',
    defaultValue: () => 0,
    parse: nonNegativeInt,
  }),
  setting({
    flag: '--keep-checkpoints',
    argument: '<n>',
    description: 'checkpoints kept under <out>/checkpoints',
    type: 'number',
    defaultValue: () => 3,
    parse: positiveInt,
  }),
  setting({
    flag: '--worker-timeout',
    argument: '<seconds>',
    description:
      'drop a worker that has not returned its share this long after a step began, or that sent nothing this long while idle or evaluating',
    type: 'number',
    defaultValue: () => 10,
    parse: positiveNumber,
  }),
  setting({
    flag: '--wait-timeout',
    argument: '<seconds>',
    description:
      'give up when fewer than --min-workers are attached for this long (0: wait forever)',
    type: 'number',
    defaultValue: () => 300,
    parse: nonNegativeNumber,
  }),
  setting({
    flag: '--max-workers',
    argument: '<n>',
    description: 'refuse joins beyond this many workers (0: no limit)',
    type: 'number',
    defaultValue: () => 0,
    parse: nonNegativeInt,
  }),
  setting({
    flag: '--seed',
    argument: '<n>',
    description: 'seed for initialisation, shuffling and augmentation',
    type: 'number',
    defaultValue: () => 42,
    parse: nonNegativeInt,
  }),
  setting({
    flag: '--backend',
    argument: '<name>',
    description: 'compute backend',
    type: 'string',
    choices: BACKENDS,
    defaultValue: () => 'auto',
    parse: oneOf(BACKENDS),
  }),
  setting({
    flag: '--limit-train',
    argument: '<n>',
    description: 'use only the first N training images (0: all)',
    type: 'number',
    defaultValue: () => 0,
    parse: nonNegativeInt,
  }),
  setting({
    flag: '--limit-test',
    argument: '<n>',
    description: 'use only the first N test images (0: all)',
    type: 'number',
    defaultValue: () => 0,
    parse: nonNegativeInt,
  }),
  setting({
    flag: '--eval-batch-size',
    argument: '<n>',
    description: 'images per forward pass during evaluation',
    type: 'number',
    defaultValue: () => 500,
    parse: positiveInt,
  }),
  setting({
    flag: '--out',
    argument: '<dir>',
    description: 'folder for the trained model and the run summary',
    type: 'string',
    path: true,
    defaultValue: defaultOut,
    defaultDescription: 'runs/<date-time>',
    parse: nonEmpty('a folder'),
  }),
  setting({
    flag: '--log-format',
    argument: '<format>',
    description: 'json: one event per line on stdout',
    type: 'string',
    choices: LOG_FORMATS,
    defaultValue: () => 'text',
    parse: oneOf(LOG_FORMATS),
  }),
  setting({
    flag: '--log-level',
    argument: '<level>',
    description: 'log level for stderr',
    type: 'string',
    choices: LogLevels,
    defaultValue: () => 'info',
    parse: oneOf(LogLevels),
  }),
] as const;

/** The settings of `train`, in the order help and --print-config show them. */
export const TRAIN_SETTINGS = [...SERVING, ...SECURITY, ...EXCHANGE, ...JOB, ...RUN] as const;

/**
 * The settings model of `train`: its table, what messages about its config file say, and the
 * token's two forms (`--token`, `--token-file`), resolved as the worker resolves them.
 */
export const TRAIN_SETTINGS_MODEL = defineSettings({
  settings: TRAIN_SETTINGS,
  subject: 'coordinator',
  example: '{"epochs": 30, "listen": "0.0.0.0:7070"}',
  fileForms: [TOKEN_FILE_FORM],
  presets: { setting: 'preset', presets: TRAIN_PRESETS },
});

/** The resolved settings of `train`, typed from {@link TRAIN_SETTINGS}. */
export type TrainSettings = SettingsOf<typeof TRAIN_SETTINGS>;

/** The job's config from `train`'s resolved settings. */
export function toTrainConfig(s: TrainSettings): TrainConfig {
  return {
    model: s.model,
    hyperparameters: hyperparameterRecord(s.hp),
    plugins: [...s.plugin],
    dataset: s.dataset,
    ...(s.imageSize === undefined ? {} : { imageSize: parseImageSize(s.imageSize) }),
    ...(s.colorMode === undefined ? {} : { colorMode: s.colorMode }),
    ...(s.validationSplit === undefined ? {} : { validationSplit: s.validationSplit }),
    ...(s.classNames === undefined ? {} : { classNames: s.classNames.split(',') }),
    ...(s.dataDir === undefined ? {} : { dataDir: s.dataDir }),
    download: !s.noDownload,
    epochs: s.epochs,
    batchSize: s.batchSize,
    learningRate: s.learningRate,
    optimizer: s.optimizer,
    momentum: s.momentum,
    weightDecay: s.weightDecay,
    schedule: s.schedule,
    warmupEpochs: s.warmupEpochs,
    seed: s.seed,
    backend: s.backend,
    limitTrain: s.limitTrain,
    limitTest: s.limitTest,
    evalBatchSize: s.evalBatchSize,
    augment: s.augment,
    out: s.out,
    resume: s.resume,
    checkpointEvery: s.checkpointEvery,
    keepCheckpoints: s.keepCheckpoints,
    logFormat: s.logFormat,
    exchange: s.exchange,
  };
}

const WIRE_DTYPE_VALUES = {
  float32: DataType.FLOAT32,
  float16: DataType.FLOAT16,
  bfloat16: DataType.BFLOAT16,
} as const;

/**
 * The distributed mode's settings (serving, membership, the wire, security) from `train`'s
 * resolved settings: the one mapping both the CLI and `train()` use, so they share defaults.
 */
export function toDistributedSettings(s: TrainSettings): DistributedSettings {
  return {
    listen: s.listen,
    ...(s.healthListen === undefined ? {} : { healthListen: s.healthListen }),
    localWorkers: s.localWorkers,
    minWorkers: s.minWorkers ?? Math.max(1, s.localWorkers),
    gradientDtype: WIRE_DTYPE_VALUES[s.gradientDtype],
    weightsDtype: WIRE_DTYPE_VALUES[s.weightsDtype],
    maxWorkers: s.maxWorkers,
    workerTimeoutMs: s.workerTimeout * 1000,
    waitTimeoutMs: s.waitTimeout * 1000,
    security: securityFlags(s),
  };
}

/** The security settings; the settings model has already read a token file into `token`. */
function securityFlags(s: TrainSettings): ServerSecurityFlags {
  return {
    insecure: s.insecure,
    ...(s.token === undefined ? {} : { token: s.token }),
    ...(s.tlsCert === undefined ? {} : { tlsCert: s.tlsCert }),
    ...(s.tlsKey === undefined ? {} : { tlsKey: s.tlsKey }),
    ...(s.tlsCa === undefined ? {} : { tlsCa: s.tlsCa }),
  };
}

/**
 * Where the run's dashboard listens (`--dashboard`), with the job's token; undefined when it is
 * `off`. `defaulted`: the address is the default one, which may move to a free port.
 */
export function toDashboardSettings(
  s: TrainSettings,
  defaulted: boolean,
): DashboardSettings | undefined {
  if (s.dashboard === 'off') return undefined;
  return {
    address: s.dashboard,
    fallback: defaulted,
    ...(s.token === undefined ? {} : { token: s.token }),
  };
}
