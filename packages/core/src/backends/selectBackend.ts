import * as tf from '@tensorflow/tfjs';
import { ShardlineError } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import { detectNvidiaGpus, type GpuProbe } from './gpu.js';
import { importOptional } from './importOptional.js';
import { registerWasmTrainingKernels } from './wasmTrainingKernels.js';

// Diagnostics (`shardline-worker doctor`) look for the optional native packages where the
// loader does, so they report on the copy a worker would actually load.
export { locateOptional } from './importOptional.js';

/** The compute backends Shardline can run on, fastest first. */
export const BackendNames = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
/** One of {@link BackendNames}. */
export type BackendName = (typeof BackendNames)[number];
/** A backend name, or `auto` to take the first that works in {@link BackendNames} order. */
export type BackendPreference = 'auto' | BackendName;

/** Why one backend was or was not used. */
export interface BackendAttempt {
  backend: BackendName;
  outcome: 'chosen' | 'skipped' | 'failed';
  reason: string;
}

/** The result of {@link selectBackend}. */
export interface BackendSelection {
  /** The backend now active. */
  backend: BackendName;
  /** The TensorFlow.js backend name behind it (`tensorflow`, `wasm`, `cpu`). */
  tfBackend: string;
  /** Every backend considered, in order, with why it was chosen, skipped or failed. */
  attempts: BackendAttempt[];
}

/** Options for {@link selectBackend}. */
export interface SelectBackendOptions {
  /** Receives one `info` record for the choice and one `debug`/`warn` per skipped backend. */
  logger?: Logger;
  /** GPU detection, replaceable for tests. */
  detectGpus?: () => GpuProbe;
  /** Module loader, replaceable for tests. */
  importModule?: (specifier: string) => Promise<unknown>;
}

/** Parses a `--backend` value, with an error that lists the valid ones. */
export function parseBackendPreference(value: string): BackendPreference {
  if (value === 'auto' || (BackendNames as readonly string[]).includes(value))
    return value as BackendPreference;
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `Unknown backend "${value}": expected auto or one of ${BackendNames.join(', ')}.`,
  );
}

type Loader = (ctx: Required<Omit<SelectBackendOptions, 'logger'>>) => Promise<string>;

const nativeHint =
  'It downloads libtensorflow while installing; reinstall it where that download can succeed, ' +
  'or pick --backend wasm.';

const loaders: Record<BackendName, Loader> = {
  'tensorflow-gpu': async ({ detectGpus, importModule }) => {
    const gpus = detectGpus();
    if (gpus.count === 0) throw new Skip(`no GPU visible (${gpus.source})`);
    await loadNative('@tensorflow/tfjs-node-gpu', importModule);
    return 'tensorflow';
  },
  tensorflow: async ({ importModule }) => {
    await loadNative('@tensorflow/tfjs-node', importModule);
    return 'tensorflow';
  },
  wasm: async ({ importModule }) => {
    await importModule('@tensorflow/tfjs-backend-wasm');
    registerWasmTrainingKernels();
    return 'wasm';
  },
  cpu: async () => 'cpu',
};

class Skip extends Error {}

async function loadNative(
  specifier: string,
  importModule: (s: string) => Promise<unknown>,
): Promise<void> {
  // tfjs-node and tfjs-node-gpu both register a backend called "tensorflow"; whichever loaded
  // first owns it, so never load the second.
  if (tf.findBackend('tensorflow') !== null) return;
  try {
    await importModule(specifier);
  } catch (error) {
    const first = String((error as Error)?.message ?? error)
      .split('\n')[0]!
      .trim();
    throw new Skip(`${specifier} is not loadable: ${first} ${nativeHint}`);
  }
}

/**
 * Chooses and activates the TensorFlow.js backend. With `auto` it tries `tensorflow-gpu`
 * (when @tensorflow/tfjs-node-gpu loads and a GPU is visible), then `tensorflow`
 * (@tensorflow/tfjs-node), then `wasm` (with Shardline's training kernels), then `cpu`, and
 * logs which it chose and why each earlier one was skipped. A named backend that cannot be
 * loaded is an error (`BACKEND_UNAVAILABLE`), never a silent fallback.
 *
 * @example
 * ```ts
 * const { backend, attempts } = await selectBackend('auto', { logger });
 * ```
 */
export async function selectBackend(
  preference: BackendPreference = 'auto',
  options: SelectBackendOptions = {},
): Promise<BackendSelection> {
  const logger = options.logger ?? silentLogger;
  const ctx = {
    detectGpus: options.detectGpus ?? (() => detectNvidiaGpus()),
    importModule: options.importModule ?? importOptional,
  };
  const order: readonly BackendName[] = preference === 'auto' ? BackendNames : [preference];
  const attempts: BackendAttempt[] = [];
  for (const backend of order) {
    try {
      const tfBackend = await loaders[backend](ctx);
      const ok = await tf.setBackend(tfBackend);
      if (!ok) throw new Error(`TensorFlow.js could not initialise its "${tfBackend}" backend`);
      await tf.ready();
      attempts.push({
        backend,
        outcome: 'chosen',
        reason: preference === 'auto' ? 'first backend that loaded' : 'requested with --backend',
      });
      logger.info('compute backend chosen', {
        backend,
        tfBackend,
        preference,
        skipped: summarise(attempts),
      });
      return { backend, tfBackend, attempts };
    } catch (error) {
      const reason =
        error instanceof Skip
          ? error.message
          : `failed to initialise: ${(error as Error)?.message ?? error}`;
      attempts.push({ backend, outcome: error instanceof Skip ? 'skipped' : 'failed', reason });
      logger.debug('compute backend skipped', { backend, reason });
    }
  }
  throw new ShardlineError(
    'BACKEND_UNAVAILABLE',
    `Backend "${preference}" is not available: ${summarise(attempts)}. ` +
      (preference === 'auto'
        ? 'Reinstall @tensorflow/tfjs.'
        : 'Use --backend auto to fall back to what works here.'),
    { details: { attempts } },
  );
}

function summarise(attempts: BackendAttempt[]): string {
  return attempts
    .filter((a) => a.outcome !== 'chosen')
    .map((a) => `${a.backend}: ${a.reason}`)
    .join('; ');
}
