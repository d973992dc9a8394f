/**
 * What a finished run leaves under `--out`: the trained model in the TensorFlow.js layers
 * format (`model/model.json` + `model/weights.bin`) and `summary.json`, a machine-readable
 * account of the run. Both are written atomically. Beside them, the run record `events.jsonl`
 * (written as the run goes, report/recorder.ts) and, built from both, `report.html` with
 * `plots/*.svg` (report/report.ts).
 */
import { existsSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type ParamLayout, ShardlineError, writeFileAtomic } from '@shardline/core';
import type { ClassificationReport } from '@shardline/metrics';
import { type ModelSummary, saveModel, summary as summarizeModel } from '@shardline/models';
import type { EpochMetrics } from '@shardline/training';
import type * as tf from '@tensorflow/tfjs';
import type { JobData } from './jobData.js';
import type { JobPlugin } from './jobModel.js';
import type { TrainConfig } from './trainConfig.js';

/** Everything summary.json records. */
export interface RunRecord {
  config: TrainConfig;
  backend: string;
  history: EpochMetrics[];
  layout: ParamLayout;
  classNames: readonly string[];
  /** The data trained on: its image shape, and for a folder, the options that decoded it. */
  data: JobData;
  /** Plugins the model needs to be loaded again. */
  plugins: readonly JobPlugin[];
  evaluation: ClassificationReport;
  seconds: number;
  /** Reports refused from workers, by reason (distributed runs only). */
  rejectedReports?: Readonly<Record<string, number>>;
}

/** The run summary's file name under `--out`. */
export const SUMMARY_FILE = 'summary.json';

/**
 * summary.json as {@link writeRunOutputs} writes it (version 1). Fields added since version 1
 * came out are optional: a summary written before them lacks them.
 */
export interface RunSummaryFile {
  version: 1;
  /** ISO time the outputs were written. */
  finishedAt: string;
  /** Seconds from this process's start of the job to its outputs (its last session, if resumed). */
  seconds: number;
  backend: string;
  config: TrainConfig;
  parameters: number;
  layoutFingerprint: string;
  history: EpochMetrics[];
  final: EpochMetrics | undefined;
  evaluation: ClassificationReport;
  rejectedReports?: Readonly<Record<string, number>>;
  modelPath: string;
  /** The model's layers, output shapes and parameter counts (Keras's `model.summary()`). */
  modelSummary?: ModelSummary;
}

/** Saves the model and the run summary under `out`; returns their paths. */
export async function writeRunOutputs(
  out: string,
  model: tf.LayersModel,
  record: RunRecord,
): Promise<{ modelPath: string; summaryPath: string }> {
  const modelPath = join(out, 'model');
  const last = record.history[record.history.length - 1];
  await saveModel(model, modelPath, { metadata: { run: savedRunMetadata(record) } });
  const summaryPath = join(out, SUMMARY_FILE);
  const summary: RunSummaryFile = {
    version: 1,
    finishedAt: new Date().toISOString(),
    seconds: record.seconds,
    backend: record.backend,
    config: record.config,
    parameters: record.layout.size,
    layoutFingerprint: record.layout.fingerprint,
    history: record.history,
    final: last,
    evaluation: record.evaluation,
    ...(record.rejectedReports ? { rejectedReports: record.rejectedReports } : {}),
    modelPath,
    // Recorded here, where the model is at hand, so the report needs no tfjs (or plugins) to
    // describe it.
    modelSummary: summarizeModel(model),
  };
  await writeFileAtomic(summaryPath, `${JSON.stringify(summary, null, 2)}\n`);
  return { modelPath, summaryPath };
}

/**
 * What the saved model.json records about its run (`userDefinedMetadata.run`), so that
 * `evaluate` and `predict` decode images the way training did: the input's size and colour mode,
 * the class names in label order, and for an image folder the options that split and decoded it.
 */
export interface SavedRunMetadata {
  /** The built-in dataset's name, or the image folder's absolute path. */
  dataset: string;
  classNames: string[];
  testAccuracy?: number;
  input: { height: number; width: number; channels: number; colorMode: 'grayscale' | 'rgb' };
  imageFolder?: {
    folder: string;
    fingerprint: string;
    imageSize?: { height: number; width: number };
    colorMode?: 'grayscale' | 'rgb';
    classNames?: string[];
    validationSplit?: number;
    seed: number;
  };
  plugins?: { name: string; path: string; sha256: string }[];
}

function savedRunMetadata(record: RunRecord): SavedRunMetadata {
  const { config, data } = record;
  const last = record.history[record.history.length - 1];
  const spec = data.folder?.spec;
  return {
    dataset: spec ? spec.folder : config.dataset,
    classNames: [...record.classNames],
    ...(last === undefined ? {} : { testAccuracy: last.test_accuracy }),
    input: {
      height: data.height,
      width: data.width,
      channels: data.channels,
      colorMode: data.channels === 1 ? 'grayscale' : 'rgb',
    },
    ...(spec
      ? {
          imageFolder: {
            folder: spec.folder,
            fingerprint: spec.fingerprint,
            ...(config.imageSize ? { imageSize: config.imageSize } : {}),
            ...(config.colorMode ? { colorMode: config.colorMode } : {}),
            ...(config.classNames ? { classNames: config.classNames } : {}),
            ...(config.validationSplit === undefined
              ? {}
              : { validationSplit: config.validationSplit }),
            seed: config.seed,
          },
        }
      : {}),
    ...(record.plugins.length > 0
      ? { plugins: record.plugins.map(({ name, path, sha256 }) => ({ name, path, sha256 })) }
      : {}),
  };
}

/** A prepared `--out` folder; `discardIfEmpty` removes it again if this run created it and wrote nothing. */
export interface OutDir {
  path: string;
  discardIfEmpty(): Promise<void>;
}

/**
 * Checks `out` before training starts, so a run fails in its first second rather than after
 * hours: the folder must be creatable, and must not already hold a finished run (which this
 * one would overwrite). A resumed run reuses its folder, which must not be finished either.
 */
export async function prepareOutDir(out: string, resume = false): Promise<OutDir> {
  for (const name of ['summary.json', 'model']) {
    if (existsSync(join(out, name))) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        resume
          ? `--resume ${out}: that run already finished (found ${name}); there is nothing to resume.`
          : `--out ${out} already holds a run (found ${name}); it would be overwritten. Choose another --out, or move that run away first.`,
      );
    }
  }
  if (resume && !existsSync(out)) {
    throw new ShardlineError(
      'NOT_FOUND',
      `--resume ${out}: no such folder. Pass the --out folder of the run to continue.`,
    );
  }
  const created = (await mkdir(out, { recursive: true })) !== undefined;
  return {
    path: out,
    async discardIfEmpty() {
      if (created) await rmdir(out).catch(() => {});
    },
  };
}
