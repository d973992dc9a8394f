/**
 * `evaluate` and `predict`: the commands that work on a finished run's saved model. Unlike
 * `train` they take flags only (no SHARDLINE_* variables or config file): they are one-off
 * inspections, and a SHARDLINE_DATASET meant for training runs should not silently pick the data
 * they score. Failures throw, and runCli prints the one-line reason and exits 1.
 */
import {
  BackendNames,
  type BackendPreference,
  createLogger,
  type Logger,
  type LogLevel,
  LogLevels,
  parseLogLevel,
  ShardlineError,
} from '@shardline/core';
import { isExpectation } from '@shardline/core/settings';
import { formatClassificationReport, formatConfusionMatrix } from '@shardline/metrics';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_EVAL_BATCH_SIZE, type EvaluationResult, evaluateSavedModel } from './evaluate.js';
import { nonNegativeInt, positiveInt } from './parsers.js';
import { DEFAULT_TOP, type ImagePrediction, predictImages } from './predict.js';
import type { ReporterStreams } from './reporter.js';

/** Where `evaluate` and `predict` read their environment (cache and data locations). */
export interface InspectCommandContext {
  env?: NodeJS.ProcessEnv;
}

/** Turns a parser's Expectation into commander's error, so commander names the flag. */
function flagParser<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (error) {
      throw isExpectation(error) ? new InvalidArgumentError(`${error.message}.`) : error;
    }
  };
}

function fraction(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n >= 1) {
    throw new InvalidArgumentError('Expected a fraction between 0 and 1 (exclusive), such as 0.2.');
  }
  return n;
}

function classNameList(value: string): string[] {
  const names = value.split(',').map((n) => n.trim());
  if (names.length < 2 || names.some((n) => n === '')) {
    throw new InvalidArgumentError(
      'Expected two or more class names separated by commas, in label order, such as cat,dog.',
    );
  }
  if (new Set(names).size !== names.length) {
    throw new InvalidArgumentError('Expected each class name once.');
  }
  return names;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** The flags both commands share: the model, its plugins and names, the backend, logging. */
function addModelOptions(command: Command): Command {
  return command
    .requiredOption(
      '--model <dir>',
      "the saved model: a run's --out folder, its model/ folder, or a model.json",
    )
    .addOption(
      new Option(
        '--plugin <module>',
        'ES module registering custom layers the model needs (repeatable)',
      )
        .argParser(collect)
        .default([] as string[], 'none'),
    )
    .option(
      '--class-names <a,b,c>',
      "class names in label order, for a model.json without Shardline run metadata (or to rename the model's classes)",
      classNameList,
    )
    .addOption(
      new Option('--backend <name>', 'compute backend')
        .choices(['auto', ...BackendNames])
        .default('auto'),
    )
    .addOption(
      new Option(
        '--log-level <level>',
        'least severe log record written to stderr (default: SHARDLINE_LOG_LEVEL, else warn)',
      ).choices(LogLevels),
    )
    .option('--json', 'print the result as JSON on stdout');
}

interface ModelFlags {
  model: string;
  plugin: string[];
  classNames?: string[];
  backend: BackendPreference;
  logLevel?: LogLevel;
  json?: boolean;
}

/**
 * The result is the output, so by default only warnings reach stderr (train's default, info,
 * would add the backend choice and data source to every call); --log-level info shows them.
 */
function commandLogger(
  flags: ModelFlags,
  streams: ReporterStreams,
  env: NodeJS.ProcessEnv,
): Logger {
  const fromEnv = env.SHARDLINE_LOG_LEVEL;
  return createLogger({
    level: flags.logLevel ?? (fromEnv ? parseLogLevel(fromEnv) : 'warn'),
    format: 'text',
    sink: streams.stderr,
  });
}

interface EvaluateFlags extends ModelFlags {
  dataset?: string;
  dataDir?: string;
  download: boolean;
  batchSize: number;
  limitTest?: number;
  validationSplit?: number;
  seed?: number;
}

/**
 * Adds `evaluate`: a saved model's accuracy, loss, top-k, per-class precision / recall / F1 and
 * confusion matrix on a test set (text tables, or one JSON object with `--json`).
 *
 * @example
 * ```sh
 * shardline-coordinator evaluate --model runs/quick --limit-test 1000
 * ```
 */
export function addEvaluateCommand(
  program: Command,
  streams: ReporterStreams,
  context: InspectCommandContext = {},
): void {
  const evaluate = program
    .command('evaluate')
    .description(
      "Score a saved model on a test set: the dataset's test split, an image folder's test/ folder, " +
        "the run's own held-out images, or every image of another folder.",
    );
  addModelOptions(evaluate)
    .option(
      '--dataset <name|dir>',
      'built-in dataset name or image folder (default: the one the run trained on)',
    )
    .option('--data-dir <dir>', 'folder holding the built-in dataset files')
    .option('--no-download', 'never download a built-in dataset; fail when no local copy exists')
    .option(
      '--batch-size <n>',
      'images per forward pass',
      flagParser(positiveInt),
      DEFAULT_EVAL_BATCH_SIZE,
    )
    .option(
      '--limit-test <n>',
      'evaluate only the first N test images (0: all)',
      flagParser(nonNegativeInt),
    )
    .option(
      '--validation-split <f>',
      "image folder without train/ and test/: evaluate this held-out fraction (default: the run's own split for its folder, else every image)",
      fraction,
    )
    .option(
      '--seed <n>',
      'seed of --validation-split, only with it (default 42, as train)',
      flagParser(nonNegativeInt),
    )
    .action(async (flags: EvaluateFlags) => {
      const env = context.env ?? process.env;
      const logger = commandLogger(flags, streams, env);
      const result = await evaluateSavedModel({
        model: flags.model,
        ...(flags.dataset === undefined ? {} : { dataset: flags.dataset }),
        ...(flags.dataDir === undefined ? {} : { dataDir: flags.dataDir }),
        download: flags.download,
        plugins: flags.plugin,
        ...(flags.classNames === undefined ? {} : { classNames: flags.classNames }),
        batchSize: flags.batchSize,
        ...(flags.limitTest === undefined ? {} : { limitTest: flags.limitTest }),
        ...(flags.validationSplit === undefined ? {} : { validationSplit: flags.validationSplit }),
        ...(flags.seed === undefined ? {} : { seed: flags.seed }),
        backend: flags.backend,
        env,
        progressStream: streams.stderr,
        logger,
      });
      streams.stdout.write(
        flags.json ? `${JSON.stringify(evaluationJson(result))}\n` : formatEvaluation(result),
      );
    });
}

/** The `--json` form: where the numbers come from, then the report's fields. */
function evaluationJson(result: EvaluationResult): Record<string, unknown> {
  const { report, ...where } = result;
  return { ...where, ...report };
}

/** The text form: what was evaluated, the per-class report, then the confusion matrix. */
export function formatEvaluation(result: EvaluationResult): string {
  const { report } = result;
  const lines = [
    `model    ${result.model}`,
    `dataset  ${result.dataset} (${result.split}, ${report.count} images)`,
    ...(result.backend === undefined ? [] : [`backend  ${result.backend}`]),
    `accuracy ${report.accuracy.toFixed(4)}  loss ${report.loss.toFixed(4)}`,
    '',
    formatClassificationReport(report),
    '',
    'confusion matrix (rows: true class, columns: predicted class)',
    formatConfusionMatrix(report.confusionMatrix, { classNames: report.classNames }),
  ];
  return `${lines.join('\n')}\n`;
}

interface PredictFlags extends ModelFlags {
  top: number;
}

/**
 * Adds `predict`: the top classes of each image file, one line per image (`path: class (0.93),
 * ...`), or a JSON array with `--json`. An unreadable image gets an error line on stderr, the
 * others are still printed, and the command exits 1.
 *
 * @example
 * ```sh
 * shardline-coordinator predict --model runs/quick --top 2 shoe.png shirt.jpg
 * ```
 */
export function addPredictCommand(
  program: Command,
  streams: ReporterStreams,
  context: InspectCommandContext = {},
): void {
  const predict = program
    .command('predict')
    .description(
      'Print the most probable classes of image files under a saved model, decoding them as training did.',
    )
    .argument('<image...>', 'image files (PNG, JPEG, WebP, GIF, TIFF, AVIF)');
  addModelOptions(predict)
    .option('--top <n>', 'classes shown per image', flagParser(positiveInt), DEFAULT_TOP)
    .action(async (images: string[], flags: PredictFlags) => {
      const logger = commandLogger(flags, streams, context.env ?? process.env);
      const results = await predictImages({
        model: flags.model,
        images,
        plugins: flags.plugin,
        ...(flags.classNames === undefined ? {} : { classNames: flags.classNames }),
        top: flags.top,
        backend: flags.backend,
        logger,
      });
      if (flags.json) {
        streams.stdout.write(`${JSON.stringify(results)}\n`);
      } else {
        for (const r of results) {
          if ('error' in r) streams.stderr.write(`shardline-coordinator: ${r.path}: ${r.error}\n`);
          else streams.stdout.write(`${formatPrediction(r)}\n`);
        }
      }
      requireAllRead(results);
    });
}

/** One image's line: `path: class (0.93), class (0.05)`. */
export function formatPrediction(result: {
  path: string;
  predictions: readonly { className: string; probability: number }[];
}): string {
  const classes = result.predictions.map((p) => `${p.className} (${p.probability.toFixed(2)})`);
  return `${result.path}: ${classes.join(', ')}`;
}

/** Exit 1 when any image failed, after the others were printed. */
function requireAllRead(results: readonly ImagePrediction[]): void {
  const failed = results.filter((r) => 'error' in r).map((r) => r.path);
  if (failed.length === 0) return;
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `${failed.length} of ${results.length} images could not be read (${failed.slice(0, 5).join(', ')}${failed.length > 5 ? ', ...' : ''}); the others were predicted.`,
    { details: { failed } },
  );
}
