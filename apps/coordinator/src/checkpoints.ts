/**
 * Checkpoints under `<out>/checkpoints/step-<N>/`: the trainer's whole state, so that
 * `train --resume <out>` continues exactly where the run was. Each one is written into a
 * temporary folder (files fsynced), renamed into place in one step, and the folder fsynced: a
 * crash leaves either the whole checkpoint or none of it. Only the newest K are kept.
 *
 * Layout: `state.json` (position, history, optimizer hyperparameters, the run's config and
 * layout fingerprint, and the SHA-256 of every binary file), `params.bin` (float32 LE weights)
 * and `optimizer-<slot>.bin` (float32 LE optimizer slots).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { formatCount, type OptimizerState, ShardlineError, syncDir } from '@shardline/core';
import type { EpochMetrics, TrainerCheckpoint } from '@shardline/training';
import type { TrainConfig } from './trainConfig.js';

const FORMAT = 1;
const NAME = /^step-(\d{9})$/;

/** What state.json holds besides the binary files. */
interface StateFile {
  format: number;
  writtenAt: string;
  epoch: number;
  stepInEpoch: number;
  step: number;
  history: EpochMetrics[];
  running: TrainerCheckpoint['running'];
  optimizer: {
    kind: OptimizerState['kind'];
    step: number;
    config: OptimizerState['config'];
    slots: string[];
  };
  config: TrainConfig;
  layoutFingerprint: string;
  parameterCount: number;
  sha256: Record<string, string>;
}

/** A checkpoint read back, with the settings of the run that wrote it. */
export interface LoadedCheckpoint {
  path: string;
  checkpoint: TrainerCheckpoint;
  config: TrainConfig;
  layoutFingerprint: string;
}

/** The checkpoints folder of a run's `--out`. */
export function checkpointsDir(out: string): string {
  return join(out, 'checkpoints');
}

function bytesOf(values: Float32Array): Uint8Array {
  // Float32Array memory is little-endian on every platform Node runs on.
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

async function writeSynced(path: string, data: string | Uint8Array): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes `checkpoint` atomically under `<out>/checkpoints/` and deletes all but the newest
 * `keep`. Returns the checkpoint's folder.
 */
export async function writeCheckpoint(
  out: string,
  checkpoint: TrainerCheckpoint,
  run: { config: TrainConfig; layoutFingerprint: string },
  keep: number,
): Promise<string> {
  const dir = checkpointsDir(out);
  await mkdir(dir, { recursive: true });
  const name = `step-${String(checkpoint.step).padStart(9, '0')}`;
  const tmp = join(dir, `.${name}.${randomBytes(4).toString('hex')}.tmp`);
  await mkdir(tmp);
  try {
    const files: Record<string, Uint8Array> = { 'params.bin': bytesOf(checkpoint.params) };
    for (const [slot, values] of Object.entries(checkpoint.optimizer.slots))
      files[`optimizer-${slot}.bin`] = bytesOf(values);
    const sha256: Record<string, string> = {};
    for (const [file, data] of Object.entries(files)) {
      sha256[file] = createHash('sha256').update(data).digest('hex');
      await writeSynced(join(tmp, file), data);
    }
    const state: StateFile = {
      format: FORMAT,
      writtenAt: new Date().toISOString(),
      epoch: checkpoint.epoch,
      stepInEpoch: checkpoint.stepInEpoch,
      step: checkpoint.step,
      history: checkpoint.history,
      running: checkpoint.running,
      optimizer: {
        kind: checkpoint.optimizer.kind,
        step: checkpoint.optimizer.step,
        config: checkpoint.optimizer.config,
        slots: Object.keys(checkpoint.optimizer.slots),
      },
      config: run.config,
      layoutFingerprint: run.layoutFingerprint,
      parameterCount: checkpoint.params.length,
      sha256,
    };
    await writeSynced(join(tmp, 'state.json'), `${JSON.stringify(state, null, 2)}\n`);
    await syncDir(tmp);
    // A checkpoint of the same step (a resumed run re-writing it) is replaced whole.
    await rm(join(dir, name), { recursive: true, force: true });
    await rename(tmp, join(dir, name));
    await syncDir(dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
  const all = await listCheckpoints(out);
  for (const old of all.slice(0, Math.max(0, all.length - keep)))
    await rm(old, { recursive: true, force: true });
  return join(dir, name);
}

/** Completed checkpoint folders under `<out>/checkpoints`, oldest first. */
export async function listCheckpoints(out: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(checkpointsDir(out));
  } catch {
    return [];
  }
  return names
    .filter((n) => NAME.test(n))
    .sort()
    .map((n) => join(checkpointsDir(out), n));
}

/** Reads the newest checkpoint under `out`, verifying every file; NOT_FOUND when there is none. */
export async function readLatestCheckpoint(out: string): Promise<LoadedCheckpoint> {
  const all = await listCheckpoints(out);
  const path = all[all.length - 1];
  if (!path) {
    throw new ShardlineError(
      'NOT_FOUND',
      `No checkpoint to resume from: expected folders named step-<N> under ${checkpointsDir(out)}, found none. ` +
        'Pass the --out folder of a run that wrote checkpoints (every --checkpoint-every steps and at each epoch end).',
    );
  }
  let state: StateFile;
  try {
    state = JSON.parse(await readFile(join(path, 'state.json'), 'utf8')) as StateFile;
  } catch (error) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `Checkpoint ${path} has no readable state.json (${(error as Error).message}). Delete that folder to resume from the one before it.`,
      { cause: error },
    );
  }
  if (state.format !== FORMAT) {
    throw new ShardlineError(
      'MISMATCH',
      `Checkpoint ${path} has format ${state.format}, expected ${FORMAT}. Resume it with the Shardline version that wrote it.`,
    );
  }
  const read = async (file: string): Promise<Float32Array> => {
    const data = await readFile(join(path, file));
    const digest = createHash('sha256').update(data).digest('hex');
    if (digest !== state.sha256[file] || data.byteLength !== state.parameterCount * 4) {
      throw new ShardlineError(
        'DATA_CORRUPT',
        `Checkpoint file ${join(path, file)} is damaged: expected ${formatCount(state.parameterCount * 4)} bytes with SHA-256 ${state.sha256[file]}, ` +
          `found ${formatCount(data.byteLength)} bytes with ${digest}. Delete that checkpoint folder to resume from the one before it.`,
      );
    }
    // Copy into a fresh, aligned buffer that the trainer may update in place.
    return new Float32Array(new Uint8Array(data).buffer);
  };
  const slots: Record<string, Float32Array> = {};
  for (const slot of state.optimizer.slots) slots[slot] = await read(`optimizer-${slot}.bin`);
  return {
    path,
    config: state.config,
    layoutFingerprint: state.layoutFingerprint,
    checkpoint: {
      epoch: state.epoch,
      stepInEpoch: state.stepInEpoch,
      step: state.step,
      params: await read('params.bin'),
      optimizer: {
        kind: state.optimizer.kind,
        step: state.optimizer.step,
        config: state.optimizer.config,
        slots,
      },
      history: state.history,
      running: state.running,
    },
  };
}

/** Settings that must not change across a resume: they decide the samples and the maths. */
const PINNED: Array<keyof TrainConfig> = [
  'model',
  'hyperparameters',
  'dataset',
  'imageSize',
  'colorMode',
  'validationSplit',
  'classNames',
  'epochs',
  'batchSize',
  'learningRate',
  'optimizer',
  'momentum',
  'weightDecay',
  'schedule',
  'warmupEpochs',
  'seed',
  'limitTrain',
  'limitTest',
  'augment',
];

/** Throws MISMATCH, listing every difference, when `config` cannot continue `saved`'s run. */
export function assertResumable(saved: TrainConfig, config: TrainConfig, path: string): void {
  const differences = PINNED.filter(
    (key) => JSON.stringify(saved[key]) !== JSON.stringify(config[key]),
  ).map(
    (key) => `${key}: checkpoint ${JSON.stringify(saved[key])}, now ${JSON.stringify(config[key])}`,
  );
  if (differences.length > 0) {
    throw new ShardlineError(
      'MISMATCH',
      `Cannot resume ${path} with different settings (${differences.join('; ')}). Pass the same flags as the original run.`,
    );
  }
}
