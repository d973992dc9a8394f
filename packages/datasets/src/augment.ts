/**
 * Seeded augmentation: random shift with zero fill, horizontal flip and random erasing.
 *
 * Each sample's transform is drawn from its own stream, keyed by (seed, epoch, sample index),
 * never from a stream shared by the batch. So a sample is augmented the same way whichever
 * batch, worker or world size it lands in: training with 1 or 4 workers sees identical inputs,
 * and re-running a step reproduces it exactly.
 */
import { ShardlineError } from '@shardline/core/errors';
import { createRng, RngStreams } from './random.js';

/** Random erasing (Zhong et al. 2017), with torchvision's `RandomErasing` defaults. */
export interface EraseOptions {
  /** Chance that a sample gets a rectangle erased. Default 0.5. */
  probability?: number;
  /** Erased area as a fraction of the image, [min, max]. Default [0.02, 0.33]. */
  area?: readonly [number, number];
  /** Height / width of the rectangle, [min, max], drawn log-uniformly. Default [0.3, 3.3]. */
  aspectRatio?: readonly [number, number];
}

/**
 * Which augmentations to apply, and the seed that makes them reproducible. All are off unless
 * asked for. Filled pixels (shifted in, erased) are 0, the background of MNIST-style images,
 * before normalisation.
 *
 * Horizontal flips suit Fashion-MNIST (a mirrored shoe is still a shoe) but not digits.
 */
export interface AugmentOptions {
  /** Same seed (and epoch) => same augmented samples. */
  seed: number;
  /** Mixed into every sample's stream so each epoch sees fresh transforms. Default 0. */
  epoch?: number;
  /** Shift by up to this many pixels in each direction (uniform integer). Default 0. */
  shift?: number;
  /** Mirror left-right with probability 1/2. Default false. */
  flip?: boolean;
  /** Random erasing; `true` uses the defaults of {@link EraseOptions}. Default off. */
  erase?: boolean | EraseOptions;
}

/** A rectangle in pixel coordinates. */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The transform drawn for one sample; see {@link sampleTransform}. */
export interface SampleTransform {
  /** Columns moved right (negative: left). */
  dx: number;
  /** Rows moved down (negative: up). */
  dy: number;
  /** Mirrored left-right (applied before the shift). */
  flip: boolean;
  /** Rectangle set to 0 (applied last, in output coordinates), or null. */
  erase: Rect | null;
}

/** The identity transform. */
export const identityTransform: SampleTransform = Object.freeze({
  dx: 0,
  dy: 0,
  flip: false,
  erase: null,
});

/**
 * The transform that {@link AugmentOptions} gives sample `sampleIndex` of an image of
 * `height` x `width`. Pure: the same arguments always give the same transform.
 */
export function sampleTransform(
  options: AugmentOptions,
  sampleIndex: number,
  height: number,
  width: number,
): SampleTransform {
  const shift = options.shift ?? 0;
  if (!Number.isInteger(shift) || shift < 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `augment.shift must be a non-negative integer number of pixels: found ${String(shift)}.`,
    );
  }
  const rng = createRng(RngStreams.augment, options.seed, options.epoch ?? 0, sampleIndex);
  // Draw in a fixed order so a transform depends only on the options, not on evaluation order.
  const dx = shift > 0 ? rng.nextInt(2 * shift + 1) - shift : 0;
  const dy = shift > 0 ? rng.nextInt(2 * shift + 1) - shift : 0;
  const flip = options.flip === true && rng.nextFloat() < 0.5;
  const erase = options.erase ? drawErase(rng, eraseDefaults(options.erase), height, width) : null;
  return { dx, dy, flip, erase };
}

function eraseDefaults(erase: true | EraseOptions): Required<EraseOptions> {
  const o = erase === true ? {} : erase;
  const probability = o.probability ?? 0.5;
  const area = o.area ?? [0.02, 0.33];
  const aspectRatio = o.aspectRatio ?? [0.3, 3.3];
  if (!(probability >= 0 && probability <= 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `augment.erase.probability must be in [0, 1]: found ${String(probability)}.`,
    );
  }
  if (!(area[0] > 0 && area[0] <= area[1] && area[1] <= 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `augment.erase.area must be [min, max] with 0 < min <= max <= 1: found [${area.join(', ')}].`,
    );
  }
  if (!(aspectRatio[0] > 0 && aspectRatio[0] <= aspectRatio[1])) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `augment.erase.aspectRatio must be [min, max] with 0 < min <= max: found [${aspectRatio.join(', ')}].`,
    );
  }
  return { probability, area, aspectRatio };
}

function drawErase(
  rng: ReturnType<typeof createRng>,
  o: Required<EraseOptions>,
  height: number,
  width: number,
): Rect | null {
  if (rng.nextFloat() >= o.probability) return null;
  const logLo = Math.log(o.aspectRatio[0]);
  const logHi = Math.log(o.aspectRatio[1]);
  // torchvision's procedure: up to 10 tries for a rectangle that fits, else leave the image be.
  for (let attempt = 0; attempt < 10; attempt++) {
    const area = height * width * (o.area[0] + rng.nextFloat() * (o.area[1] - o.area[0]));
    const ratio = Math.exp(logLo + rng.nextFloat() * (logHi - logLo));
    const h = Math.round(Math.sqrt(area * ratio));
    const w = Math.round(Math.sqrt(area / ratio));
    if (h >= 1 && w >= 1 && h < height && w < width) {
      return { y: rng.nextInt(height - h + 1), x: rng.nextInt(width - w + 1), height: h, width: w };
    }
  }
  return null;
}

/**
 * Writes one transformed image into `out` through `lut` (pixel value -> float, per channel:
 * `lut[channel * 256 + value]`). `src` is one image, HWC uint8.
 */
export function renderTransformed(
  src: Uint8Array,
  height: number,
  width: number,
  channels: number,
  t: SampleTransform,
  lut: Float32Array,
  out: Float32Array,
  outOffset: number,
): void {
  const { dx, dy, flip, erase } = t;
  let o = outOffset;
  for (let y = 0; y < height; y++) {
    const sy = y - dy;
    const rowInside = sy >= 0 && sy < height;
    const rowErased = erase !== null && y >= erase.y && y < erase.y + erase.height;
    for (let x = 0; x < width; x++) {
      const fx = x - dx;
      const inside = rowInside && fx >= 0 && fx < width;
      const erased = rowErased && x >= erase.x && x < erase.x + erase.width;
      // Flip first, then shift: output (y, x) reads the mirrored image at (y - dy, x - dx).
      const base = inside && !erased ? (sy * width + (flip ? width - 1 - fx : fx)) * channels : -1;
      for (let c = 0; c < channels; c++) {
        out[o++] = lut[c * 256 + (base < 0 ? 0 : src[base + c]!)]!;
      }
    }
  }
}
