/**
 * writeShapesFolder: a small synthetic image folder (one subfolder per class of coloured shapes,
 * as PNG files) for trying the image-folder path end to end without data of one's own, and for
 * tests that need real files. Drawn from a seed, so the same call writes the same bytes.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardlineError } from '@shardline/core/errors';
import { createRng, type Rng } from './random.js';

/** The classes {@link writeShapesFolder} draws, in label order (sorted, as the loader sorts). */
export const SHAPE_CLASSES = ['circle', 'cross', 'square', 'triangle'] as const;

/** Options for {@link writeShapesFolder}. */
export interface ShapesFolderOptions {
  /** Images per class. Default 100. */
  perClass?: number;
  /** Side of each square image in pixels, 16 to 512. Default 32. */
  size?: number;
  /** Seed of every position, size and colour. Default 0. */
  seed?: number;
  /**
   * Write `train/<class>` and `test/<class>` with this fraction of each class in test, instead
   * of `<class>` folders to split with `validationSplit`. Default: no split folders.
   */
  testFraction?: number;
}

/** What {@link writeShapesFolder} wrote. */
export interface ShapesFolder {
  readonly dir: string;
  readonly classNames: readonly string[];
  /** Files written, over all classes and splits. */
  readonly files: number;
}

/** Whether pixel (x, y) is inside the shape centred at (cx, cy) with half-size r. */
function inside(
  shape: (typeof SHAPE_CLASSES)[number],
  x: number,
  y: number,
  cx: number,
  cy: number,
  r: number,
): boolean {
  const dx = x - cx;
  const dy = y - cy;
  switch (shape) {
    case 'circle':
      return dx * dx + dy * dy <= r * r;
    case 'square':
      return Math.abs(dx) <= r * 0.8 && Math.abs(dy) <= r * 0.8;
    case 'cross':
      return (
        (Math.abs(dx) <= r * 0.3 && Math.abs(dy) <= r) ||
        (Math.abs(dy) <= r * 0.3 && Math.abs(dx) <= r)
      );
    case 'triangle': {
      // Apex up: the width grows linearly from the top (dy = -r) to the base (dy = r).
      if (dy < -r || dy > r) return false;
      return Math.abs(dx) <= ((dy + r) / (2 * r)) * r;
    }
  }
}

/** One image: a dark background with a little noise, and one bright shape of random colour. */
function drawShape(shape: (typeof SHAPE_CLASSES)[number], size: number, rng: Rng): Buffer {
  const pixels = Buffer.alloc(size * size * 3);
  const background = [rng.nextInt(60), rng.nextInt(60), rng.nextInt(60)];
  const colour = [128 + rng.nextInt(128), 128 + rng.nextInt(128), 128 + rng.nextInt(128)];
  const r = size * (0.2 + rng.nextFloat() * 0.15);
  const margin = Math.ceil(r) + 1;
  const cx = margin + rng.nextFloat() * Math.max(0, size - 2 * margin);
  const cy = margin + rng.nextFloat() * Math.max(0, size - 2 * margin);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const on = inside(shape, x + 0.5, y + 0.5, cx, cy, r);
      for (let c = 0; c < 3; c++) {
        const base = on ? colour[c]! : background[c]!;
        pixels[(y * size + x) * 3 + c] = Math.min(255, base + rng.nextInt(16));
      }
    }
  }
  return pixels;
}

/**
 * Writes `perClass` PNG images of each of {@link SHAPE_CLASSES} under `dir` (created if needed):
 * `dir/<class>/<class>-0001.png`, or with `testFraction`, `dir/train/<class>/...` and
 * `dir/test/<class>/...`. A CNN tells these apart almost perfectly after a few epochs, which makes
 * the folder a quick end-to-end check. Needs sharp (a dependency of this package) to encode PNGs.
 *
 * @example
 * ```ts
 * await writeShapesFolder('/tmp/shapes', { perClass: 150, size: 32, seed: 1 });
 * const { train, test } = await loadImageFolder('/tmp/shapes', { validationSplit: 0.2 });
 * ```
 */
export async function writeShapesFolder(
  dir: string,
  options: ShapesFolderOptions = {},
): Promise<ShapesFolder> {
  const perClass = options.perClass ?? 100;
  const size = options.size ?? 32;
  const seed = options.seed ?? 0;
  const testFraction = options.testFraction;
  if (!Number.isSafeInteger(perClass) || perClass < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `perClass must be a whole number of at least 1; found ${String(perClass)}.`,
    );
  }
  if (!Number.isSafeInteger(size) || size < 16 || size > 512) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `size must be a whole number from 16 to 512; found ${String(size)}.`,
    );
  }
  if (testFraction !== undefined && !(testFraction > 0 && testFraction < 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `testFraction must be between 0 and 1 (exclusive); found ${String(testFraction)}.`,
    );
  }
  const { default: sharp } = await import('sharp');
  let files = 0;
  for (const [label, shape] of SHAPE_CLASSES.entries()) {
    const rng = createRng(seed, label);
    const testCount =
      testFraction === undefined ? 0 : Math.max(1, Math.round(perClass * testFraction));
    for (let i = 0; i < perClass; i++) {
      const split = testFraction === undefined ? [] : [i < testCount ? 'test' : 'train'];
      const folder = join(dir, ...split, shape);
      if (i === 0 || i === testCount) await mkdir(folder, { recursive: true });
      const raw = drawShape(shape, size, rng);
      const name = `${shape}-${String(i + 1).padStart(4, '0')}.png`;
      await sharp(raw, { raw: { width: size, height: size, channels: 3 } })
        .png()
        .toFile(join(folder, name));
      files++;
    }
  }
  return { dir, classNames: [...SHAPE_CLASSES], files };
}
