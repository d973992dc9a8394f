import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { detectNvidiaGpus } from '../src/backends/gpu.js';
import { locateOptional } from '../src/backends/importOptional.js';
import { parseBackendPreference, selectBackend } from '../src/backends/selectBackend.js';
import { hasErrorCode } from '../src/errors.js';
import { createLogger } from '../src/logger.js';

// This machine (and CI) has no GPU, and the native TensorFlow packages are installed but
// unloadable (their install could not download libtensorflow): exactly the fallback path.
describe('selectBackend', () => {
  it('auto falls back past unloadable native backends to wasm and logs why', async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'debug',
      format: 'json',
      sink: { write: (l) => lines.push(l) },
    });
    const selection = await selectBackend('auto', {
      logger,
      detectGpus: () => ({ count: 0, source: 'test: none' }),
    });
    expect(selection.backend).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(selection.attempts.map((a) => [a.backend, a.outcome])).toEqual([
      ['tensorflow-gpu', 'skipped'],
      ['tensorflow', 'skipped'],
      ['wasm', 'chosen'],
    ]);
    expect(selection.attempts[0]!.reason).toContain('no GPU visible (test: none)');
    expect(selection.attempts[1]!.reason).toMatch(
      /@tensorflow\/tfjs-node is not loadable: .*libtensorflow/,
    );
    const chosen = lines.map((l) => JSON.parse(l)).find((r) => r.msg === 'compute backend chosen');
    expect(chosen).toMatchObject({ level: 'info', backend: 'wasm', tfBackend: 'wasm' });
    expect(chosen.skipped).toContain('tensorflow-gpu: no GPU visible');
  });

  it('with a GPU visible, still skips tensorflow-gpu when its package cannot load', async () => {
    const selection = await selectBackend('auto', {
      detectGpus: () => ({ count: 1, source: 'test: one' }),
    });
    expect(selection.attempts[0]).toMatchObject({ backend: 'tensorflow-gpu', outcome: 'skipped' });
    expect(selection.attempts[0]!.reason).toContain('@tensorflow/tfjs-node-gpu is not loadable');
  });

  it('refuses a named backend that cannot load instead of silently falling back', async () => {
    const error = await selectBackend('tensorflow').catch((e: unknown) => e);
    expect(hasErrorCode(error, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((error as Error).message).toMatch(
      /Backend "tensorflow" is not available: .*Use --backend auto/,
    );
  });

  it('selects cpu when asked', async () => {
    expect((await selectBackend('cpu')).backend).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('parses preferences and rejects unknown names with the valid list', () => {
    expect(parseBackendPreference('wasm')).toBe('wasm');
    expect(() => parseBackendPreference('cuda')).toThrow(
      /expected auto or one of tensorflow-gpu, tensorflow, wasm, cpu/,
    );
  });
});

describe('detectNvidiaGpus', () => {
  it('reports none when CUDA_VISIBLE_DEVICES hides them all', () => {
    expect(detectNvidiaGpus({ CUDA_VISIBLE_DEVICES: '-1' }).count).toBe(0);
  });
});

describe('locateOptional', () => {
  it('finds an installed optional package where the loader would, and nothing for a missing one', () => {
    expect(locateOptional('@tensorflow/tfjs-node')).toMatch(
      /[\\/]@tensorflow[\\/]tfjs-node[\\/]dist[\\/]index\.js$/,
    );
    expect(locateOptional('@shardline/no-such-package')).toBeUndefined();
  });
});
