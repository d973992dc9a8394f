/**
 * Throwaway folders under the system temp dir, removed by the test that made them even when it
 * fails (call {@link Scratch.removeAll} in `afterAll`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A set of temp folders that one test file owns. */
export interface Scratch {
  /** A new empty folder named after `label`. */
  dir(label: string): string;
  /** Removes every folder made so far. */
  removeAll(): void;
}

/** Creates an empty {@link Scratch}. */
export function createScratch(prefix: string): Scratch {
  const made: string[] = [];
  return {
    dir(label) {
      const dir = mkdtempSync(join(tmpdir(), `${prefix}-${label}-`));
      made.push(dir);
      return dir;
    },
    removeAll() {
      for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
    },
  };
}
